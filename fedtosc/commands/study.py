"""`fedtosc study data-efficiency|snr-sweep [options] [key=value ...]`: a grid of runs, one CSV, one figure.

The grid comes from conf/study/ (Hydra sweep syntax on the command line replaces an axis); the
cells live in <output>/cells/ and finished ones are not rerun (fedtosc.studies.sweep).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtosc.preflight import check_writable
from fedtosc.run_dir import project_root

__all__ = ["register"]

_EXAMPLES = {
    "data-efficiency": "e.g. dataset.label_fraction=0.05,1.0 method=full,labels_only seed=0,1 federation.rounds=3",
    "snr-sweep": "e.g. method=full,no_adaptive seed=0 'channel.eval_channels=[awgn,rician]'",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="run a study (a Hydra multirun grid of runs) and summarize it")
    studies = parser.add_subparsers(dest="study", required=True)
    efficiency = _add_study(studies, "data-efficiency", "accuracy vs label fraction per method and client SNR profile")
    efficiency.add_argument("--channel", default="awgn", help="eval channel the accuracy is read at (default: awgn)")
    efficiency.add_argument("--snr-db", type=float, default=10.0, help="eval SNR the accuracy is read at (default: 10)")
    _add_study(studies, "snr-sweep", "accuracy vs SNR per method and eval channel type")


def _add_study(studies: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    parser = studies.add_parser(name, help=summary, description=f"{summary}. Overrides: {_EXAMPLES[name]}")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; a comma list sweeps that key")
    parser.add_argument("--output", type=Path, default=None, help=f"study directory (default: studies/{name})")
    parser.add_argument("--centralized", action="store_true", help="run each cell with `fedtosc train` instead of `fedtosc run`")
    parser.set_defaults(func=_study)
    return parser


def _study(args: argparse.Namespace) -> int:
    from fedtosc import studies
    from fedtosc.results import write_json_atomic

    study_dir = (args.output or project_root() / "studies" / args.study).expanduser().resolve()
    check_writable(study_dir, "--output")
    print(f"study directory: {study_dir}")
    outcomes = studies.run_study(args.study, list(args.overrides), study_dir, centralized=args.centralized)
    write_json_atomic(
        study_dir / "study.json",
        {
            "study": args.study,
            "overrides": list(args.overrides),
            "centralized": args.centralized,
            "cells": [
                {"name": o.run_dir.name, "axes": o.axes, "status": o.status, "seconds": o.seconds, "message": o.message}
                for o in outcomes
            ],
        },
    )
    finished = studies.load_cells([o.run_dir for o in outcomes if o.status != "failed"])
    stem = studies.STUDIES[args.study]
    if finished:
        if args.study == "data-efficiency":
            rows = studies.data_efficiency_rows(finished, args.channel, args.snr_db)
            studies.plot_data_efficiency(rows, study_dir / f"{stem}.png")
        else:
            rows = studies.snr_sweep_rows(finished)
            studies.plot_snr_sweep(rows, study_dir / f"{stem}.png")
        studies.write_csv(rows, study_dir / f"{stem}.csv")
        _print_rows(rows)
        print(f"summary: {study_dir / f'{stem}.csv'}, {study_dir / f'{stem}.png'}")
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ran", "skipped", "failed")}
    print(f"cells: {counts['ran']} ran, {counts['skipped']} already complete, {counts['failed']} failed")
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"  failed: {outcome.run_dir.name}: {outcome.message}")
    return 1 if counts["failed"] else 0


def _print_rows(rows: list[dict]) -> None:
    print()
    for row in rows:
        where = f"label fraction {row['label_fraction']:g}" if "label_fraction" in row else f"{row['channel']:>8} {row['snr_db']:>5g} dB"
        print(f"{row['series']:<60} {where}: {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} (n={row['num_seeds']})")
