"""The on-disk knowledge store: one self-describing safetensors file per teacher x dataset x codec.

Per docs/architecture.md ("Conventions") the server writes it once and every load checks what it is (teacher id, dataset
fingerprint, transform, codec and parameters, format version), so a mismatch is an error rather
than silent garbage. Rows are keyed by dataset index, so a client's slice is read lazily, and
`export_slice`/`import_slice` ship a slice as plain arrays plus a str->str header.

Layout: tensor `index` [N] int64 (sorted, unique dataset indices), `sample.<name>` [N, ...]
(codec per-sample arrays, row i belongs to index[i]), `shared.<name>` (codec shared arrays).
With K = header.views > 1 augmented views per sample (data/views.py), every codec array
has a view axis, `sample.<name>` [N, K, ...], and `sample.view_params` [N, K, 5] int16 holds
each view's crop box and flip; a store with K = 1 has neither (the image as stored). Decoded
`Knowledge` has N * K sample-major rows (row i * K + v: sample i, view v) and the view params.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from fedtosc.atomic_write import atomic_path
from fedtosc.data.views import VIEW_FIELDS
from fedtosc.digests import DIGESTS_KEY, digest_problem, tensor_digests
from fedtosc.knowledge.codecs import Knowledge, KnowledgeCodec, build_codec

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KnowledgeStore",
    "KnowledgeStoreError",
    "StoreHeader",
    "export_slice",
    "import_slice",
    "write_store",
]

FORMAT_NAME = "fedtosc-knowledge"
# 2: every tensor's sha256 digest in the metadata (fedtosc/digests.py).
FORMAT_VERSION = 2

_INDEX_KEY = "index"
_SAMPLE_PREFIX = "sample."
_SHARED_PREFIX = "shared."
_VIEW_PARAMS = "view_params"  # stored as `sample.view_params`
_REBUILD = "Rebuild it with `fedtosc knowledge build`."
_RESEND = "Ask the server to resend the knowledge slice."
# Rows closer than this are read as one range: one read call costs more than skipping a few rows.
_MAX_GAP_ROWS = 256
# Header fields an `expect` check may name; codec_params/extra are structured, not compared as str.
_EXPECTABLE = (
    "teacher_id", "dataset_fingerprint", "transform", "codec", "num_samples", "num_classes", "format_version",
    "views", "view_seed",
)
# Stores written before augmented views existed hold one view per sample: the image as stored.
_SINGLE_VIEW_METADATA = {"views": "1", "view_seed": "0"}


class KnowledgeStoreError(ValueError):
    """A knowledge store (file or payload) can't be used; the message names the source, cause and fix."""


@dataclass(frozen=True)
class StoreHeader:
    """What a store is: who made the knowledge, from which data, encoded how.

    `views`: teacher views per sample (1: the image as stored); `view_seed`: the seed their
    parameters were drawn with (knowledge.view_seed; no draw happens when views == 1).
    """

    teacher_id: str
    dataset_fingerprint: str
    transform: str
    codec: str
    codec_params: dict
    num_samples: int
    num_classes: int
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    views: int = 1
    view_seed: int = 0


def _header_to_metadata(header: StoreHeader) -> dict[str, str]:
    if header.format_version != FORMAT_VERSION:
        raise ValueError(f"this fedtosc writes format_version {FORMAT_VERSION}, header says {header.format_version}")
    try:
        codec_params = json.dumps(header.codec_params, sort_keys=True)
        extra = json.dumps(header.extra, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"codec_params and extra must be JSON-serializable: {error}") from error
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "teacher_id": header.teacher_id,
        "dataset_fingerprint": header.dataset_fingerprint,
        "transform": header.transform,
        "codec": header.codec,
        "codec_params": codec_params,
        "num_samples": str(header.num_samples),
        "num_classes": str(header.num_classes),
        "extra": extra,
        "views": str(header.views),
        "view_seed": str(header.view_seed),
    }


def _parse_header(metadata: dict[str, str] | None, source: str, fix: str) -> StoreHeader:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT_NAME:
        raise KnowledgeStoreError(
            f"{source} is not a fedtosc knowledge store (no format={FORMAT_NAME!r} metadata). {fix}"
        )
    version = _parse_field(metadata, "format_version", int, source, fix)
    if version != FORMAT_VERSION:
        upgrade = "Upgrade fedtosc to read it, or: " if version > FORMAT_VERSION else ""
        raise KnowledgeStoreError(
            f"{source} has format_version {version}, this fedtosc reads {FORMAT_VERSION}. {upgrade}{fix}"
        )
    header = StoreHeader(
        teacher_id=_parse_field(metadata, "teacher_id", str, source, fix),
        dataset_fingerprint=_parse_field(metadata, "dataset_fingerprint", str, source, fix),
        transform=_parse_field(metadata, "transform", str, source, fix),
        codec=_parse_field(metadata, "codec", str, source, fix),
        codec_params=_parse_field(metadata, "codec_params", _json_object, source, fix),
        num_samples=_parse_field(metadata, "num_samples", int, source, fix),
        num_classes=_parse_field(metadata, "num_classes", int, source, fix),
        format_version=version,
        extra=_parse_field(metadata, "extra", _json_object, source, fix),
        views=_parse_field(_SINGLE_VIEW_METADATA | metadata, "views", int, source, fix),
        view_seed=_parse_field(_SINGLE_VIEW_METADATA | metadata, "view_seed", int, source, fix),
    )
    if header.num_samples < 1 or header.num_classes < 1 or header.views < 1:
        raise KnowledgeStoreError(f"{source}: num_samples, num_classes and views must be >= 1. {fix}")
    if header.codec_params.get("num_classes", header.num_classes) != header.num_classes:
        raise KnowledgeStoreError(f"{source}: codec_params.num_classes disagrees with num_classes. {fix}")
    return header


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _parse_field(metadata: dict[str, str], name: str, parse: Any, source: str, fix: str) -> Any:
    if name not in metadata:
        raise KnowledgeStoreError(f"{source}: metadata field {name!r} is missing. {fix}")
    try:
        return parse(metadata[name])
    except ValueError as error:
        raise KnowledgeStoreError(f"{source}: metadata field {name!r} is invalid ({error}). {fix}") from error


def _build_codec(header: StoreHeader, source: str, fix: str) -> KnowledgeCodec:
    try:
        return build_codec(header.codec, **header.codec_params)
    except (ValueError, TypeError) as error:
        raise KnowledgeStoreError(f"{source}: can't rebuild codec {header.codec!r}: {error}. {fix}") from error


def _check_layout(header: StoreHeader, shapes: dict[str, tuple[int, ...]], source: str, fix: str) -> None:
    """Tensor names and leading dims agree with the header (shapes: every tensor's shape by name)."""
    prefixes = (_SAMPLE_PREFIX, _SHARED_PREFIX)
    unexpected = [name for name in shapes if name != _INDEX_KEY and not name.startswith(prefixes)]
    if _INDEX_KEY not in shapes or unexpected:
        raise KnowledgeStoreError(
            f"{source}: expected tensors 'index', 'sample.*', 'shared.*'; "
            f"missing index or unexpected {unexpected}. {fix}"
        )
    if shapes[_INDEX_KEY] != (header.num_samples,):
        raise KnowledgeStoreError(
            f"{source}: index has shape {shapes[_INDEX_KEY]}, num_samples is {header.num_samples}. {fix}"
        )
    view_params = _SAMPLE_PREFIX + _VIEW_PARAMS
    if not any(name.startswith(_SAMPLE_PREFIX) and name != view_params for name in shapes):
        raise KnowledgeStoreError(f"{source}: holds no per-sample codec arrays. {fix}")
    if (view_params in shapes) != (header.views > 1):
        raise KnowledgeStoreError(
            f"{source}: has views={header.views}; {view_params!r} must be present exactly when views > 1. {fix}"
        )
    # One view per sample keeps the original layout; K views add a view axis to every array.
    leading = (header.num_samples,) if header.views == 1 else (header.num_samples, header.views)
    expected = ", ".join(f"{dim}={size}" for dim, size in zip(("num_samples", "views"), leading))
    for name, shape in shapes.items():
        if name.startswith(_SAMPLE_PREFIX) and shape[: len(leading)] != leading:
            raise KnowledgeStoreError(
                f"{source}: array {name!r} has shape {shape}, its leading dims must be {expected}. {fix}"
            )
    if view_params in shapes and shapes[view_params] != (*leading, VIEW_FIELDS):
        raise KnowledgeStoreError(
            f"{source}: {view_params!r} has shape {shapes[view_params]}, expected {(*leading, VIEW_FIELDS)}. {fix}"
        )


def _check_index(index: np.ndarray, source: str, fix: str) -> None:
    if index.dtype != np.int64 or (index.size > 1 and not (np.diff(index) > 0).all()):
        raise KnowledgeStoreError(f"{source}: index must be int64, sorted and unique. {fix}")


def _check_decodes(
    codec: KnowledgeCodec,
    views: int,
    samples: dict[str, np.ndarray],
    shared: dict[str, np.ndarray],
    source: str,
    fix: str,
) -> Knowledge:
    """Decode per-sample arrays laid out as in the file (with a view axis when views > 1)."""
    rows = {name: array for name, array in samples.items() if name != _VIEW_PARAMS}
    if views > 1:
        rows = {name: array.reshape(-1, *array.shape[2:]) for name, array in rows.items()}  # sample-major
    try:
        knowledge = codec.decode(rows, shared)
    except ValueError as error:
        raise KnowledgeStoreError(f"{source}: can't decode with codec {codec.name!r}: {error}. {fix}") from error
    if views == 1:
        return knowledge
    view_params = samples[_VIEW_PARAMS]
    if view_params.dtype != np.int16:
        raise KnowledgeStoreError(f"{source}: {_VIEW_PARAMS!r} must be int16, got {view_params.dtype}. {fix}")
    return replace(knowledge, view_params=torch.from_numpy(view_params.copy()))  # payload arrays may be read-only


def _as_index_array(indices: np.ndarray) -> np.ndarray:
    array = np.asarray(indices).reshape(-1)
    # An empty list arrives as float64; anything non-empty must already be integral, never truncated.
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"dataset indices must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _strip(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: array for name, array in arrays.items() if name.startswith(prefix)}


def write_store(
    path: str | Path,
    header: StoreHeader,
    samples: dict[str, np.ndarray],
    indices: np.ndarray,
    shared: dict[str, np.ndarray],
    view_params: np.ndarray | None = None,
) -> None:
    """Write a store atomically (`fedtosc.atomic_write`: a temp file in the same folder, fsync, rename).

    A crash at any point leaves either the old file or the new one at `path`, never a partial
    one. `samples` (the codec's encode output) rows follow `indices` (sorted, unique dataset
    indices, len == num_samples); with header.views = K > 1 they are the N * K sample-major
    rows (i * K + v) and `view_params` is int16 [N, K, 5], else None.
    """
    path = Path(path)
    metadata = _header_to_metadata(header)
    index = np.asarray(indices)
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {index.dtype}")
    if header.views > 1:
        samples = _with_view_axis(samples, header.num_samples, header.views)
    if view_params is not None:
        samples = samples | {_VIEW_PARAMS: np.asarray(view_params)}
    tensors = {_INDEX_KEY: np.ascontiguousarray(index, dtype=np.int64)}
    tensors |= {_SAMPLE_PREFIX + name: np.ascontiguousarray(array) for name, array in samples.items()}
    tensors |= {_SHARED_PREFIX + name: np.ascontiguousarray(array) for name, array in shared.items()}
    # The writer runs the reader's checks so a bad build fails here, not on every client later.
    source = f"knowledge store to write at {path}"
    try:
        parsed = _parse_header(metadata, source, "")
        _check_layout(parsed, {name: array.shape for name, array in tensors.items()}, source, "")
        _check_index(tensors[_INDEX_KEY], source, "")
        first_row = {name: array[:1] for name, array in samples.items()}
        _check_decodes(_build_codec(parsed, source, ""), parsed.views, first_row, shared, source, "")
    except KnowledgeStoreError as error:
        raise ValueError(str(error).strip()) from None
    metadata = metadata | {DIGESTS_KEY: json.dumps(tensor_digests(tensors), sort_keys=True)}
    with atomic_path(path, fsync=True) as temp:
        save_file(tensors, str(temp), metadata=metadata)


def _with_view_axis(samples: dict[str, np.ndarray], num_samples: int, views: int) -> dict[str, np.ndarray]:
    """Codec rows [N * K, ...] (sample-major) as [N, K, ...], so the store stays keyed by sample."""
    wrong = sorted(name for name, array in samples.items() if np.shape(array)[:1] != (num_samples * views,))
    if wrong:
        raise ValueError(
            f"with views={views}, codec arrays need num_samples * views = {num_samples * views} rows; {wrong} do not"
        )
    return {name: np.reshape(array, (num_samples, views, *np.shape(array)[1:])) for name, array in samples.items()}


class KnowledgeStore:
    """A validated, lazily read knowledge store; holds the file mapped while the object lives."""

    def __init__(
        self, path: Path, handle: Any, header: StoreHeader, index: np.ndarray, shared: dict[str, np.ndarray]
    ) -> None:
        self.path = path
        self.header = header
        self._handle = handle
        self._index = index
        self._shared = shared
        self._sample_names = sorted(name for name in handle.keys() if name.startswith(_SAMPLE_PREFIX))

    @classmethod
    def open(cls, path: str | Path, *, expect: dict[str, str] | None = None) -> KnowledgeStore:
        """Open and validate the store at `path`; `expect` maps header fields to required values."""
        path = Path(path)
        source = f"knowledge store {path}"
        if not path.is_file():
            raise KnowledgeStoreError(f"{source} does not exist. Build it with `fedtosc knowledge build`.")
        try:
            handle = safe_open(str(path), framework="numpy")
            metadata = handle.metadata()
        except Exception as error:  # safetensors raises its own error types and OSError; all mean "unreadable"
            raise KnowledgeStoreError(
                f"{source} is not a readable safetensors file (truncated or corrupted?): {error}. {_REBUILD}"
            ) from error
        header = _parse_header(metadata, source, _REBUILD)
        _check_expected(header, expect or {}, source)
        # Read once: the digest check needs every byte, and the index and shared arrays come from the same read.
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        problem = digest_problem(tensors, metadata)
        if problem is not None:
            raise KnowledgeStoreError(f"{source}: {problem}. {_REBUILD}")
        _check_layout(header, {name: array.shape for name, array in tensors.items()}, source, _REBUILD)
        index = tensors[_INDEX_KEY]
        _check_index(index, source, _REBUILD)
        shared = _strip(_SHARED_PREFIX, tensors)
        store = cls(path, handle, header, index, shared)
        _check_decodes(store.codec(), header.views, store.slice(index[:1]), shared, source, _REBUILD)
        return store

    @property
    def index(self) -> np.ndarray:
        """The dataset indices the store holds, ascending [N] int64 (a copy)."""
        return self._index.copy()

    @property
    def bytes_per_sample(self) -> float:
        """Bytes of a sample's per-sample arrays (all its views' codec payload and view params; not the index)."""
        total_bytes = 0
        for name in self._sample_names:
            tensor_slice = self._handle.get_slice(name)
            total_bytes += int(np.prod(tensor_slice.get_shape())) * tensor_slice[0:0].dtype.itemsize
        return total_bytes / self.header.num_samples

    def slice(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Per-sample arrays as laid out in the file (names without `sample.`) for these dataset indices, in order."""
        requested = _as_index_array(indices)
        positions = np.searchsorted(self._index, requested).clip(max=len(self._index) - 1)
        unknown = requested[self._index[positions] != requested]
        if unknown.size:
            shown = ", ".join(str(value) for value in unknown[:10]) + (" ..." if unknown.size > 10 else "")
            raise KnowledgeStoreError(
                f"knowledge store {self.path} has no rows for dataset indices [{shown}]; it covers "
                f"{self.header.num_samples} samples. Rebuild it over this dataset with `fedtosc knowledge build`."
            )
        return {name[len(_SAMPLE_PREFIX):]: self._read_rows(name, positions) for name in self._sample_names}

    def _read_rows(self, name: str, positions: np.ndarray) -> np.ndarray:
        tensor_slice = self._handle.get_slice(name)
        rows = np.unique(positions)
        if rows.size == 0:
            return tensor_slice[0:0]
        run_starts = np.flatnonzero(np.diff(rows) > _MAX_GAP_ROWS) + 1
        chunks = []
        for run in np.split(rows, run_starts):
            block = tensor_slice[int(run[0]) : int(run[-1]) + 1]
            chunks.append(block[run - run[0]])
        return np.concatenate(chunks)[np.searchsorted(rows, positions)]

    def shared(self) -> dict[str, np.ndarray]:
        """The codec's shared arrays (names without the `shared.` prefix); copies, safe to modify."""
        return {name: array.copy() for name, array in self._shared.items()}

    def codec(self) -> KnowledgeCodec:
        """A fresh codec rebuilt from the header."""
        return _build_codec(self.header, f"knowledge store {self.path}", _REBUILD)

    def decode(self, indices: np.ndarray) -> Knowledge:
        """Decoded knowledge for these dataset indices, samples in the given order (K rows each, sample-major)."""
        return _check_decodes(
            self.codec(), self.header.views, self.slice(indices), self._shared, f"knowledge store {self.path}", _REBUILD
        )


def _check_expected(header: StoreHeader, expect: dict[str, str], source: str) -> None:
    unknown = sorted(set(expect) - set(_EXPECTABLE))
    if unknown:
        raise ValueError(f"can't check {unknown}; expect may name: {', '.join(_EXPECTABLE)}")
    for name, expected in expect.items():
        found = str(getattr(header, name))
        if found != str(expected):
            raise KnowledgeStoreError(
                f"{source} has {name}={found!r} but {expected!r} was expected. Point to the store built for this "
                f"{name}, or rebuild it with `fedtosc knowledge build`."
            )


def export_slice(store: KnowledgeStore, indices: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A self-describing payload for these indices: arrays laid out like the file, plus its metadata.

    Rows are in ascending index order (duplicates dropped), so the payload validates like a store.
    """
    index = np.unique(_as_index_array(indices))
    if index.size == 0:
        raise ValueError("export_slice needs at least one index")
    arrays = {_INDEX_KEY: index}
    arrays |= {_SAMPLE_PREFIX + name: array for name, array in store.slice(index).items()}
    arrays |= {_SHARED_PREFIX + name: array for name, array in store.shared().items()}
    return arrays, _header_to_metadata(replace(store.header, num_samples=int(index.size)))


def import_slice(arrays: dict[str, np.ndarray], header: dict[str, str]) -> tuple[np.ndarray, Knowledge]:
    """Validate a payload from `export_slice` and decode it: (dataset indices [n] int64, knowledge)."""
    source = "knowledge payload"
    parsed = _parse_header(header, source, _RESEND)
    _check_layout(parsed, {name: tuple(np.shape(array)) for name, array in arrays.items()}, source, _RESEND)
    index = np.asarray(arrays[_INDEX_KEY])
    _check_index(index, source, _RESEND)
    codec = _build_codec(parsed, source, _RESEND)
    samples, shared = _strip(_SAMPLE_PREFIX, arrays), _strip(_SHARED_PREFIX, arrays)
    knowledge = _check_decodes(codec, parsed.views, samples, shared, source, _RESEND)
    return index, knowledge
