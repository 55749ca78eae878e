"""Run directories with the files `fedtosc run` writes, made up in a tmp dir (no Flower, no training).

Shared by the study and report specifications; the layout follows fedtosc.metrics_log and fedtosc.run_results.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fedtosc.channels import client_profiles
from fedtosc.config import ExperimentConfig
from fedtosc.outcomes import outcome_key, write_outcomes

__all__ = ["write_run_dir", "write_synthetic_outcomes"]

EVAL_SNR_DB = (0.0, 10.0, 20.0)
TEST_IMAGES = 200  # per-image outcomes: the first round(accuracy * TEST_IMAGES) images are right


def write_run_dir(
    run_dir: Path,
    *,
    method: str = "full",
    label_fraction: float = 1.0,
    seed: int = 0,
    clients: str = "awgn:0,awgn:10",
    accuracy: float = 0.8,
    rounds: int = 3,
    finished: bool = True,
) -> Path:
    """A run whose accuracy on every channel is `accuracy` at 10 dB, 0.2 lower at 0 dB, 0.1 higher at 20 dB."""
    config = ExperimentConfig()
    config.method, config.seed, config.output_dir = method, seed, str(run_dir)
    config.dataset.label_fraction = label_fraction
    config.channel.clients = clients
    config.federation.num_clients, config.federation.rounds = 2, rounds
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    profiles = client_profiles(config.channel, 2)
    with (run_dir / "metrics.jsonl").open("w") as stream:
        for round_number in range(1, rounds + 1):
            per_client = [
                {"partition-id": pid, "num-examples": 300, "train_accuracy": 0.5 + 0.1 * round_number + 0.05 * pid,
                 "train_total": 2.0 / round_number, "train_kd": 1.0 / round_number}
                for pid in range(2)
            ]
            stream.write(json.dumps({
                "round": round_number, "test_accuracy": accuracy * round_number / rounds, "test_snr_db": 7.5,
                "train_loss": 2.0 / round_number, "train_accuracy": 0.55 + 0.1 * round_number, "clients": per_client,
                "bytes_down": 2 * 400_000 + (90_000 if round_number == 1 else 0), "bytes_up": 2 * 400_000,
                "elapsed_s": 5.0 * round_number,
            }) + "\n")
    if not finished:
        return run_dir
    curve = {"0.0": accuracy - 0.2, "10.0": accuracy, "20.0": min(accuracy + 0.1, 1.0)}
    results = {
        "teacher": {"name": "server_cnn", "params": 1_200_000, "accuracy": 0.97},
        "student": {"params": 550_000, "encoder_params": 300_000, "encoder_latency_ms_batch1": 0.42},
        "knowledge": {"mode": "prestored", "codec": "topk", "codec_params": {"k": 5, "temperature": 4.0},
                      "bytes_per_sample": 15.0, "num_samples": 6000, "build_seconds": 1.5, "broadcast_bytes": 90_000},
        "federation": {"num_clients": 2, "rounds": rounds, "strategy": "fedavg",
                       "client_snr_db": [p.snr_db for p in profiles],
                       "client_channel_profiles": {str(i): p.describe() for i, p in enumerate(profiles)}},
        "accuracy_vs_snr": {"awgn": dict(curve), "rayleigh": {snr: acc - 0.05 for snr, acc in curve.items()}},
        "channel_uses": {"0.0": 16.0, "10.0": 16.0, "20.0": 16.0},
        "wall_seconds": 42.0,
    }
    write_synthetic_outcomes(run_dir, seed, results["accuracy_vs_snr"])
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def write_synthetic_outcomes(run_dir: Path, seed: int, accuracy_vs_snr: dict[str, dict[str, float]]) -> None:
    """outcomes.safetensors matching `accuracy_vs_snr`: at each point the first round(accuracy · N) images are right."""
    correct = {
        outcome_key(link, snr): torch.arange(TEST_IMAGES) < round(accuracy * TEST_IMAGES)
        for link, link_curve in accuracy_vs_snr.items()
        for snr, accuracy in link_curve.items()
    }
    write_outcomes(run_dir, seed, torch.arange(TEST_IMAGES), correct)
