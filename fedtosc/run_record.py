"""What a run leaves behind: metrics.jsonl per round, then results.json, the model and the plots.

The ServerApp hands this recorder to the strategy (per-round train metrics and bytes) and to
its centralized evaluation hook; centralized training (`fedtosc train`) calls `record_epoch`
instead. `finish` runs the final SNR sweep and writes the same results either way.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from omegaconf import OmegaConf
from safetensors.torch import save_file

from fedtosc.channels import build_channel, client_profiles, eval_links, seed_channels
from fedtosc.config import ExperimentConfig, config_from_json
from fedtosc.evaluation import accuracy_at_snr, encoder_latency_ms, model_size, snr_sweep
from fedtosc.experiment import Experiment, embedding_width, experiment_student
from fedtosc.federated import nominal_snr_db, payload_bytes
from fedtosc.knowledge.codecs import HEAD_BIAS, HEAD_WEIGHT
from fedtosc.models.student import StudentCodec
from fedtosc.results import append_metrics, plot_accuracy_vs_snr, plot_channel_uses, write_json_atomic

__all__ = ["RunRecorder", "load_run_config", "write_run_config"]

CONFIG_FILE = "config.yaml"


def write_run_config(config: ExperimentConfig, run_dir: Path) -> None:
    """The resolved config, where the ServerApp (simulated or deployed) reads it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The resolved config a run directory holds, with optional `key=value` overrides on top."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: start runs with `fedtosc run`, which writes the resolved config there")
    merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides or [])))
    return config_from_json(OmegaConf.to_container(merged))


class RunRecorder:
    """Collects per-round figures while the strategy runs, then writes the run's results."""

    def __init__(
        self,
        run_dir: Path,
        experiment: Experiment,
        store,  # noqa: ANN001 - KnowledgeStore
        nodes: dict,
        knowledge_bytes: int,
        device: torch.device,
        mode: str = "federated",
        resumed_after_round: int | None = None,
    ) -> None:
        """`nodes`: node id -> {"partition-id", "channel-profile"}; `mode`: federated | centralized.

        `resumed_after_round`: continue an interrupted run whose checkpoint holds that round:
        its metrics.jsonl keeps those rounds (a line written after the checkpoint is dropped).
        """
        self.run_dir, self.experiment, self.store, self.nodes, self.mode = run_dir, experiment, store, nodes, mode
        self.config = experiment.config
        self.device = device
        self.knowledge_bytes = knowledge_bytes
        self.student = experiment_student(experiment, embedding_width(self.config, store))
        self.reference_snr_db = float(np.median(self.config.channel.eval_snr_db))
        self.started = time.perf_counter()
        self._round_clients: list[dict] = []
        self._round_bytes_up = 0
        self._round_rejected: list[dict] = []
        # The knowledge broadcast happens before the first round of this (possibly resumed) session.
        self._unreported_knowledge_bytes = knowledge_bytes
        self._model_bytes = sum(p.numel() * p.element_size() for p in self.student.state_dict().values())
        self.metrics_path = run_dir / "metrics.jsonl"
        if resumed_after_round is None:
            self.metrics_path.unlink(missing_ok=True)
        else:
            _keep_rounds_upto(self.metrics_path, resumed_after_round)

    def aggregate_train_metrics(self, records: list[RecordDict], weighting_key: str) -> MetricRecord:
        """The strategy's metric aggregation, also keeping each client's figures and upload size."""
        self._round_clients = [dict(record.metric_records["metrics"]) for record in records]
        self._round_bytes_up = sum(payload_bytes(record) for record in records)
        return aggregate_metricrecords(records, weighting_key)

    def note_rejections(self, server_round: int, rejected: list[dict]) -> None:
        """Client updates screened out this round (crashes, malformed or non-finite arrays)."""
        self._round_rejected = rejected

    def evaluate_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.student.load_state_dict(arrays.to_torch_state_dict())
        accuracy = self._reference_accuracy(self.student)
        if server_round > 0:
            clients, rejected = self._round_clients, self._round_rejected
            bytes_down = (len(clients) + len(rejected)) * self._model_bytes + self._unreported_knowledge_bytes
            self._unreported_knowledge_bytes = 0
            self._append(server_round, accuracy, clients, bytes_down, self._round_bytes_up, rejected=rejected)
        return MetricRecord({"test_accuracy": accuracy})

    def record_epoch(self, server_round: int, epoch: int, student: StudentCodec, metrics: dict) -> float:
        """Centralized training: one metrics.jsonl line per epoch, the federated fields, no bytes moved."""
        accuracy = self._reference_accuracy(student)
        self._append(server_round, accuracy, [metrics], bytes_down=0, bytes_up=0, epoch=epoch)
        return accuracy

    def _reference_accuracy(self, student: StudentCodec) -> float:
        """Test accuracy on AWGN at the median eval SNR, on the same channel draws every time."""
        seed_channels(self.config.seed)
        accuracy, _ = accuracy_at_snr(
            student, self.experiment.splits.test, build_channel("awgn"), self.reference_snr_db,
            self.config.train.eval_batch_size, self.device,
        )
        return accuracy

    def _append(self, server_round: int, accuracy: float, clients: list[dict], bytes_down: int, bytes_up: int, **extra) -> None:  # noqa: ANN003
        record = {
            "round": server_round,
            **extra,
            "test_accuracy": accuracy,
            "test_snr_db": self.reference_snr_db,
            "train_loss": _mean(clients, "train_total"),
            "train_accuracy": _mean(clients, "train_accuracy"),
            "clients": clients,
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
            "elapsed_s": time.perf_counter() - self.started,
        }
        append_metrics(self.metrics_path, record)

    def finish(self, student: StudentCodec) -> dict:
        config = self.config
        links = eval_links(config.channel, config.federation.num_clients)
        accuracy, channel_uses = snr_sweep(
            student, self.experiment.splits.test, links, config.channel, config.train.eval_batch_size, self.device, config.seed
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
                "views": header.views,
                "bytes_per_sample": self.store.bytes_per_sample,
                # The teacher head an embedding store carries, sent once per node inside broadcast_bytes.
                "teacher_head_bytes": sum(
                    array.nbytes for name, array in self.store.shared().items() if name in (HEAD_WEIGHT, HEAD_BIAS)
                ),
                "num_samples": header.num_samples,
                "build_seconds": header.extra["build_seconds"],
                "broadcast_bytes": self.knowledge_bytes,
            },
            "federation": {
                "mode": self.mode,
                "num_clients": config.federation.num_clients,
                "rounds": config.federation.rounds,
                "strategy": config.strategy.name,
                "client_snr_db": [nominal_snr_db(p) for p in client_profiles(config.channel, config.federation.num_clients)],
                "client_channel_profiles": {str(n["partition-id"]): n["channel-profile"] for n in self.nodes.values()},
            },
            "evaluation": {
                # Where the links came from: an explicit list, or the clients' own links (eval_channels=null).
                "source": "channel.clients" if config.channel.eval_channels is None else "channel.eval_channels",
                "links": [{"label": link.describe(), **dataclasses.asdict(link)} for link in links],
                "snr_db": [float(snr_db) for snr_db in config.channel.eval_snr_db],
            },
            "accuracy_vs_snr": accuracy,
            "channel_uses": channel_uses,
            "wall_seconds": time.perf_counter() - self.started,
        }
        write_json_atomic(self.run_dir / "results.json", results)
        plot_accuracy_vs_snr(results, self.run_dir / "accuracy_vs_snr.png")
        plot_channel_uses(results, self.run_dir / "channel_uses.png")
        return results


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return float(np.mean(values)) if values else None


def _keep_rounds_upto(metrics_path: Path, last_round: int) -> None:
    if not metrics_path.is_file():
        return
    lines = metrics_path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["round"] <= last_round]
    metrics_path.write_text("".join(line + "\n" for line in kept))
