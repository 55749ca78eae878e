"""Shared by the Flower benchmarks: one `fedtosc run` in a subprocess, timed and its memory sampled."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fedtosc.process_memory import PeakMemorySampler

__all__ = ["timed_run"]

_SAMPLE_INTERVAL_S = 0.5


def timed_run(
    overrides: list[str], run_dir: Path, sampler_type: type[PeakMemorySampler] = PeakMemorySampler,
    extra_env: dict[str, str] | None = None, pss: bool = True,
) -> tuple[dict, list[dict], PeakMemorySampler]:
    """(figures, the run's metrics.jsonl lines, its memory sampler) of `fedtosc run <overrides>`.

    Round time is the median of the `elapsed_s` differences, rounds 2..R (round 1 also carries
    start-up and the knowledge broadcast). Peak memory sums the RSS and PSS of the launcher, its
    descendants and every process carrying the run's FLWR_HOME (`sampler_type` may note more of
    them). The 1-minute load average is noted before and after. `extra_env`: set for the run, on
    top of this process's environment. `pss=False` samples RSS alone: PSS walks every process's page
    tables (a third of a core for a 15-process run sampled twice a second), CPU a timing must not
    take from the run it times; peak_pss_mib is then None.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    command = [sys.executable, "-m", "fedtosc.cli", "run", *overrides, f"output_dir={run_dir}"]
    flwr_home = str(run_dir / ".flwr")
    started = time.perf_counter()
    with (run_dir.parent / f"{run_dir.name}.log").open("w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(extra_env or {})})
        with sampler_type(launcher.pid, flwr_home, _SAMPLE_INTERVAL_S, pss=pss) as memory:
            code = launcher.wait()
    if code != 0 or not (run_dir / "results.json").is_file():
        raise RuntimeError(f"fedtosc run failed (exit {code}): see {log.name}")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed = [line["elapsed_s"] for line in lines]
    rounds = [later - earlier for earlier, later in zip(elapsed, elapsed[1:])]
    figures = {
        "round_s": statistics.median(rounds), "rounds_s": rounds, "first_round_s": elapsed[0],
        "wall_s": time.perf_counter() - started, "peak_rss_mib": memory.peak_rss_bytes / 2**20,
        "peak_pss_mib": memory.peak_pss_bytes / 2**20 if pss else None, "peak_processes": memory.peak_processes,
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    return figures, lines, memory
