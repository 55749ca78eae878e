"""Scale: a 100-client Flower simulation fits a 2-core machine, finishes, and keeps memory bounded."""

import json
import os

import pytest

from fedtosc.cli import main
from fedtosc.launch import processes_with_env
from fedtosc.process_memory import PeakMemorySampler
from fedtosc.results import read_results

pytestmark = pytest.mark.slow

# Measured: 100 clients, 1 round peaked at about 5.1 GiB of summed RSS (pytest + SuperLink,
# SuperExec, Ray daemons and two actors; shared libraries counted once per process). Ray reuses
# its two actors for every node, so memory must not grow with the number of clients.
_PEAK_RSS_BOUND_BYTES = 8 * 2**30


def test_hundred_clients_one_round_finish_with_bounded_memory(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "run",
        f"output_dir={run_dir}",
        f"teacher.cache_dir={tmp_path / 'teachers'}",
        f"knowledge.cache_dir={tmp_path / 'knowledge'}",
        "teacher.epochs=1",
        "teacher.width=16",
        "dataset.server_fraction=0.3",  # 943 client samples: 9 or 10 per client
        "federation.num_clients=100",
        "federation.rounds=1",
        "train.local_epochs=1",
        "channel.clients='awgn:0~20'",
        "channel.eval_snr_db=[10]",
        "device=cpu",
    ]
    with PeakMemorySampler(os.getpid(), str(run_dir / ".flwr")) as memory:
        assert main(overrides) == 0

    results = read_results(run_dir)
    assert results["federation"]["num_clients"] == 100
    assert len(results["federation"]["client_channel_profiles"]) == 100
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rounds) == 1
    assert sorted(client["partition-id"] for client in rounds[0]["clients"]) == list(range(100))
    assert all(client["num-examples"] > 0 for client in rounds[0]["clients"])
    assert memory.peak_processes > 3  # the sampler saw the federation, not only pytest
    assert 0 < memory.peak_rss_bytes < _PEAK_RSS_BOUND_BYTES
    assert processes_with_env("FLWR_HOME", str(run_dir / ".flwr")) == []
