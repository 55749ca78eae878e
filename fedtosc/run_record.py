"""What a run leaves behind: metrics.jsonl per round, then results.json, the model and the plot.

The ServerApp hands this recorder to the strategy (per-round train metrics and bytes) and to
its centralized evaluation hook; `finish` runs the final SNR sweep and writes the results.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from omegaconf import OmegaConf
from safetensors.torch import save_file

from fedtosc.channels import ChannelProfile, build_channel, parse_channel_profiles, seed_channels
from fedtosc.config import ExperimentConfig, config_from_json
from fedtosc.evaluation import accuracy_at_snr, encoder_latency_ms, model_size, snr_sweep
from fedtosc.experiment import Experiment
from fedtosc.federated import payload_bytes
from fedtosc.models.student import StudentCodec, build_student
from fedtosc.results import append_metrics, plot_accuracy_vs_snr, write_json_atomic

__all__ = ["RunRecorder", "load_run_config"]

CONFIG_FILE = "config.yaml"


def load_run_config(run_dir: Path) -> ExperimentConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: start runs with `fedtosc run`, which writes the resolved config there")
    return config_from_json(OmegaConf.to_container(OmegaConf.load(path)))


class RunRecorder:
    """Collects per-round figures while the strategy runs, then writes the run's results."""

    def __init__(self, run_dir: Path, experiment: Experiment, store, nodes: dict, knowledge_bytes: int, device: torch.device) -> None:  # noqa: ANN001
        self.run_dir, self.experiment, self.store, self.nodes = run_dir, experiment, store, nodes
        self.config = experiment.config
        self.device = device
        self.knowledge_bytes = knowledge_bytes
        train = experiment.splits.train
        self.student = build_student(train.image_shape[0], len(train.class_names), self.config.student)
        self.reference_snr_db = float(np.median(self.config.channel.eval_snr_db))
        self.started = time.perf_counter()
        self._round_clients: list[dict] = []
        self._round_bytes_up = 0
        self._model_bytes = sum(p.numel() * p.element_size() for p in self.student.state_dict().values())
        self.metrics_path = run_dir / "metrics.jsonl"
        self.metrics_path.unlink(missing_ok=True)

    def aggregate_train_metrics(self, records: list[RecordDict], weighting_key: str) -> MetricRecord:
        """The strategy's metric aggregation, also keeping each client's figures and upload size."""
        self._round_clients = [dict(record.metric_records["metrics"]) for record in records]
        self._round_bytes_up = sum(payload_bytes(record) for record in records)
        return aggregate_metricrecords(records, weighting_key)

    def evaluate_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.student.load_state_dict(arrays.to_torch_state_dict())
        seed_channels(self.config.seed)
        accuracy, _ = accuracy_at_snr(
            self.student, self.experiment.splits.test, build_channel("awgn"), self.reference_snr_db,
            self.config.train.eval_batch_size, self.device,
        )
        if server_round > 0:
            clients = self._round_clients
            record = {
                "round": server_round,
                "test_accuracy": accuracy,
                "test_snr_db": self.reference_snr_db,
                "train_loss": _mean(clients, "train_total"),
                "train_accuracy": _mean(clients, "train_accuracy"),
                "clients": clients,
                "bytes_down": len(clients) * self._model_bytes + (self.knowledge_bytes if server_round == 1 else 0),
                "bytes_up": self._round_bytes_up,
                "elapsed_s": time.perf_counter() - self.started,
            }
            append_metrics(self.metrics_path, record)
        return MetricRecord({"test_accuracy": accuracy})

    def finish(self, student: StudentCodec) -> dict:
        config = self.config
        accuracy, channel_uses = snr_sweep(
            student, self.experiment.splits.test, config.channel, config.train.eval_batch_size, self.device, config.seed
        )
        save_file({k: v.contiguous().cpu() for k, v in student.state_dict().items()}, str(self.run_dir / "student.safetensors"))
        header = self.store.header
        results = {
            "teacher": {key: header.extra["teacher"][key] for key in ("name", "params", "accuracy")},
            "student": {
                **model_size(student),
                "encoder_latency_ms_batch1": encoder_latency_ms(student, self.experiment.splits.train.image_shape, 1),
            },
            "knowledge": {
                "mode": config.knowledge.mode,
                "codec": header.codec,
                "codec_params": header.codec_params,
                "bytes_per_sample": self.store.bytes_per_sample,
                "num_samples": header.num_samples,
                "build_seconds": header.extra["build_seconds"],
                "broadcast_bytes": self.knowledge_bytes,
            },
            "federation": {
                "num_clients": config.federation.num_clients,
                "rounds": config.federation.rounds,
                "strategy": config.strategy.name,
                "client_snr_db": [_nominal_snr_db(p) for p in parse_channel_profiles(config.channel.clients, config.federation.num_clients)],
                "client_channel_profiles": {str(n["partition-id"]): n["channel-profile"] for n in self.nodes.values()},
            },
            "accuracy_vs_snr": accuracy,
            "channel_uses": channel_uses,
            "wall_seconds": time.perf_counter() - self.started,
        }
        write_json_atomic(self.run_dir / "results.json", results)
        plot_accuracy_vs_snr(results, self.run_dir / "accuracy_vs_snr.png")
        return results


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return float(np.mean(values)) if values else None


def _nominal_snr_db(profile: ChannelProfile) -> float:
    """A client's typical SNR: the fixed value, the uniform range's midpoint, or the Gauss-Markov mean."""
    if profile.snr == "uniform":
        return (profile.snr_low_db + profile.snr_high_db) / 2
    return profile.snr_db
