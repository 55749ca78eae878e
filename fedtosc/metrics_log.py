"""metrics.jsonl: one line per federated round (or centralized epoch), written as it happens.

A line carries the global student's test accuracy, the clients' train metrics, the bytes moved
and the time since the log started; a resumed run keeps the lines up to its checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS_FILE", "MetricsLog"]

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """The run directory's metrics.jsonl, started afresh or continued after `resumed_after_round`."""

    def __init__(self, run_dir: Path, test_snr_db: float, resumed_after_round: int | None = None) -> None:
        """`test_snr_db`: the SNR the per-round test accuracy is measured at.

        `resumed_after_round`: continue an interrupted run whose checkpoint holds that round:
        its metrics.jsonl keeps those rounds (a line written after the checkpoint is dropped).
        """
        self.path = run_dir / METRICS_FILE
        self.test_snr_db = test_snr_db
        self.started = time.perf_counter()
        if resumed_after_round is None:
            self.path.unlink(missing_ok=True)
        else:
            self._keep_rounds_upto(resumed_after_round)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def append(
        self, server_round: int, accuracy: float, clients: list[dict], bytes_down: int, bytes_up: int, **extra: Any
    ) -> None:
        """One line; written whole with a single write call. `extra` (e.g. `epoch`, `rejected`) goes in as is."""
        record = {
            "round": server_round,
            **extra,
            "test_accuracy": accuracy,
            "test_snr_db": self.test_snr_db,
            "train_loss": _mean(clients, "train_total"),
            "train_accuracy": _labelled_accuracy(clients),
            "clients": clients,
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
            "elapsed_s": self.elapsed_s(),
        }
        with self.path.open("a") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")

    def lines(self) -> list[dict]:
        """Every line written so far (a resumed run's earlier rounds included), parsed."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def _keep_rounds_upto(self, last_round: int) -> None:
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["round"] <= last_round]
        self.path.write_text("".join(line + "\n" for line in kept))


def _labelled_accuracy(clients: list[dict]) -> float | None:
    """Training accuracy over all clients' labelled rows (`train_labelled` each, 1 where not reported):
    a client without labels has no accuracy to add."""
    rows = [(client["train_accuracy"], client.get("train_labelled", 1)) for client in clients if "train_accuracy" in client]
    total = sum(count for _, count in rows)
    return float(sum(accuracy * count for accuracy, count in rows) / total) if total else None


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return float(np.mean(values)) if values else None
