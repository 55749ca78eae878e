"""Atomic file writes: a reader sees the old file or the whole new one, never a partial one.

Results, checkpoints, cached teachers, knowledge stores and their build chunks are all written
through `atomic_path`, so a crash, a kill or a full disk mid-write cannot corrupt what the next
run reads back.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


@contextmanager
def atomic_path(path: Path, fsync: bool = False) -> Iterator[Path]:
    """A temp file beside `path` for the block to write; it replaces `path` when the block ends cleanly.

    The temp file is in the same folder, so `os.replace` is a rename within one file system;
    on an error it is removed and `path` is left as it was. `fsync`: flush the file, then the
    rename, to disk, for files a later run trusts without re-checking them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        if fsync:
            with temp.open("rb") as written:
                os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_directory(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        directory_descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)
