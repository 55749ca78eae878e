"""The knowledge builder: run the teacher once over the distillation set, encode, store.

`build_knowledge` makes one batched inference pass (one progress bar) and is resumable: raw
teacher outputs go to chunk files under `<store>.partial/`, each written atomically and keyed
by the build's provenance (teacher, data, indices, transform, views, chunking), so a rerun
after a kill computes only the missing chunks and yields the same store as an uninterrupted
build. At the end it fits and applies the codec, records its fidelity to the full soft labels,
writes the store atomically and removes the partial folder (docs/architecture.md: the knowledge store convention).

With `views` = K > 1 the teacher sees K augmented views of every sample (data/views.py),
drawn once from `view_seed`; the codec encodes all N * K outputs (sample-major) and the store
keeps each view's parameters, so clients replay exactly those views.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from fedtosc.atomic_write import atomic_path, write_text_atomic
from fedtosc.data.datasets import ImageDataset
from fedtosc.data.views import VIEW_FIELDS, draw_views
from fedtosc.knowledge.codecs import Knowledge, KnowledgeCodec, fidelity, teacher_head_arrays
from fedtosc.knowledge.store import KnowledgeStore, StoreHeader, write_store
from fedtosc.models.outputs import TeacherOutputs
from fedtosc.models.teachers import Teacher, predict

__all__ = ["ChunkInput", "build_knowledge", "codec_fidelity", "partial_dir"]

_PROVENANCE_FILE = "provenance.json"
# Batches per chunk: large enough that chunk I/O is negligible next to inference,
# small enough that a kill loses little work (a minute or so of ViT-B-32 on a 2-core CPU).
_BATCHES_PER_CHUNK = 8


@dataclass(frozen=True)
class ChunkInput:
    """What the teacher sees for one chunk: its rows (sample-major, K views each) and their views."""

    start: int  # the chunk's first sample, its key in the partial folder
    rows: ImageDataset
    view_params: torch.Tensor | None


def partial_dir(path: Path) -> Path:
    """Where an unfinished build of the store at `path` keeps its chunks: `<store>.partial/`."""
    return path.with_name(path.name + ".partial")


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
    chunk_size: int | None = None,
    views: int = 1,
    view_seed: int = 0,
    ray_address: str | None = None,
) -> KnowledgeStore:
    """Encode the teacher's outputs on `data[indices]` into a store at `path`; returns it opened.

    Resumes from `<path>.partial/` when it holds chunks of this same build. `chunk_size`
    (samples, a multiple of `batch_size`; default 8 batches) fixes the batch boundaries, so a
    resumed build sees exactly the batches an uninterrupted one does. `views` > 1: the teacher
    runs on that many views per sample (the first one the image as stored), drawn from `view_seed`.
    `ray_address`: run the teacher on that Ray cluster (fedtosc.knowledge.ray_inference); the
    chunks, their batches and so the store are those of a local build.
    """
    indices = np.unique(np.asarray(indices, dtype=np.int64))  # sorted, as the store keys rows
    chunk_size = chunk_size or _BATCHES_PER_CHUNK * batch_size
    if chunk_size % batch_size:
        raise ValueError(f"chunk_size={chunk_size} must be a multiple of batch_size={batch_size}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    # Drawn once from their own seed and stored: clients read them, so they are never redrawn.
    view_params = None
    if views > 1:
        view_params = draw_views(len(indices), views, data.image_shape[1:], torch.Generator().manual_seed(view_seed))
    provenance = {
        "teacher_id": teacher.teacher_id,
        "dataset_fingerprint": dataset_fingerprint,
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
        "transform": transform,
        "views": views,
        "view_seed": view_seed,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
    }
    chunks_dir = _open_partial(partial_dir(Path(path)), provenance)
    started = time.perf_counter()
    outputs = _teacher_outputs(teacher, data, indices, view_params, chunks_dir, provenance, batch_size, device, ray_address)
    inference_seconds = time.perf_counter() - started
    shared = codec.fit(outputs)
    samples = codec.encode(outputs, shared)
    if codec.decodes_embeddings and type(teacher).linear_head is not Teacher.linear_head:
        shared |= teacher_head_arrays(*teacher.linear_head())  # clients turn embeddings into soft labels
    header = StoreHeader(
        teacher_id=teacher.teacher_id,
        dataset_fingerprint=dataset_fingerprint,
        transform=transform,
        codec=codec.name,
        codec_params=codec.params(),
        num_samples=len(indices),
        num_classes=int(outputs.logits.shape[1]),
        views=views,
        view_seed=view_seed,
        extra={
            **(extra or {}),
            # Timing of this session only: a resumed build counts the chunks it computed.
            "build_seconds": time.perf_counter() - started,
            "inference_seconds": inference_seconds,
            "fidelity": codec_fidelity(codec, outputs, samples, shared, _head_on_cpu(teacher)),
        },
    )
    write_store(path, header, samples, indices, shared, None if view_params is None else view_params.numpy())
    shutil.rmtree(chunks_dir)
    return KnowledgeStore.open(path)


def codec_fidelity(
    codec: KnowledgeCodec,
    outputs: TeacherOutputs,
    samples: dict[str, np.ndarray],
    shared: dict[str, np.ndarray],
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """How well the encoded `samples` keep the teacher's `outputs` (metrics of codecs.fidelity).

    Soft-label codecs: KL and argmax agreement against the exact (float64) soft labels at the
    codec's temperature. Embedding codecs: the embeddings' relative error and, given the
    teacher's head (`classify`), KL and argmax agreement of its soft labels (T=1) on the
    decoded embeddings against those on the exact ones.
    """
    decoded = codec.decode(samples, shared)
    if decoded.probs is not None:
        exact = torch.softmax(outputs.logits.double() / codec.temperature, dim=1)  # soft-label codecs have one
        return fidelity(Knowledge(probs=exact, embeddings=None), decoded)
    scores = fidelity(Knowledge(probs=None, embeddings=outputs.embeddings), decoded)
    if classify is not None:
        with torch.inference_mode():
            approx = torch.softmax(classify(decoded.embeddings).double(), dim=1)
        exact = torch.softmax(outputs.logits.double(), dim=1)
        scores |= fidelity(Knowledge(probs=exact, embeddings=None), Knowledge(probs=approx, embeddings=None))
    return scores


def _head_on_cpu(teacher: Teacher) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The teacher's head applied to CPU embeddings, or None for a teacher without one."""
    if type(teacher).classify is Teacher.classify:
        return None
    device = next(teacher.parameters()).device
    return lambda embeddings: teacher.classify(embeddings.to(device)).float().cpu()


def _open_partial(chunks_dir: Path, provenance: dict) -> Path:
    """The chunk folder for this build: kept when its provenance matches, else emptied."""
    marker = chunks_dir / _PROVENANCE_FILE
    if chunks_dir.is_dir():
        try:
            if json.loads(marker.read_text()) == provenance:
                return chunks_dir
        except (OSError, ValueError):
            pass  # no or unreadable marker: not a build we can trust
        tqdm.write(f"discarding {chunks_dir}: it holds chunks of another teacher, data or chunking")
        shutil.rmtree(chunks_dir)
    chunks_dir.mkdir(parents=True)
    write_text_atomic(marker, json.dumps(provenance, sort_keys=True))
    return chunks_dir


def _teacher_outputs(
    teacher: Teacher,
    data: ImageDataset,
    indices: np.ndarray,
    view_params: torch.Tensor | None,
    chunks_dir: Path,
    provenance: dict,
    batch_size: int,
    device: torch.device,
    ray_address: str | None,
) -> TeacherOutputs:
    """Teacher outputs over the N * K (sample, view) rows, sample-major, chunk by chunk.

    `ray_address`: the missing chunks run on that Ray cluster (Ray Data, a pool of teacher actors)
    instead of in this process; each chunk sees the same batches either way."""
    chunk_size, views = provenance["chunk_size"], provenance["views"]
    starts = range(0, len(indices), chunk_size)
    key = json.dumps(provenance, sort_keys=True)
    # A chunk holds chunk_size samples, so chunk_size * views teacher inputs.
    rows_in = {start: views * min(chunk_size, len(indices) - start) for start in starts}
    chunks = {start: _load_chunk(chunks_dir, start, key, rows_in[start]) for start in starts}
    done = sum(rows_in[start] for start, chunk in chunks.items() if chunk is not None)

    def chunk_input(start: int) -> ChunkInput:
        samples = slice(start, start + chunk_size)
        row_views = None if view_params is None else view_params[samples].reshape(-1, VIEW_FIELDS)
        return ChunkInput(start, data.subset(np.repeat(indices[samples], views)), row_views)

    missing = [start for start, chunk in chunks.items() if chunk is None]
    with tqdm(total=views * len(indices), initial=done, desc="building knowledge", unit="img") as bar:
        if ray_address is None:
            computed = (
                (job.start, predict(teacher, job.rows, batch_size, device, progress=bar, view_params=job.view_params))
                for job in map(chunk_input, missing)
            )
        else:
            # Imported here: a local build never loads Ray. Chunks come back in any order, each saved on arrival.
            from fedtosc.knowledge.ray_inference import infer_on_ray

            computed = infer_on_ray(teacher, map(chunk_input, missing), batch_size, device, ray_address, bar)
        for start, chunk in computed:
            _save_chunk(chunks_dir, start, key, chunk)  # a kill after this keeps the chunk: the rerun skips it
            chunks[start] = chunk
    logits = torch.cat([chunks[start].logits for start in starts])
    embeddings = [chunks[start].embeddings for start in starts]
    return TeacherOutputs(logits=logits, embeddings=None if None in embeddings else torch.cat(embeddings))


def _chunk_path(chunks_dir: Path, start: int) -> Path:
    return chunks_dir / f"chunk-{start:010d}.safetensors"


def _save_chunk(chunks_dir: Path, start: int, key: str, outputs: TeacherOutputs) -> None:
    tensors = {"logits": outputs.logits.contiguous()}
    if outputs.embeddings is not None:
        tensors["embeddings"] = outputs.embeddings.contiguous()
    with atomic_path(_chunk_path(chunks_dir, start)) as temp:  # a kill leaves the whole chunk or none of it
        save_file(tensors, str(temp), metadata={"provenance": key})


def _load_chunk(chunks_dir: Path, start: int, key: str, rows: int) -> TeacherOutputs | None:
    """A finished chunk of this build, or None (missing, unreadable or foreign: recomputed)."""
    path = _chunk_path(chunks_dir, start)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("provenance") != key:
                return None
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError):
        return None
    if "logits" not in tensors or tensors["logits"].shape[0] != rows:
        return None
    return TeacherOutputs(logits=tensors["logits"], embeddings=tensors.get("embeddings"))
