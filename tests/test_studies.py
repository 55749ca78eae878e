"""Specification of `fedtosc study`: a Hydra multirun grid of runs, resumable, summarized over seeds."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedtosc.cli import main
from fedtosc.config import ConfigError, load_config
from fedtosc.studies import (
    data_efficiency_claims,
    data_efficiency_rows,
    load_cells,
    plot_data_efficiency,
    plot_snr_sweep,
    run_study,
    snr_sweep_rows,
    write_csv,
)
from fedtosc.studies import sweep
from fedtosc.studies.sweep import CELL_FILE, cell_name
from synthetic_runs import write_run_dir

# One cell of the data-efficiency grid: every axis pinned to one value.
_ONE_CELL = ["dataset.label_fraction=0.5", "method=full", "channel.clients=awgn:5", "seed=0"]
_ONE_CELL_AXES = {"dataset.label_fraction": "0.5", "method": "full", "channel.clients": "awgn:5", "seed": "0"}
_SMALL = ["federation.num_clients=2", "federation.rounds=1"]


def _cell(cells_dir: Path, axes: dict[str, str], **run) -> Path:
    run_dir = write_run_dir(cells_dir / cell_name(axes), **run)
    (run_dir / CELL_FILE).write_text(json.dumps({"axes": axes}))
    return run_dir


def _write_cell_as_study_would(run_dir: Path, overrides: list[str], output_dir: Path | None = None) -> None:
    """A finished cell whose config.yaml is exactly what the study composes for these overrides."""
    write_run_dir(run_dir, clients="awgn:5")
    config = load_config([*overrides, f"output_dir='{output_dir or run_dir}'"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def test_cell_name_is_sorted_readable_and_filesystem_safe() -> None:
    name = cell_name({"seed": "1", "channel.clients": "awgn:0,awgn:20", "method": "full", "dataset.root": "a b/c"})
    assert name == "channel.clients-awgn_0+awgn_20__dataset.root-a_b_c__method-full__seed-1"


def test_cell_names_of_long_axes_stay_short_and_distinct() -> None:
    first = cell_name({"channel.clients": ",".join(["awgn:10"] * 40)})
    second = cell_name({"channel.clients": ",".join(["awgn:10"] * 39 + ["awgn:11"])})
    assert len(first) <= 120 and len(second) <= 120 and first != second


def test_data_efficiency_averages_seeds_per_method_profile_and_fraction(tmp_path: Path) -> None:
    cells = []
    for method, base in (("full", 0.8), ("labels_only", 0.5)):
        for clients in ("awgn:5", "awgn:0,awgn:10"):
            for fraction in (0.1, 1.0):
                for seed, offset in ((0, 0.0), (1, 0.1)):
                    axes = {"method": method, "channel.clients": clients, "dataset.label_fraction": str(fraction), "seed": str(seed)}
                    cells.append(_cell(tmp_path, axes, method=method, clients=clients, label_fraction=fraction,
                                       seed=seed, accuracy=base + offset + fraction / 10))
    rows = data_efficiency_rows(load_cells(cells), "awgn", 10.0)
    assert len(rows) == 2 * 2 * 2
    row = next(r for r in rows if r["method"] == "labels_only" and r["profile"] == "heterogeneous" and r["label_fraction"] == 0.1)
    assert row["accuracy_mean"] == pytest.approx(0.56)
    assert row["accuracy_std"] == pytest.approx(0.0707107, rel=1e-4)  # sample s.d. of 0.51 and 0.61
    assert row["num_seeds"] == 2 and row["seeds"] == "0;1" and row["accuracies"] == "0.5100;0.6100"
    assert row["mean_client_snr_db"] == 5.0 and row["series"] == "labels_only, heterogeneous clients (5 dB mean)"
    assert {r["profile"] for r in rows if r["channel.clients"] == "awgn:5"} == {"homogeneous"}
    full = next(r for r in rows if r["method"] == "full" and r["profile"] == "heterogeneous" and r["label_fraction"] == 0.1)
    # Paired per image over both seeds: full is right on 0.3 more of the images at each seed.
    assert full["paired_with"] == "labels_only" and full["difference"] == pytest.approx(0.3)
    assert 0 < full["difference_low"] < 0.3 < full["difference_high"] and full["difference_p"] < 1e-6
    assert "difference" not in row  # the difference sits on the full row only


def test_data_efficiency_pairs_only_the_seeds_both_methods_have_finished(tmp_path: Path) -> None:
    cells = [
        _cell(tmp_path, {"method": method, "seed": str(seed)}, method=method, seed=seed, accuracy=accuracy)
        for method, accuracy, seeds in (("full", 0.8, (0, 1)), ("labels_only", 0.6, (1,))) for seed in seeds
    ]
    full = next(row for row in data_efficiency_rows(load_cells(cells), "awgn", 10.0) if row["method"] == "full")
    assert full["num_seeds"] == 2 and full["paired_seeds"] == "1" and full["difference"] == pytest.approx(0.2)


def _efficiency_cells(cells_dir: Path, curves: dict[str, dict[float, float]]) -> list[Path]:
    return [
        _cell(cells_dir, {"method": method, "dataset.label_fraction": str(fraction), "seed": "0"},
              method=method, label_fraction=fraction, accuracy=accuracy)
        for method, curve in curves.items() for fraction, accuracy in curve.items()
    ]


def test_data_efficiency_headline_reads_the_crossing_off_the_log_fraction_axis(tmp_path: Path) -> None:
    cells = _efficiency_cells(tmp_path, {"full": {0.1: 0.9}, "labels_only": {0.1: 0.6, 0.25: 0.85, 1.0: 0.95}})
    rows = data_efficiency_rows(load_cells(cells), "awgn", 10.0)
    # The target 0.9 − 0.01 lies 40% of the way from 0.85 (at 25%) to 0.95 (at 100%): 0.25 · 4^0.4.
    expected = 0.25 * 4**0.4
    assert [row["labels_only_within_1pt_of_full_at_10pct"] for row in rows] == pytest.approx([expected] * 4)
    (claim,) = data_efficiency_claims(rows)
    assert claim["full_accuracy_at_10pct"] == pytest.approx(0.9) and f"{expected:.3g}" in claim["claim"]


def test_data_efficiency_headline_says_when_labels_only_never_gets_within_a_point(tmp_path: Path) -> None:
    cells = _efficiency_cells(tmp_path, {"full": {0.1: 0.9, 1.0: 0.95}, "labels_only": {0.1: 0.5, 1.0: 0.885}})
    (claim,) = data_efficiency_claims(data_efficiency_rows(load_cells(cells), "awgn", 10.0))
    assert claim["labels_only_within_1pt_of_full_at_10pct"] == "not reached" and "never reached" in claim["claim"]


def test_data_efficiency_names_the_evaluated_snrs_when_the_stated_one_is_missing(tmp_path: Path) -> None:
    cells = load_cells([_cell(tmp_path, {"seed": "0"})])
    with pytest.raises(ValueError, match=r"no accuracy at 7.5 dB on awgn; evaluated SNRs: \[0.0, 10.0, 20.0\]"):
        data_efficiency_rows(cells, "awgn", 7.5)


def test_snr_sweep_has_a_row_per_method_channel_and_snr(tmp_path: Path) -> None:
    cells = load_cells([
        _cell(tmp_path, {"method": method, "seed": str(seed)}, method=method, seed=seed, accuracy=0.7 + 0.1 * seed)
        for method in ("full", "no_adaptive") for seed in (0, 1)
    ])
    rows = snr_sweep_rows(cells)
    assert len(rows) == 2 * 2 * 3  # methods x channels (awgn, rayleigh) x SNRs
    row = next(r for r in rows if r["method"] == "no_adaptive" and r["channel"] == "rayleigh" and r["snr_db"] == 0.0)
    assert row["accuracy_mean"] == pytest.approx(0.5) and row["num_seeds"] == 2


def test_summary_csv_and_figures_are_written(tmp_path: Path) -> None:
    cells = load_cells([_cell(tmp_path / "cells", {"method": m, "seed": "0"}, method=m) for m in ("full", "labels_only")])
    rows = data_efficiency_rows(cells, "awgn", 10.0)
    write_csv(rows, tmp_path / "summary.csv")
    plot_data_efficiency(rows, tmp_path / "efficiency.png")
    plot_snr_sweep(snr_sweep_rows(cells), tmp_path / "snr.png")
    with (tmp_path / "summary.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert [r["method"] for r in table] == ["full", "labels_only"]
    assert {"accuracy_mean", "accuracy_std", "num_seeds", "label_fraction", "snr_db"} <= set(table[0])
    for figure in ("efficiency.png", "snr.png"):
        assert (tmp_path / figure).read_bytes().startswith(b"\x89PNG")


def test_an_unfinished_cell_is_not_summarized(tmp_path: Path) -> None:
    run_dir = _cell(tmp_path, {"seed": "0"}, finished=False)
    with pytest.raises(ValueError, match="not a finished study cell"):
        load_cells([run_dir])


def test_unknown_key_fails_before_any_cell_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        run_study("data-efficiency", [*_ONE_CELL, "federation.no_such_key=1"], tmp_path / "study")
    assert not (tmp_path / "study" / "cells").exists()


def test_out_of_range_cell_fails_without_starting_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep.subprocess, "run", _must_not_run)
    overrides = ["dataset.label_fraction=0.5,2.0", "method=full", "channel.clients=awgn:5", "seed=0", *_SMALL]
    outcomes = run_study("data-efficiency", overrides, tmp_path / "study")
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert "must be in (0, 1]" in outcomes[1].message
    assert "exited with" in outcomes[0].message  # the valid cell reached the (refused) run


def test_a_complete_cell_is_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "study" / "cells" / cell_name(_ONE_CELL_AXES)
    _write_cell_as_study_would(run_dir, [*_ONE_CELL, *_SMALL, "+study=data_efficiency"])
    (run_dir / CELL_FILE).write_text(json.dumps({"axes": _ONE_CELL_AXES}))
    monkeypatch.setattr(sweep.subprocess, "run", _must_not_run)
    outcomes = run_study("data-efficiency", [*_ONE_CELL, *_SMALL], tmp_path / "study")
    assert [(o.status, o.run_dir) for o in outcomes] == [("skipped", run_dir)]


def test_a_committed_cell_counts_as_complete_in_another_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cell was run in a clone at /elsewhere/fedtosc: its config.yaml records that output_dir.
    run_dir = tmp_path / "study" / "cells" / cell_name(_ONE_CELL_AXES)
    elsewhere = Path("/elsewhere/fedtosc/results/studies/data-efficiency/cells") / run_dir.name
    _write_cell_as_study_would(run_dir, [*_ONE_CELL, *_SMALL, "+study=data_efficiency"], output_dir=elsewhere)
    (run_dir / CELL_FILE).write_text(json.dumps({"axes": _ONE_CELL_AXES}))
    monkeypatch.setattr(sweep.subprocess, "run", _must_not_run)
    outcomes = run_study("data-efficiency", [*_ONE_CELL, *_SMALL], tmp_path / "study")
    assert [o.status for o in outcomes] == ["skipped"]


def test_paths_under_the_project_or_home_compare_wherever_the_clone_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    here = {"checkpoint": str(sweep.project_root() / "teachers" / "t.safetensors"), "root": "/home/someone/data/cifar10"}
    there = {"checkpoint": "/elsewhere/fedtosc/teachers/t.safetensors", "root": "/root/data/cifar10"}
    assert sweep._same_settings(there, here)
    assert not sweep._same_settings({**there, "checkpoint": "/elsewhere/fedtosc/teachers/u.safetensors"}, here)
    assert not sweep._same_settings({**there, "root": "/mnt/cifar10"}, here)
    assert not sweep._same_settings({**there, "root": "/root/data/cifar10"}, {**here, "root": "/mnt/cifar10"})


def test_a_cell_whose_settings_changed_is_rerun_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "study" / "cells" / cell_name(_ONE_CELL_AXES)
    _write_cell_as_study_would(run_dir, [*_ONE_CELL, "federation.num_clients=2", "federation.rounds=7", "+study=data_efficiency"])
    # What `fedtosc run` will leave in the cell with the study's current settings.
    rerun = tmp_path / "rerun"
    _write_cell_as_study_would(rerun, [*_ONE_CELL, *_SMALL, "+study=data_efficiency"], output_dir=run_dir)
    calls = []

    def fake_run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        assert not (run_dir / "results.json").exists()  # stale results are gone before the run starts
        calls.append(argv)
        shutil.copytree(rerun, run_dir, dirs_exist_ok=True)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    outcomes = run_study("data-efficiency", [*_ONE_CELL, *_SMALL], tmp_path / "study")
    assert [o.status for o in outcomes] == ["ran"]
    (argv,) = calls
    assert argv[2:4] == ["fedtosc.cli", "run"] and "federation.rounds=1" in argv and f"output_dir='{run_dir}'" in argv


def _must_not_run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(argv, 3)


@pytest.mark.slow
@pytest.mark.parametrize("centralized", [False, True], ids=["fedtosc-run", "fedtosc-train"])
def test_study_runs_a_cell_once_and_resumes_without_rerunning(tmp_path: Path, centralized: bool, digits_teacher: list[str]) -> None:
    study_dir = tmp_path / "study"
    # The session's teacher; a store cache of its own (the two parameters may run at once).
    overrides = [*_ONE_CELL, *_SMALL, *digits_teacher, f"knowledge.cache_dir={tmp_path / 'k'}"]
    (first,) = run_study("data-efficiency", overrides, study_dir, centralized=centralized)
    assert first.status == "ran", (first.run_dir / sweep.LOG_FILE).read_text()[-3000:]
    results_mtime = (first.run_dir / "results.json").stat().st_mtime_ns
    (second,) = run_study("data-efficiency", overrides, study_dir, centralized=centralized)
    assert (second.status, second.run_dir) == ("skipped", first.run_dir)
    assert (first.run_dir / "results.json").stat().st_mtime_ns == results_mtime
    (row,) = data_efficiency_rows(load_cells([first.run_dir]), "awgn", 10.0)
    assert 0.0 <= row["accuracy_mean"] <= 1.0 and row["profile"] == "homogeneous" and row["label_fraction"] == 0.5


def _study_with_one_complete_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study directory holding the finished cell of _ONE_CELL, and no run allowed to start."""
    study_dir = tmp_path / "study"
    run_dir = study_dir / "cells" / cell_name(_ONE_CELL_AXES)
    _write_cell_as_study_would(run_dir, [*_ONE_CELL, *_SMALL, "+study=data_efficiency"])
    (run_dir / CELL_FILE).write_text(json.dumps({"axes": _ONE_CELL_AXES}))
    monkeypatch.setattr(sweep.subprocess, "run", _must_not_run)
    return study_dir


def test_study_command_summarizes_its_cells_into_csv_figure_and_study_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study_dir = _study_with_one_complete_cell(tmp_path, monkeypatch)
    assert main(["study", "data-efficiency", "--output", str(study_dir), "--snr-db", "20", *_ONE_CELL, *_SMALL]) == 0
    with (study_dir / "data_efficiency.csv").open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["method"], row["snr_db"], row["accuracy_mean"]) == ("full", "20.0", "0.9")
    assert (study_dir / "data_efficiency.png").read_bytes().startswith(b"\x89PNG")
    study = json.loads((study_dir / "study.json").read_text())
    assert [cell["status"] for cell in study["cells"]] == ["skipped"]
    assert "0 ran, 1 already complete, 0 failed" in capsys.readouterr().out


def test_no_run_summarizes_the_complete_cells_and_lists_the_missing_without_running_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study_dir = _study_with_one_complete_cell(tmp_path, monkeypatch)
    two_seeds = [override.replace("seed=0", "seed=0,1") for override in _ONE_CELL]

    assert main(["study", "data-efficiency", "--no-run", "--output", str(study_dir), *two_seeds, *_SMALL]) == 0

    study = json.loads((study_dir / "study.json").read_text())
    assert sorted(cell["status"] for cell in study["cells"]) == ["missing", "skipped"]
    (row,) = study["rows"]
    assert row["num_seeds"] == 1
    assert not any(path.name.endswith("seed-1") for path in (study_dir / "cells").iterdir())  # nothing made for it
    assert "0 ran, 1 already complete, 1 missing (not run: --no-run), 0 failed" in capsys.readouterr().out


def test_a_study_directory_with_a_colon_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains ':'"):
        run_study("data-efficiency", _ONE_CELL, tmp_path / "a:b")
