"""The knowledge builder: run the teacher once over the distillation set, encode, store.

`build_knowledge` makes one batched inference pass (with a progress bar), fits and applies
the codec, and writes the store atomically with its provenance (teacher id, dataset
fingerprint, codec) so clients can never train on knowledge from other data or teachers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fedtosc.data.datasets import ImageDataset
from fedtosc.knowledge.codecs import KnowledgeCodec
from fedtosc.knowledge.store import KnowledgeStore, StoreHeader, write_store
from fedtosc.models.teachers import Teacher, predict

__all__ = ["build_knowledge"]


def build_knowledge(
    teacher: Teacher,
    data: ImageDataset,
    indices: np.ndarray,
    codec: KnowledgeCodec,
    path: Path,
    *,
    dataset_fingerprint: str,
    transform: str,
    batch_size: int,
    device: torch.device,
    extra: dict | None = None,
) -> KnowledgeStore:
    """Encode the teacher's outputs on `data[indices]` into a store at `path`; returns it opened."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    started = time.perf_counter()
    outputs = predict(teacher, data.subset(indices), batch_size, device, desc="building knowledge")
    shared = codec.fit(outputs)
    samples = codec.encode(outputs, shared)
    build_seconds = time.perf_counter() - started
    header = StoreHeader(
        teacher_id=teacher.teacher_id,
        dataset_fingerprint=dataset_fingerprint,
        transform=transform,
        codec=codec.name,
        codec_params=codec.params(),
        num_samples=len(indices),
        num_classes=int(outputs.logits.shape[1]),
        extra={**(extra or {}), "build_seconds": build_seconds},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_store(path, header, samples, indices, shared)
    return KnowledgeStore.open(path)
