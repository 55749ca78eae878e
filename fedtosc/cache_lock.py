"""One maker per cache entry, across processes.

Two runs that need the same teacher or knowledge store (a study's cells started side by side, the
test suite's workers) would otherwise both make it: wasted work for a teacher, and for a knowledge
store two builds sharing one `.partial` chunk folder, where the first to finish removes it under
the other. Whoever holds an entry's lock checks the cache and, if the entry is missing, makes it;
the others wait, then find it made.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["entry_lock", "lock_path"]


def lock_path(entry: Path) -> Path:
    """The lock file of the cache entry `entry`, beside it (it stays: removing it would race)."""
    return entry.with_name(f".{entry.name}.lock")


@contextmanager
def entry_lock(entry: Path) -> Iterator[None]:
    """Hold `entry`'s lock for the block; blocks while another process (or thread) holds it.

    An flock: the kernel releases it when its holder exits, so a killed build never leaves it held.
    """
    lock = lock_path(Path(entry))
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
