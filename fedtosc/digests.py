"""sha256 digests of the tensors in a safetensors file, recorded in its metadata, checked on read.

safetensors validates its header and offsets but not the bytes of the data region: a flipped
byte there is read as a slightly different value. Knowledge stores, checkpoints and the cached
server teacher record one digest per tensor (dtype, shape and bytes), so a reader names the
tensor that changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np

__all__ = ["DIGESTS_KEY", "digest_problem", "state_digest", "tensor_digests"]

DIGESTS_KEY = "sha256_digests"  # metadata key: JSON {tensor name: sha256 hex}


def tensor_digests(tensors: Mapping[str, np.ndarray]) -> dict[str, str]:
    return {name: _digest(np.asarray(array)) for name, array in tensors.items()}


def state_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """One sha256 over every tensor (names, dtypes, shapes and bytes): equal exactly when the states
    are equal bit for bit, so two runs' lines can be compared round by round."""
    return hashlib.sha256(json.dumps(tensor_digests(tensors), sort_keys=True).encode()).hexdigest()


def digest_problem(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> str | None:
    """Why `tensors` do not match the digests in `metadata`, or None when every one matches."""
    try:
        recorded = json.loads((metadata or {})[DIGESTS_KEY])
    except (KeyError, ValueError):
        return f"it records no tensor digests ({DIGESTS_KEY}): written by an older fedtosc, or its metadata was altered"
    if not isinstance(recorded, dict) or set(recorded) != set(tensors):
        return "its recorded tensor digests do not list exactly the tensors it holds"
    for name, array in tensors.items():
        if _digest(np.asarray(array)) != recorded[name]:
            return f"tensor {name!r} does not match its recorded sha256 digest: the file is corrupted"
    return None


def _digest(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
