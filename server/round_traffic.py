"""What each round moved and who took part in it, for its metrics.jsonl line.

The strategy's screening reports every round here (`note_round`): the usable replies (their
train metrics and upload size) and the rejected ones. Bytes down are the global model sent to
every client that trained, plus the knowledge broadcast in the session's first round. Nodes that
rejoined after a restart, from their payload cache, are counted per slot (`rejoins`).
"""

from __future__ import annotations

from collections import Counter

import torch
from flwr.app import ArrayRecord, RecordDict

from fedtosc.federation.messages import REJOINED
from fedtosc.federation.payloads import payload_bytes
from fedtosc.federation.placement import round_placement
from fedtosc.federation.wire import wire_nbytes

__all__ = ["RoundTraffic"]


class RoundTraffic:
    """The latest round's client metrics, bytes up and rejections; bytes down on request."""

    def __init__(self, model_state: dict[str, torch.Tensor], knowledge_bytes: int, wire_dtype: str = "float32") -> None:
        """`wire_dtype`: what the model travels as (`federation.wire_dtype`), which sets the bytes down."""
        self.model_bytes = wire_nbytes(ArrayRecord(model_state), wire_dtype)
        self.clients: list[dict] = []
        self.bytes_up = 0
        self.rejected: list[dict] = []
        self.placement: dict[str, int] = {}  # client rounds per node in the latest round
        self.rejoins: Counter[int] = Counter()  # slot -> rounds it trained right after a restart, from its cache
        # The knowledge broadcast happens before the first round of this (possibly resumed) session.
        self._unreported_knowledge_bytes = knowledge_bytes

    def note_round(self, server_round: int, accepted: list[RecordDict], rejected: list[dict]) -> None:
        """The screening callback: the usable replies' contents and the rejected updates of a round."""
        self.clients = [dict(record.metric_records["metrics"]) for record in accepted]
        self.bytes_up = sum(payload_bytes(record) for record in accepted)
        self.rejected = rejected
        self.placement = round_placement(accepted)
        self.rejoins.update(int(metrics["partition-id"]) for metrics in self.clients if metrics.get(REJOINED))

    def take_bytes_down(self) -> int:
        """Bytes sent down in the latest round; the knowledge broadcast counts once, in the first."""
        sent = (len(self.clients) + len(self.rejected)) * self.model_bytes + self._unreported_knowledge_bytes
        self._unreported_knowledge_bytes = 0
        return sent
