"""Peak memory of a whole simulated federation: launcher, its descendants, and Flower/Ray processes.

SuperLink starts `flower-superexec` in a new session and Ray starts its own daemons, so a
process tree does not reach them all; the run-local FLWR_HOME (see `fedtosc.launch`) marks
them. Used by benchmarks/federation.py and the scale test. PSS needs Linux.
"""

from __future__ import annotations

import threading

import psutil

from fedtosc.launch import processes_with_env

__all__ = ["PeakMemorySampler", "descendants", "memory_bytes"]


class PeakMemorySampler(threading.Thread):
    """Every `interval_s`, sum RSS and PSS over `root_pid`'s descendants (itself included) and the
    processes whose FLWR_HOME is `flwr_home`; keep the maxima. Use as a context manager.

    `pss=False` samples RSS alone (peak_pss_bytes stays 0): PSS walks each process's page tables,
    some 14 ms of CPU for a process with torch loaded, so a run of 15 such processes sampled twice a
    second spends a third of a core on it; RSS is a counter the kernel keeps."""

    def __init__(self, root_pid: int, flwr_home: str, interval_s: float = 0.5, pss: bool = True) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.flwr_home, self.interval_s, self.pss = root_pid, flwr_home, interval_s, pss
        self.peak_rss_bytes = self.peak_pss_bytes = self.peak_processes = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.sample(descendants(self.root_pid) | set(processes_with_env("FLWR_HOME", self.flwr_home)))

    def sample(self, pids: set[int]) -> None:
        """One tick over the run's processes `pids`; a subclass may note more of them."""
        sizes = [memory_bytes(pid, self.pss) for pid in pids]
        self.peak_rss_bytes = max(self.peak_rss_bytes, sum(rss for rss, _ in sizes))
        # PSS splits shared pages (torch's libraries in every Ray worker) among their users.
        self.peak_pss_bytes = max(self.peak_pss_bytes, sum(pss for _, pss in sizes))
        self.peak_processes = max(self.peak_processes, len(pids))

    def __enter__(self) -> PeakMemorySampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self.join()


def descendants(root_pid: int) -> set[int]:
    """`root_pid` and every process below it."""
    try:
        return {root_pid, *(child.pid for child in psutil.Process(root_pid).children(recursive=True))}
    except psutil.Error:
        return {root_pid}  # exited meanwhile


def memory_bytes(pid: int, pss: bool = True) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; zeros for a process that is gone or not ours to read.
    `pss=False` reads RSS alone and gives PSS as 0 (see PeakMemorySampler for what PSS costs)."""
    try:
        process = psutil.Process(pid)
        if pss:
            memory = process.memory_full_info()
            return memory.rss, memory.pss
        return process.memory_info().rss, 0
    except psutil.Error:
        return 0, 0
