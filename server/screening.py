"""Screening client updates before aggregation: nothing malformed or non-finite is averaged in.

A reply is rejected when the client reported an error (it crashed), when its arrays differ
from the global model in names, shapes or dtypes, or when any value is NaN or inf. The round
goes on with the rest, unless fewer than `min_successes` usable updates remain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

__all__ = ["RoundFailedError", "ScreenedFedAdam", "ScreenedFedAvg", "ScreenedFedProx", "ScreeningFn", "update_problem"]

# Told every round: (server round, the usable replies' contents, the rejected updates with their reason).
ScreeningFn = Callable[[int, list[RecordDict], list[dict]], None]


class RoundFailedError(RuntimeError):
    """Too few usable client updates in a round; the message lists what went wrong with each."""


def update_problem(arrays: ArrayRecord, reference: dict[str, tuple[tuple[int, ...], str]]) -> str | None:
    """Why a client's arrays cannot be aggregated into the global model, or None if they can."""
    if set(arrays) != set(reference):
        missing, extra = sorted(set(reference) - set(arrays)), sorted(set(arrays) - set(reference))
        return f"array names differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, array in arrays.items():
        shape, dtype = reference[name]
        if tuple(array.shape) != shape or array.dtype != dtype:
            return f"{name} is {array.dtype}{list(array.shape)}, the global model has {dtype}{list(shape)}"
        values = array.numpy()
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return f"{name} holds NaN or inf values"
    return None


class _Screening:
    """Mixin over a Flower strategy: screen train replies, then aggregate the usable ones."""

    def __init__(self, *args, min_successes: int, on_screened: ScreeningFn, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.min_successes = min_successes
        self.on_screened = on_screened
        self._reference: dict[str, tuple[tuple[int, ...], str]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._reference = {name: (tuple(array.shape), array.dtype) for name, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        usable, rejected = [], []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                problem = f"client failed: {reply.error.reason.strip().splitlines()[-1][:300]}"
            else:
                problem = update_problem(reply.content.array_records["arrays"], self._reference)
            if problem is None:
                usable.append(reply)
            else:
                log(WARNING, "round %d: rejected the update of node %d: %s", server_round, node, problem)
                rejected.append({"node-id": node, "problem": problem})
        self.on_screened(server_round, [reply.content for reply in usable], rejected)
        if len(usable) < self.min_successes:
            details = "; ".join(f"node {r['node-id']}: {r['problem']}" for r in rejected) or "no replies"
            raise RoundFailedError(
                f"round {server_round}: {len(usable)} usable client updates, fewer than the "
                f"{self.min_successes} required (federation.min_train_clients). {details}"
            )
        arrays, metrics = super().aggregate_train(server_round, usable)
        return (_with_reference_dtypes(arrays, self._reference) if arrays is not None else None), metrics


def _with_reference_dtypes(arrays: ArrayRecord, reference: dict[str, tuple[tuple[int, ...], str]]) -> ArrayRecord:
    """Weighted averaging turns integer buffers (BatchNorm's step counters) into floats; undo that
    so the global model keeps one dtype per array from round to round."""
    restored = {}
    for name, array in arrays.items():
        values = array.numpy()
        target = np.dtype(reference[name][1])
        restored[name] = Array(np.asarray(np.round(values) if target.kind in "iu" else values, dtype=target))
    return ArrayRecord(restored)


class ScreenedFedAvg(_Screening, FedAvg):
    """FedAvg over screened updates."""


class ScreenedFedProx(_Screening, FedProx):
    """FedProx over screened updates."""


class ScreenedFedAdam(_Screening, FedAdam):
    """FedAdam over screened updates."""
