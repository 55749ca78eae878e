"""Specification of the studies with arms: snr-mismatch, bandwidth and knowledge-rate.

Rows and claims are checked on made-up cells (tests/synthetic_runs.py: per-image outcomes whose
first round(accuracy · N) images are right); the end-to-end tests run tiny grids on digits.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from fedtosc.cli import main
from fedtosc.config import ConfigError
from fedtosc.studies import load_cells, run_study, sweep
from fedtosc.studies.bandwidth import bandwidth_claims, bandwidth_rows, fixed_rate_cells, plot_bandwidth
from fedtosc.studies.knowledge_rate import knowledge_rate_claims, knowledge_rate_rows, plot_knowledge_rate
from fedtosc.studies.mismatch import plot_snr_mismatch, snr_mismatch_claims, snr_mismatch_rows
from fedtosc.studies.rate_price import plot_rate_price, rate_price_claims, rate_price_rows
from fedtosc.studies.sweep import CELL_FILE, CellOutcome, cell_name
from synthetic_runs import write_run_dir, write_synthetic_outcomes


def _arm_cell(cells_dir: Path, arm: str, seed: int = 0, accuracy: float = 0.8, axes: dict[str, str] | None = None,
              results: dict[str, Any] | None = None, student: dict[str, Any] | None = None) -> Path:
    """A finished cell of `arm`; `results` and `student` update its results.json and config's student."""
    axes = {"arm": arm, "seed": str(seed), **(axes or {})}
    run_dir = write_run_dir(cells_dir / cell_name(axes), seed=seed, accuracy=accuracy)
    (run_dir / CELL_FILE).write_text(json.dumps({"axes": axes}))
    stored = {**json.loads((run_dir / "results.json").read_text()), **(results or {})}
    (run_dir / "results.json").write_text(json.dumps(stored))
    write_synthetic_outcomes(run_dir, seed, stored["accuracy_vs_snr"])
    config = OmegaConf.load(run_dir / "config.yaml")
    config.student.update(student or {})
    OmegaConf.save(config, run_dir / "config.yaml")
    return run_dir


def test_snr_mismatch_pairs_full_with_the_best_specialist_at_each_point(tmp_path: Path) -> None:
    awgn_only = {"accuracy_vs_snr": {"awgn": {"0.0": 0.75, "10.0": 0.95, "20.0": 1.0}}}
    worse = {"accuracy_vs_snr": {"awgn": {"0.0": 0.6, "10.0": 0.6, "20.0": 0.6}}}
    cells = load_cells([
        *(_arm_cell(tmp_path, "full", seed, accuracy=0.9) for seed in (0, 1)),
        *(_arm_cell(tmp_path, "specialist_awgn_5dB", seed, results=awgn_only) for seed in (0, 1)),
        *(_arm_cell(tmp_path, "specialist_awgn_15dB", seed, results=worse) for seed in (0, 1)),
    ])
    rows = snr_mismatch_rows(cells)
    assert len(rows) == 3 * 3 + 3  # awgn: 3 SNRs x 3 arms; rayleigh: full only
    full = {row["snr_db"]: row for row in rows if row["arm"] == "full" and row["channel"] == "awgn"}
    assert full[10.0]["paired_with"] == "specialist_awgn_5dB"
    assert full[10.0]["difference"] == pytest.approx(0.9 - 0.95) and full[10.0]["difference_high"] < 0
    assert not full[10.0]["matches"] and full[20.0]["matches"]  # both 1.0 at 20 dB: the interval is [0, 0]
    assert all("paired_with" not in row for row in rows if row["channel"] == "rayleigh")
    (claim,) = snr_mismatch_claims(rows)
    assert (claim["channel"], claim["matched"], claim["points"], claim["behind_at_snr_db"]) == ("awgn", 1, 3, [0.0, 10.0])
    plot_snr_mismatch(rows, tmp_path / "mismatch.png")
    assert (tmp_path / "mismatch.png").read_bytes().startswith(b"\x89PNG")


def test_snr_mismatch_pairs_no_adaptive_with_fixed_rate_to_show_what_the_adaptive_module_buys(tmp_path: Path) -> None:
    # fixed_rate's curve is 0.7, 0.9, 1.0 (tests/synthetic_runs.py)
    worse_at_low_snr = {"accuracy_vs_snr": {"awgn": {"0.0": 0.5, "10.0": 0.95, "20.0": 1.0}}}
    cells = load_cells([
        *(_arm_cell(tmp_path, "fixed_rate", seed, accuracy=0.9) for seed in (0, 1)),
        *(_arm_cell(tmp_path, "no_adaptive", seed, results=worse_at_low_snr) for seed in (0, 1)),
    ])
    rows = {row["snr_db"]: row for row in snr_mismatch_rows(cells) if row["arm"] == "no_adaptive"}
    assert rows[0.0]["paired_with"] == "fixed_rate" and rows[0.0]["difference"] == pytest.approx(0.5 - 0.7)
    assert rows[0.0]["channel_uses"] == 16.0
    (claim,) = snr_mismatch_claims(list(rows.values()))
    assert claim["pair"] == "fixed_rate - no_adaptive"
    assert claim["mean_gain"] == pytest.approx(((0.7 - 0.5) + (0.9 - 0.95) + 0) / 3)
    assert (claim["helps_at_snr_db"], claim["hurts_at_snr_db"]) == ([0.0], [10.0])
    assert "above 0 at 1 (0 dB), below 0 at 1 (10 dB)" in claim["claim"]


def _uses(mean: float) -> dict[str, Any]:
    return {"channel_uses": {"0.0": mean, "10.0": mean, "20.0": mean}}


def test_bandwidth_derives_a_fixed_rate_cell_at_each_full_cells_mean_rate(tmp_path: Path) -> None:
    full = [
        _arm_cell(tmp_path, "full", seed, axes={"student.channel_uses": str(width)}, results=_uses(mean),
                  student={"channel_uses": width})
        for width, means in ((4, (3.4, 2.6)), (16, (6.6, 6.6))) for seed, mean in zip((0, 1), means, strict=True)
    ]
    finished = [CellOutcome(run_dir, json.loads((run_dir / CELL_FILE).read_text())["axes"], "ran") for run_dir in full]
    derived = fixed_rate_cells(finished)
    assert derived == [
        ("fixed_rate", ["method=fixed_rate", "student.channel_uses=3", "seed=0"]),
        ("fixed_rate", ["method=fixed_rate", "student.channel_uses=3", "seed=1"]),
        ("fixed_rate", ["method=fixed_rate", "student.channel_uses=7", "seed=0"]),
        ("fixed_rate", ["method=fixed_rate", "student.channel_uses=7", "seed=1"]),
    ]


def test_bandwidth_rows_pair_full_with_its_fixed_rate_partners_and_no_ib_with_full(tmp_path: Path) -> None:
    cells = [
        *(_arm_cell(tmp_path, "full", seed, 0.8, {"student.channel_uses": "16"}, _uses(6.6), {"channel_uses": 16}) for seed in (0, 1)),
        *(_arm_cell(tmp_path, "fixed_rate", seed, 0.7, {"student.channel_uses": "7"}, _uses(7.0), {"channel_uses": 7}) for seed in (0, 1)),
        *(_arm_cell(tmp_path, "no_ib", seed, 0.75, {"student.channel_uses": "16"}, _uses(9.0), {"channel_uses": 16}) for seed in (0, 1)),
    ]
    rows = bandwidth_rows(load_cells(cells), "awgn", 10.0)
    assert [(row["arm"], row["max_channel_uses"], row["mean_channel_uses"]) for row in rows] == [
        ("full", 16, 6.6), ("fixed_rate", 16, 7.0), ("no_ib", 16, 9.0)
    ]
    full, _, no_ib = rows
    assert full["paired_with"] == "fixed_rate" and full["difference"] == pytest.approx(0.1) and full["difference_low"] > 0
    assert no_ib["paired_with"] == "full" and no_ib["difference"] == pytest.approx(-0.05)
    claims = bandwidth_claims(rows)
    assert [(c["arm"], c["paired_with"]) for c in claims] == [("full", "fixed_rate"), ("no_ib", "full")]
    plot_bandwidth(rows, tmp_path / "bandwidth.png")
    assert (tmp_path / "bandwidth.png").read_bytes().startswith(b"\x89PNG")


def _knowledge(codec: str, bytes_per_sample: float) -> dict[str, Any]:
    return {"knowledge": {"mode": "prestored", "codec": codec, "codec_params": {}, "bytes_per_sample": bytes_per_sample,
                          "num_samples": 100, "build_seconds": 1.0, "broadcast_bytes": 100 * bytes_per_sample}}


def test_knowledge_rate_rows_sort_by_bytes_and_pair_every_codec_with_full(tmp_path: Path) -> None:
    cells = load_cells([
        _arm_cell(tmp_path, "full", accuracy=0.8, results=_knowledge("full", 40.0)),
        _arm_cell(tmp_path, "top1", accuracy=0.7, results=_knowledge("topk", 3.0)),
        _arm_cell(tmp_path, "int8", accuracy=0.8, results=_knowledge("int8_embedding", 20.0)),
    ])
    rows = knowledge_rate_rows(cells, "awgn", 10.0)
    assert [(row["arm"], row["bytes_per_sample"]) for row in rows] == [("top1", 3.0), ("int8", 20.0), ("full", 40.0)]
    top1, int8, full = rows
    assert top1["difference"] == pytest.approx(-0.1) and top1["difference_high"] < 0
    assert (int8["difference"], int8["difference_low"], int8["difference_high"]) == (0.0, 0.0, 0.0)
    assert "difference" not in full
    (claim,) = knowledge_rate_claims(rows)
    assert claim["cheapest_not_below_full"] == "int8"
    plot_knowledge_rate(rows, tmp_path / "rate.png")
    assert (tmp_path / "rate.png").read_bytes().startswith(b"\x89PNG")


def _priced_cell(cells_dir: Path, price: float, accuracy: float, symbols: float) -> Path:
    run_dir = _arm_cell(cells_dir, f"price_{price:g}", accuracy=accuracy,
                        results={"channel_uses": {"0.0": symbols, "10.0": symbols, "20.0": symbols}})
    config = OmegaConf.load(run_dir / "config.yaml")
    config.loss.rate_weight = price
    OmegaConf.save(config, run_dir / "config.yaml")
    return run_dir


def test_rate_price_rows_pair_every_price_with_price_zero_and_name_the_highest_free_one(tmp_path: Path) -> None:
    cells = load_cells([
        _priced_cell(tmp_path, 0.1, accuracy=0.6, symbols=2.0),
        _priced_cell(tmp_path, 0.0, accuracy=0.8, symbols=16.0),
        _priced_cell(tmp_path, 0.01, accuracy=0.8, symbols=9.5),
    ])
    rows = rate_price_rows(cells, "awgn", 10.0)
    assert [(row["rate_weight"], row["channel_uses"]) for row in rows] == [(0.0, 16.0), (0.01, 9.5), (0.1, 2.0)]
    free, cheap, dear = rows
    assert "difference" not in free
    assert (cheap["difference"], cheap["difference_low"], cheap["difference_high"]) == (0.0, 0.0, 0.0)
    assert dear["difference"] == pytest.approx(-0.2) and dear["difference_high"] < 0
    (claim,) = rate_price_claims(rows)
    assert claim["highest_costless_price"] == 0.01
    assert "9.5 of 16 symbols" in claim["claim"]
    plot_rate_price(rows, tmp_path / "price.png")
    assert (tmp_path / "price.png").read_bytes().startswith(b"\x89PNG")


def test_rate_price_says_when_every_price_costs_accuracy(tmp_path: Path) -> None:
    rows = rate_price_rows(load_cells([
        _priced_cell(tmp_path, 0.0, accuracy=0.8, symbols=16.0), _priced_cell(tmp_path, 0.2, accuracy=0.5, symbols=2.0),
    ]), "awgn", 10.0)
    (claim,) = rate_price_claims(rows)
    assert claim["highest_costless_price"] is None and claim["claim"].startswith("every price costs accuracy")


def test_each_arm_runs_the_grid_with_its_own_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(sweep.subprocess, "run", refuse)
    outcomes = run_study("knowledge-rate", ["arm=full,top2", "federation.num_clients=2", "channel.clients=awgn:5"], tmp_path)
    assert [o.axes for o in outcomes] == [{"arm": "full", "seed": "0"}, {"arm": "top2", "seed": "0"}]
    assert "knowledge=full" in calls[0] and {"knowledge=topk", "knowledge.k=2"} <= set(calls[1])


def test_an_arms_own_settings_replace_the_same_keys_given_for_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda argv, **kwargs: calls.append(argv) or subprocess.CompletedProcess(argv, 3))
    run_study("bandwidth", ["arm=no_ib", "student.channel_uses=2,4", "seed=0"], tmp_path)
    (argv,) = calls  # no_ib runs at its own width only
    assert "student.channel_uses=8" in argv and "method=no_ib" in argv


def test_unknown_arms_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no arm \['nope'\]; its arms: \['full', 'no_ib'\]"):
        run_study("bandwidth", ["arm=nope"], tmp_path)
    with pytest.raises(ConfigError, match="data-efficiency has no arms"):
        run_study("data-efficiency", ["arm=full"], tmp_path)


# ---------------------------------------------------------------------------------------------
# End to end on digits: `fedtosc study <name> --centralized` on a minimal grid
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(digits_teacher: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Small, fast settings: the session's teacher (tests/conftest.py), and a knowledge cache of
    this module's own, where its studies build their codecs' stores without racing another module."""
    return ["federation.num_clients=2", "federation.rounds=1", "train.local_epochs=1", *digits_teacher,
            f"knowledge.cache_dir={tmp_path_factory.mktemp('knowledge')}"]


def _study(name: str, output: Path, overrides: list[str]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    code = main(["study", name, "--centralized", "--output", str(output), *overrides])
    logs = {path.parent.name: path.read_text()[-2000:] for path in output.glob(f"cells/*/{sweep.LOG_FILE}")}
    assert code == 0, logs
    (csv_path,) = output.glob("*.csv")
    with csv_path.open() as stream:
        rows = list(csv.DictReader(stream))
    assert next(output.glob("*.png")).read_bytes().startswith(b"\x89PNG")
    return rows, json.loads((output / "study.json").read_text())


@pytest.mark.slow
def test_knowledge_rate_study_runs_on_digits(tmp_path: Path, tiny: list[str]) -> None:
    rows, study = _study("knowledge-rate", tmp_path, ["arm=full,top1", "channel.clients=awgn:5", *tiny])
    top1 = next(row for row in rows if row["arm"] == "top1")
    assert top1["paired_with"] == "full" and float(top1["difference_low"]) <= float(top1["difference"]) <= float(top1["difference_high"])
    assert float(top1["bytes_per_sample"]) < float(next(row for row in rows if row["arm"] == "full")["bytes_per_sample"])
    assert study["claims"] and {"difference", "difference_low", "difference_high", "difference_p"} <= set(study["rows"][0])


@pytest.mark.slow
def test_bandwidth_study_runs_full_then_its_fixed_rate_partner_on_digits(tmp_path: Path, tiny: list[str]) -> None:
    rows, study = _study("bandwidth", tmp_path, ["arm=full", "student.channel_uses=4", "seed=0", *tiny])
    assert [cell["axes"]["arm"] for cell in study["cells"]] == ["full", "fixed_rate"]
    full, fixed = rows
    assert (full["arm"], full["paired_with"], fixed["arm"]) == ("full", "fixed_rate", "fixed_rate")
    (fixed_cell,) = [cell for cell in load_cells(list(tmp_path.glob("cells/*"))) if cell.axes["arm"] == "fixed_rate"]
    assert fixed_cell.config["student"]["channel_uses"] == max(1, round(float(full["mean_channel_uses"])))
    assert float(fixed["mean_channel_uses"]) == fixed_cell.config["student"]["channel_uses"]  # it sends all its symbols


@pytest.mark.slow
def test_snr_mismatch_study_runs_on_digits(tmp_path: Path, tiny: list[str]) -> None:
    overrides = ["arm=full,specialist_awgn_5dB", "seed=0", "channel.clients='awgn:-5~20,rayleigh:-5~20'",
                 "channel.eval_snr_db=[0.0,10.0]", *tiny]
    rows, study = _study("snr-mismatch", tmp_path, overrides)
    full_awgn = [row for row in rows if row["arm"] == "full" and row["channel"] == "awgn"]
    assert [row["paired_with"] for row in full_awgn] == ["specialist_awgn_5dB"] * 2
    assert all(row["matches"] in ("True", "False") for row in full_awgn)
    assert {row["channel"] for row in rows if row["arm"] == "full"} == {"awgn", "rayleigh", "rician(k=3)"}
    assert [claim["channel"] for claim in study["claims"]] == ["awgn"]
