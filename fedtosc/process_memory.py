"""Peak memory of a whole simulated federation: launcher, its descendants, and Flower/Ray processes.

SuperLink starts `flower-superexec` in a new session and Ray starts its own daemons, so a
process tree does not reach them all; the run-local FLWR_HOME (see `fedtosc.launch`) marks
them. Used by benchmarks/federation.py and the scale test. Linux /proc only.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fedtosc.launch import processes_with_env

__all__ = ["PeakMemorySampler", "descendants", "rss_pss_bytes"]


class PeakMemorySampler(threading.Thread):
    """Every `interval_s`, sum RSS and PSS over `root_pid`'s descendants (itself included) and the
    processes whose FLWR_HOME is `flwr_home`; keep the maxima. Use as a context manager."""

    def __init__(self, root_pid: int, flwr_home: str, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.flwr_home, self.interval_s = root_pid, flwr_home, interval_s
        self.peak_rss_bytes = self.peak_pss_bytes = self.peak_processes = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            pids = descendants(self.root_pid) | set(processes_with_env("FLWR_HOME", self.flwr_home))
            sizes = [rss_pss_bytes(pid) for pid in pids]
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
    """`root_pid` and every process below it, from /proc/<pid>/stat parent ids."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: the parent id follows the last ')'.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = {root_pid}, [root_pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def rss_pss_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from smaps_rollup; zeros for a process that is gone."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, *rest = line.split()
            if key in values:
                values[key] = int(rest[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return values["Rss:"], values["Pss:"]
