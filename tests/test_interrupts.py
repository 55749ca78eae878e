"""Ctrl-C during a federated run: a clean stop, no orphan processes, and the run can be resumed."""

import json
import signal
import subprocess
import sys
import time

import pytest

from fedtosc.launch import processes_with_env
from fedtosc.results import read_results
from server.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_ctrl_c_mid_run_stops_everything_and_resume_finishes_it(tmp_path):
    run_dir = tmp_path / "run"
    common = [f"teacher.cache_dir={tmp_path / 't'}", f"knowledge.cache_dir={tmp_path / 'k'}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "fedtosc.cli", "run", f"output_dir={run_dir}", "teacher.epochs=2",
         "federation.num_clients=2", "channel.clients='awgn:5,awgn:15'", "federation.rounds=200",
         "train.local_epochs=1", "channel.eval_snr_db=[10]", *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    # Wait for the first checkpoint however long a loaded machine takes; a hang hits pytest's timeout.
    while not (run_dir / "checkpoint.safetensors").exists():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    assert "interrupted" in process.stderr.read()
    assert processes_with_env("FLWR_HOME", str(run_dir / ".flwr")) == []
    assert not (run_dir / "results.json").exists()

    done = load_checkpoint(run_dir)[0]
    resumed = subprocess.run(
        [sys.executable, "-m", "fedtosc.cli", "run", f"resume={run_dir}", f"federation.rounds={done + 1}"],
        capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rounds = [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(1, done + 2))
    assert read_results(run_dir)["federation"]["rounds"] == done + 1
