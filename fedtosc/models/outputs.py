"""What a teacher returns: its logits and embedding over a batch of samples.

Defined beside the teachers that produce it; the knowledge codecs consume it, so `knowledge`
depends on `models` and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TeacherOutputs"]


@dataclass(frozen=True)
class TeacherOutputs:
    """Raw teacher outputs over N samples: `logits` [N, C] float32, `embeddings` [N, D] float32 or None."""

    logits: torch.Tensor
    embeddings: torch.Tensor | None = None
