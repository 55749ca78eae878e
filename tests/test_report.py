"""Specification of `fedtosc report`: one self-contained HTML page per run or study directory."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from fedtosc.cli import main
from fedtosc.report import read_metrics, render_report
from synthetic_runs import write_run_dir

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_run_report_embeds_round_curves_snr_and_client_figures_as_pngs(tmp_path: Path) -> None:
    run_dir = write_run_dir(tmp_path / "run")
    page = render_report([run_dir], tmp_path / "report.html").read_text()
    pngs = _embedded_pngs(page)
    assert len(pngs) == 3  # per-round curves, accuracy vs SNR, per-client
    assert all(png.startswith(_PNG_MAGIC) and len(png) > 5_000 for png in pngs)
    assert "<img alt='figure' src='file:" not in page and "src='http" not in page  # nothing outside the file


def test_run_report_holds_size_latency_and_knowledge_figures(tmp_path: Path) -> None:
    page = render_report([write_run_dir(tmp_path / "run")], tmp_path / "report.html").read_text()
    for expected in ("550,000", "300,000", "0.42 ms", "topk", "15.0", "6,000", "90.00 kB (90,000 B)", "1.5 s", "server_cnn"):
        assert expected in page, expected


def test_run_report_tabulates_accuracy_for_every_channel_and_snr(tmp_path: Path) -> None:
    page = render_report([write_run_dir(tmp_path / "run", accuracy=0.8)], tmp_path / "report.html").read_text()
    # awgn 0.6/0.8/0.9 and rayleigh 0.05 lower, at 0, 10, 20 dB
    for value in ("0.600", "0.800", "0.900", "0.550", "0.750", "0.850"):
        assert f">{value}<" in page


def test_per_client_accuracy_is_labelled_as_training_accuracy_against_nominal_snr(tmp_path: Path) -> None:
    page = render_report([write_run_dir(tmp_path / "run", clients="awgn:0,awgn:10")], tmp_path / "report.html").read_text()
    assert "not a held-out test accuracy" in page
    assert ">awgn@0dB<" in page and ">awgn@10dB<" in page  # each client's profile beside its figures
    assert re.search(r">0<.*?>0\.800<", page, re.S)  # partition 0's last-round training accuracy


def test_config_is_shown_html_escaped(tmp_path: Path) -> None:
    run_dir = write_run_dir(tmp_path / "run")
    with (run_dir / "config.yaml").open("a") as stream:
        stream.write("# note: <script>alert(1)</script>\n")
    page = render_report([run_dir], tmp_path / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert "label_fraction: 1.0" in page


def test_unfinished_run_is_reported_with_what_it_recorded(tmp_path: Path) -> None:
    run_dir = write_run_dir(tmp_path / "run", finished=False)
    with (run_dir / "metrics.jsonl").open("a") as stream:
        stream.write('{"round": 4, "test_acc')  # a line still being written
    assert len(read_metrics(run_dir)) == 3
    page = render_report([run_dir], tmp_path / "report.html").read_text()
    assert "results.json is missing" in page
    assert len(_embedded_pngs(page)) == 1  # the per-round curves only


def test_study_report_shows_summary_figure_table_and_cells(tmp_path: Path) -> None:
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text(json.dumps({
        "study": "data-efficiency", "overrides": ["seed=0,1"], "centralized": False,
        "cells": [{"name": "method=full__seed=0", "axes": {}, "status": "ran", "seconds": 41.0, "message": ""},
                  {"name": "method=full__seed=1", "axes": {}, "status": "failed", "seconds": 3.0, "message": "exit 1"}],
    }))
    (study_dir / "data_efficiency.csv").write_text("series,label_fraction,accuracy_mean\nfull,0.05,0.913\n")
    shutil.copy(_one_png(tmp_path), study_dir / "data_efficiency.png")
    page = render_report([study_dir], tmp_path / "report.html").read_text()
    assert "Study data-efficiency" in page and "seed=0,1" in page
    assert ">0.913<" in page and "method=full__seed=1" in page and "exit 1" in page
    assert len(_embedded_pngs(page)) == 1


def test_report_command_writes_report_html_into_a_single_run_dir(tmp_path: Path) -> None:
    run_dir = write_run_dir(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()


def test_report_command_rejects_a_directory_that_is_no_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither a run directory"):
        main(["report", str(tmp_path / "empty")])


_CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1200,1600",
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium for headless rendering (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    run_dir = write_run_dir(tmp_path / "run")
    page = render_report([run_dir], tmp_path / "report.html")
    screenshot = tmp_path / "screenshot.png"
    subprocess.run(
        ["chromium", *_CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    image = Image.open(screenshot).convert("L")
    assert image.size == (1200, 1600)
    low, high = image.getextrema()
    assert high - low > 100  # text and figures drawn, not a blank or error page
    # The figures load: a broken <img> leaves the page mostly white, a drawn plot adds many mid-grey pixels.
    histogram = image.histogram()
    assert sum(histogram[30:220]) > 5_000


def _one_png(tmp_path: Path) -> Path:
    path = tmp_path / "figure.png"
    Image.new("RGB", (40, 30), "steelblue").save(path)
    return path
