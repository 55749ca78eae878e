"""results.json and its plots: writing and reading it, the two figures, the summary on stdout.

results.json is written atomically (`fedtosc.atomic_write`), so an interrupted run never leaves
a half-written one; studies and benchmarks write their JSON the same way. The same files are
written whether the run was simulated, deployed or centralized (`fedtosc.run_results`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI without a display
import matplotlib.pyplot as plt  # noqa: E402

from fedtosc.atomic_write import atomic_path  # noqa: E402

__all__ = [
    "RESULTS_KEYS",
    "plot_accuracy_vs_snr",
    "plot_channel_uses",
    "print_summary",
    "read_results",
    "write_json_atomic",
]

RESULTS_KEYS = ("teacher", "student", "knowledge", "federation", "accuracy_vs_snr", "channel_uses")


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path`, replaced whole and flushed to disk."""
    with atomic_path(path, fsync=True) as temp, temp.open("w") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)


def read_results(run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    missing = [key for key in RESULTS_KEYS if key not in results]
    if missing:
        raise ValueError(f"{run_dir}/results.json lacks {missing}")
    return results


def plot_accuracy_vs_snr(results: dict[str, Any], path: Path) -> None:
    """Student accuracy against SNR per channel, with the teacher's accuracy as a reference line."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for channel, curve in results["accuracy_vs_snr"].items():
        snrs = sorted(curve, key=float)
        axes.plot([float(s) for s in snrs], [curve[s] for s in snrs], marker="o", label=f"student, {channel}")
    axes.axhline(results["teacher"]["accuracy"], color="gray", linestyle="--", label=f"teacher ({results['teacher']['name']})")
    axes.set_xlabel("SNR (dB)")
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(_title(results))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_channel_uses(results: dict[str, Any], path: Path) -> None:
    """Complex symbols sent per sample at each eval SNR (flat unless the student adapts its rate)."""
    uses = results["channel_uses"]
    snrs = sorted(uses, key=float)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot([float(s) for s in snrs], [uses[s] for s in snrs], marker="o")
    axes.set_xlabel("SNR (dB)")
    axes.set_ylabel("channel uses per sample")
    axes.set_ylim(0, max(uses.values(), default=1) * 1.1)
    axes.grid(alpha=0.3)
    axes.set_title(_title(results))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _title(results: dict[str, Any]) -> str:
    federation = results["federation"]
    if federation.get("mode") == "centralized":
        return f"centralized on {federation['num_clients']} clients' pooled data, budget of {federation['rounds']} rounds"
    return f"{federation['num_clients']} clients, {federation['rounds']} rounds"


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    """The run's headline figures on stdout: teacher, student size, accuracy against SNR."""
    print(f"\nteacher accuracy: {results['teacher']['accuracy']:.3f}")
    print(f"student: {results['student']['params']:,} params ({results['student']['encoder_params']:,} on device)")
    for channel, curve in results["accuracy_vs_snr"].items():
        row = "  ".join(f"{float(snr):>5g} dB {acc:.3f}" for snr, acc in sorted(curve.items(), key=lambda kv: float(kv[0])))
        print(f"{channel:>9}: {row}")
    print(f"results: {run_dir / 'results.json'}")
