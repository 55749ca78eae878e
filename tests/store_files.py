"""Test helper: rewrite a knowledge store (or any safetensors file with tensor digests, such as a
cached teacher) as another tool or an older fedtosc might, bypassing `write_store`'s checks. The result is consistent (its digests match its tensors) but wrong in
whatever way the caller asks, so a test sees the reader's check for that, not the digest's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fedtosc.digests import DIGESTS_KEY, tensor_digests


def rewrite_store(path: Path, metadata_changes: dict[str, str | None], tensor_changes: dict[str, np.ndarray | None]) -> None:
    """Apply the changes; a None value deletes that metadata field or tensor."""
    with open(path, "rb") as file:
        metadata = json.loads(file.read(int.from_bytes(file.read(8), "little")))["__metadata__"]
    tensors = {name: array for name, array in (load_file(str(path)) | tensor_changes).items() if array is not None}
    metadata = metadata | {DIGESTS_KEY: json.dumps(tensor_digests(tensors))} | metadata_changes
    save_file(tensors, str(path), metadata={name: value for name, value in metadata.items() if value is not None})
