"""`fedtosc run` end to end: a real Flower simulation on the Ray backend, offline."""

import json

import pytest

from fedtosc.cli import main
from fedtosc.launch import processes_with_env
from fedtosc.results import RESULTS_KEYS, read_results

pytestmark = pytest.mark.slow


def test_two_client_three_round_simulation_learns_and_writes_results_with_schema(tmp_path, digits_teacher):
    run_dir = tmp_path / "run"
    code = main(
        [
            "run",
            f"output_dir={run_dir}",
            *digits_teacher,
            "federation.num_clients=2",
            "federation.rounds=3",
            "channel.clients='awgn:0,rayleigh:20'",
            "channel.eval_snr_db=[-5,20]",
        ]
    )
    assert code == 0
    results = read_results(run_dir)
    assert set(RESULTS_KEYS) <= set(results)
    assert {"name", "params", "accuracy"} <= set(results["teacher"])
    assert {"params", "encoder_params"} <= set(results["student"])
    assert results["student"]["encoder_params"] < results["student"]["params"] < results["teacher"]["params"]
    assert {"codec", "bytes_per_sample", "num_samples", "build_seconds"} <= set(results["knowledge"])
    assert results["knowledge"]["bytes_per_sample"] == 15.0  # top-5 of 10 classes: 5 fp16 + 5 uint8
    assert results["federation"]["num_clients"] == 2
    assert results["federation"]["rounds"] == 3
    assert results["federation"]["client_snr_db"] == [0.0, 20.0]
    for channel in ("awgn", "rayleigh"):
        assert set(results["accuracy_vs_snr"][channel]) == {"-5.0", "20.0"}
    # The student learns, and the channel matters: seeded, so these hold run after run.
    awgn = results["accuracy_vs_snr"]["awgn"]
    assert awgn["20.0"] >= 0.90
    assert awgn["20.0"] >= awgn["-5.0"]
    assert set(results["channel_uses"]) == {"-5.0", "20.0"}

    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert {c["partition-id"] for c in rounds[0]["clients"]} == {0, 1}
    assert rounds[0]["bytes_down"] > results["knowledge"]["broadcast_bytes"] > 0
    assert (run_dir / "accuracy_vs_snr.png").stat().st_size > 0
    assert (run_dir / "config.yaml").is_file()
    # Nothing of the run is left running: SuperLink, SuperExec, Ray.
    assert processes_with_env("FLWR_HOME", str(run_dir / ".flwr")) == []
