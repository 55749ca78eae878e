"""A node's cache of the shared payload (transfer_set / digest delivery), keyed by its fingerprint.

The server announces the payload's fingerprint in `describe`; a node that holds a file for it
says so and is sent nothing, so a restarted SuperNode does not fetch the transfer set again.
One .npz per payload (read with allow_pickle=False, written atomically); a file whose contents
no longer hash to its fingerprint is ignored and fetched again.

Training reads the payload once per process (`payload_for_training`): simulated nodes share Ray
actors, and re-reading and re-hashing a transfer set for every client's train message cost tens of
ms each; the describe query still verifies each node's own file (`cached_payload`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtosc.atomic_write import atomic_path
from fedtosc.federation.payloads import payload_fingerprint

__all__ = ["cached_payload", "payload_for_training", "save_payload"]

_SEPARATOR = "::"  # between record and array names in the .npz
_CONFIG_KEY = "config-records"  # the payload's config records, as one JSON string
# The payload this process last verified, by fingerprint: a run has one, so one is kept.
_VERIFIED: dict[str, RecordDict] = {}


def _path(cache_dir: Path, fingerprint: str) -> Path:
    return Path(cache_dir).expanduser() / f"payload-{fingerprint}.npz"


def save_payload(cache_dir: Path, fingerprint: str, record: RecordDict) -> Path:
    """Write `record` under its fingerprint; ValueError when it does not hash to `fingerprint` (corrupted in transit)."""
    if payload_fingerprint(record) != fingerprint:
        raise ValueError(f"the payload received does not match its announced fingerprint {fingerprint}: resend it")
    arrays = {
        f"{record_name}{_SEPARATOR}{name}": array.numpy()
        for record_name, items in record.array_records.items()
        for name, array in items.items()
    }
    configs = {name: dict(items) for name, items in record.config_records.items()}
    arrays[_CONFIG_KEY] = np.array(json.dumps(configs))
    path = _path(cache_dir, fingerprint)
    with atomic_path(path) as temp, temp.open("wb") as stream:
        np.savez(stream, **arrays)
    return path


def cached_payload(cache_dir: Path, fingerprint: str) -> RecordDict | None:
    """The payload cached under `fingerprint`, or None when absent, unreadable or not matching it."""
    path = _path(cache_dir, fingerprint)
    if not fingerprint or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            contents = {name: stored[name] for name in stored.files}
        configs = json.loads(str(contents.pop(_CONFIG_KEY)))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a damaged file is fetched again
        return None
    records: dict[str, dict[str, Array]] = {}
    for key, value in contents.items():
        record_name, name = key.split(_SEPARATOR, 1)
        records.setdefault(record_name, {})[name] = Array(np.ascontiguousarray(value))
    record = RecordDict(
        {name: ArrayRecord(arrays) for name, arrays in records.items()}
        | {name: ConfigRecord(items) for name, items in configs.items()}
    )
    return record if payload_fingerprint(record) == fingerprint else None


def payload_for_training(cache_dir: Path, fingerprint: str) -> RecordDict | None:
    """What a node trains with: None when its cache holds no file for `fingerprint`, else the payload,
    read and verified once per process (a fingerprint names the same contents on every node)."""
    if not fingerprint or not _path(cache_dir, fingerprint).is_file():
        return None
    if fingerprint not in _VERIFIED:
        payload = cached_payload(cache_dir, fingerprint)
        if payload is None:
            return None
        _VERIFIED.clear()
        _VERIFIED[fingerprint] = payload
    return _VERIFIED[fingerprint]
