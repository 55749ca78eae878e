"""CIFAR-10: the full method against its baselines, accuracy vs SNR on AWGN and Rayleigh.

Runs the grid method x seed with centralized training (`fedtosc.centralized`, the same code
path as `fedtosc train`), one run directory each under --runs; finished runs (results.json
present) are skipped, so an interrupted grid resumes. Then aggregates every finished run to
results/cifar10_baselines.{json,md,png} as mean +- std over seeds.

    python examples/cifar10_baselines.py [--budget standard]   # run what is missing, then aggregate
    python examples/cifar10_baselines.py --aggregate-only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fedtosc.results import read_results, write_json_atomic  # importing it selects the headless Agg backend

import matplotlib.pyplot as plt  # noqa: E402

METHODS = ("full", "labels_only", "online_kd", "no_adaptive", "no_ib")
SEEDS = (0, 1, 2)
CHANNELS = ("awgn", "rayleigh")
SNRS_DB = (-5.0, 0.0, 5.0, 10.0, 20.0)
_EVAL = [
    f"channel.eval_snr_db=[{','.join(f'{s:g}' for s in SNRS_DB)}]",
    "channel.eval_channels=[awgn,rayleigh]",
    "channel=heterogeneous_fading",
]
# Training budgets: `quick` fits a 2-core CPU shared with other jobs; `standard` wants it to itself.
BUDGETS = {
    "quick": [
        "dataset=cifar10_folder", "dataset.max_train_samples=2000", "dataset.max_test_samples=1000",
        "dataset.server_fraction=0.5", "teacher.width=16", "teacher.epochs=8",
        "federation.rounds=3", "train.local_epochs=1", *_EVAL,
    ],
    "standard": [
        "dataset=cifar10_folder", "dataset.max_train_samples=6000", "dataset.max_test_samples=2000",
        "dataset.server_fraction=0.3", "teacher.width=32", "teacher.epochs=15",
        "federation.rounds=4", "train.local_epochs=2", *_EVAL,
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--runs", type=Path, help="default: runs/cifar10_baselines[-<budget>]")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    suffix = "" if args.budget == "quick" else f"-{args.budget}"
    runs = args.runs or Path(f"runs/cifar10_baselines{suffix}")
    if not args.aggregate_only:
        # Seed-major order: a grid cut short still has every method at the first seeds.
        for seed in SEEDS:
            for method in METHODS:
                _run_one(method, seed, runs, BUDGETS[args.budget])
    _aggregate(runs, args.out / f"cifar10_baselines{suffix}", BUDGETS[args.budget])


def _run_dir(runs: Path, method: str, seed: int) -> Path:
    return runs / f"{method}-seed{seed}"


def _run_one(method: str, seed: int, runs: Path, budget: list[str]) -> None:

    from fedtosc.centralized import train_centralized
    from fedtosc.run_dir import make_run_dir
    from fedtosc.config import load_config
    from fedtosc.experiment import resolve_device

    run_dir = _run_dir(runs, method, seed)
    if (run_dir / "results.json").is_file():
        print(f"skip {run_dir} (finished)")
        return
    config = load_config([*budget, f"method={method}", f"seed={seed}", f"output_dir={run_dir.resolve()}"])
    started = time.perf_counter()
    train_centralized(config, make_run_dir(config, Path.cwd()), resolve_device(config.device))
    print(f"{method} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)


def _aggregate(runs: Path, out: Path, budget: list[str]) -> None:
    """Mean +- std over seeds into `<out>.json`, `.md` and `.png`."""
    table: dict = {"budget": budget, "training": "centralized (fedtosc train)", "methods": {}}
    for method in METHODS:
        finished = [_run_dir(runs, method, s) for s in SEEDS if (_run_dir(runs, method, s) / "results.json").is_file()]
        if not finished:
            continue
        results = [read_results(d) for d in finished]
        entry = {
            "seeds": [int(d.name.rsplit("seed", 1)[1]) for d in finished],
            "teacher_accuracy": _stats([r["teacher"]["accuracy"] for r in results]),
            "wall_seconds": _stats([r["wall_seconds"] for r in results]),
            "student_params": results[0]["student"]["params"],
            "accuracy": {
                channel: {f"{snr:g}": _stats([r["accuracy_vs_snr"][channel][str(snr)] for r in results]) for snr in SNRS_DB}
                for channel in CHANNELS
            },
        }
        table["methods"][method] = entry
    write_json_atomic(out.with_suffix(".json"), table)
    out.with_suffix(".md").write_text(_markdown(table))
    _plot(table, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


def _stats(values: list[float]) -> dict:
    """Mean and sample std (None from a single seed: no spread to report)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}


def _percent(stats: dict) -> str:
    return f"{100 * stats['mean']:.1f}" + (f" ± {100 * stats['std']:.1f}" if stats["std"] is not None else "")


def _markdown(table: dict) -> str:
    header = "| method | channel | " + " | ".join(f"{s:g} dB" for s in SNRS_DB) + " | seeds |"
    lines = [header, "|" + "---|" * (len(SNRS_DB) + 3)]
    for method, entry in table["methods"].items():
        for channel in CHANNELS:
            cells = [_percent(c) for c in entry["accuracy"][channel].values()]
            lines.append(f"| {method} | {channel} | " + " | ".join(cells) + f" | {len(entry['seeds'])} |")
    if not table["methods"]:
        return "\n".join(lines) + "\n"
    teacher = next(iter(table["methods"].values()))["teacher_accuracy"]
    walls = ", ".join(f"{m} {e['wall_seconds']['mean']:.0f} s" for m, e in table["methods"].items())
    return "\n".join(lines) + (
        f"\n\nTest accuracy (%), mean ± sample std over seeds. Teacher (server CNN): {_percent(teacher)} %. "
        f"Training: {table['training']}. Mean wall time per run on a shared 2-core CPU: {walls}.\n"
        f"Budget: `{' '.join(table['budget'])}`.\n"
    )


def _plot(table: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, len(CHANNELS), figsize=(11, 4), sharey=True)
    for ax, channel in zip(axes, CHANNELS):
        for method, entry in table["methods"].items():
            curve = entry["accuracy"][channel]
            means = np.array([c["mean"] for c in curve.values()])
            stds = np.array([c["std"] or 0.0 for c in curve.values()])
            ax.errorbar(SNRS_DB, means, yerr=stds, marker="o", capsize=3, label=method)
        if table["methods"]:
            ax.axhline(next(iter(table["methods"].values()))["teacher_accuracy"]["mean"], color="gray", linestyle="--", label="teacher")
        ax.set_title(f"CIFAR-10, {channel}")
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
