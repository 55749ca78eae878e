"""Screening client updates before aggregation: nothing malformed or non-finite is averaged in.

A reply is rejected when the client reported an error (it crashed), when its arrays differ
from the global model in names, shapes or dtypes, or when any value is NaN or inf. The round
goes on with the rest, unless fewer than `min_successes` usable updates remain.

The model travels in `federation.wire_dtype` both ways (fedtosc/federation/wire.py): encoded
here for the train messages, and each reply widened back to float32 before it is screened and
aggregated, so the strategy and the global model only ever hold float32.

Rounds are deterministic: Flower samples nodes with the global, unseeded `random` over nodes in
whatever order the grid lists them, and sums replies in arrival order. Here nodes are listed in
a fixed order (by partition), the sample is seeded by (run seed, round), and replies are
aggregated in that same order, so the same seed gives the same global weights bit for bit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fedtosc.config import ExperimentConfig
from fedtosc.federation.array_bytes import array_values
from fedtosc.federation.wire import WireFormatError, from_wire, to_wire

__all__ = [
    "NodeRecords", "RoundFailedError", "ScreenedFedAdam", "ScreenedFedAvg", "ScreenedFedProx", "ScreeningFn", "update_problem",
]

# Told every round: (server round, the usable replies' contents, the rejected updates with their reason).
ScreeningFn = Callable[[int, list[RecordDict], list[dict]], None]
NodeOrder = Callable[[int], int]  # node id -> its place in the fixed order (e.g. its partition id)
NodeLabel = Callable[[int], str]  # node id -> how errors name it (e.g. with its partition and channel)
# node id -> records its train messages carry besides the round's own (the run as described to it)
NodeRecords = Callable[[int], dict[str, ConfigRecord]]
# Strategy state in checkpoints: FedOpt's server moments, per array name.
_MOMENTS = ("m_t", "v_t")


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
        values = array_values(array)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return f"{name} holds NaN or inf values"
    return None


class _Screening:
    """Mixin over a Flower strategy: screen train replies, then aggregate the usable ones."""

    def __init__(
        self,
        *args,  # noqa: ANN002
        min_successes: int,
        on_screened: ScreeningFn,
        node_order: NodeOrder = lambda node_id: node_id,
        node_label: NodeLabel = lambda node_id: f"node {node_id}",
        sampling_seed: int = 0,
        round_offset: int = 0,
        node_records: NodeRecords | None = None,
        wire_dtype: str = "float32",
        **kwargs,  # noqa: ANN003
    ) -> None:
        """`round_offset`: rounds a resumed run already did; Flower numbers this session's from 1.
        `node_records`: what each node's train messages carry besides the round's own records.
        `wire_dtype`: what the model travels as, both ways (fedtosc.federation.wire)."""
        super().__init__(*args, **kwargs)
        self.node_records = node_records
        self.wire_dtype = wire_dtype
        self.min_successes = min_successes
        self.on_screened = on_screened
        self.node_order, self.node_label = node_order, node_label
        self.sampling_seed = sampling_seed
        self.round_offset = round_offset
        self._reference: dict[str, tuple[tuple[int, ...], str]] = {}
        self._sampled: list[Message] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._reference = {name: (tuple(array.shape), array.dtype) for name, array in arrays.items()}
        saved = random.getstate()
        random.seed(self.sampling_seed * 1_000_003 + self.round_offset + server_round)
        try:
            messages = list(super().configure_train(server_round, arrays, config, _OrderedGrid(grid, self.node_order)))
        finally:
            random.setstate(saved)  # nothing else in the process sees the seeded stream
        # The grid gives each message its id when it sends it (these very objects): replies name it.
        self._sampled = messages
        return messages

    def _received(self, reply: Message) -> tuple[ArrayRecord | None, str | None]:
        """A reply's update as float32 named arrays (whatever the wire carried), and why it cannot be aggregated."""
        record = reply.content.array_records.get(self.arrayrecord_key)
        if record is None:
            return None, f"the reply has no {self.arrayrecord_key!r} record"
        try:
            arrays = from_wire(record, self.wire_dtype)
        except WireFormatError as error:
            return None, str(error)
        return arrays, update_problem(arrays, self._reference)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """Flower's messages share one RecordDict; with `node_records` each node gets its own, the
        round's records plus its own (a restarted node rejoins from them: messages.RUN). The model
        goes in `wire_dtype`, encoded once for every node; the strategy keeps its float32 arrays."""
        key = self.arrayrecord_key
        record = _merged(record, {key: to_wire(record.array_records[key], self.wire_dtype)})
        if self.node_records is None or message_type != MessageType.TRAIN:
            return super()._construct_messages(record, node_ids, message_type)
        return [
            Message(content=_merged(record, self.node_records(node)), message_type=message_type, dst_node_id=node)
            for node in node_ids
        ]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The strategy's own state to checkpoint (FedAdam's server moments; empty for FedAvg/FedProx)."""
        return {
            f"{moment}/{name}": value
            for moment in _MOMENTS
            for name, value in (getattr(self, moment, None) or {}).items()
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` saved, so a resumed FedAdam continues with its moments."""
        for moment in _MOMENTS:
            values = {key.split("/", 1)[1]: value for key, value in arrays.items() if key.split("/", 1)[0] == moment}
            if values:
                setattr(self, moment, values)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        usable, rejected = [], []
        # An error reply for a lost node comes from the SuperLink (src_node_id 1), not from the
        # node: the message it answers names the node.
        destination = {message.metadata.message_id: message.metadata.dst_node_id for message in self._sampled}
        answered = set()
        for reply in replies:
            node = destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                arrays, problem = None, f"client failed: {reply.error.reason.strip().splitlines()[-1][:300]}"
            else:
                arrays, problem = self._received(reply)
            if problem is None:
                usable.append((reply, arrays))
            else:
                log(WARNING, "round %d: rejected the update of node %d: %s", server_round, node, problem)
                rejected.append({"node-id": node, "problem": problem})
        rejected += [
            {"node-id": node, "problem": "no reply (lost or timed out)"} for node in destination.values() if node not in answered
        ]
        # The replies as they came: their upload size is what the wire carried.
        self.on_screened(server_round, [reply.content for reply, _ in usable], rejected)
        if len(usable) < self.min_successes:
            lost = "; ".join(f"{self.node_label(r['node-id'])}: {r['problem']}" for r in rejected) or "no replies"
            raise RoundFailedError(
                f"round {server_round + self.round_offset}: {len(usable)} usable client updates, fewer than the "
                f"{self.min_successes} required (federation.min_train_fraction / min_train_clients). Lost: {lost}"
            )
        usable.sort(key=lambda item: self.node_order(item[0].metadata.src_node_id))
        for reply, arrays in usable:  # a new content: what on_screened was given stays as the wire carried it
            reply.content = _merged(reply.content, {self.arrayrecord_key: arrays})
        # FedAdam's bias correction counts rounds: a resumed run continues the original count.
        arrays, metrics = super().aggregate_train(server_round + self.round_offset, [reply for reply, _ in usable])
        return (_with_reference_dtypes(arrays, self._reference) if arrays is not None else None), metrics


class _OrderedGrid:
    """A Grid whose node ids come in a fixed order; everything else is the wrapped grid's."""

    def __init__(self, grid: Grid, node_order: NodeOrder) -> None:
        self._grid, self._node_order = grid, node_order

    def get_node_ids(self) -> Iterator[int]:
        return iter(sorted(self._grid.get_node_ids(), key=self._node_order))

    def __getattr__(self, name: str):  # noqa: ANN204 - whatever the grid has
        return getattr(self._grid, name)


def _merged(record: RecordDict, records: dict) -> RecordDict:
    """A new RecordDict: `record`'s records, with `records` added or replacing those of the same name."""
    return RecordDict(dict(record.items()) | records)


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

    @classmethod
    def from_config(cls, config: ExperimentConfig, **common: Any) -> ScreenedFedAvg:
        """The strategy with its own settings from `config` and the ones every strategy shares."""
        return cls(**common)


class ScreenedFedProx(_Screening, FedProx):
    """FedProx over screened updates; clients add (mu / 2) ||w - w_global||^2 (`strategy.proximal_mu`)."""

    @classmethod
    def from_config(cls, config: ExperimentConfig, **common: Any) -> ScreenedFedProx:
        return cls(proximal_mu=config.strategy.proximal_mu, **common)


class ScreenedFedAdam(_Screening, FedAdam):
    """FedAdam over screened updates: server learning rate `strategy.server_lr`, clients' `train.lr`."""

    @classmethod
    def from_config(cls, config: ExperimentConfig, **common: Any) -> ScreenedFedAdam:
        return cls(eta=config.strategy.server_lr, eta_l=config.train.lr, **common)
