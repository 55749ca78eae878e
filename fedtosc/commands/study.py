"""`fedtosc study <name> [options] [key=value ...]`: a grid of runs, one CSV, one figure.

The grid comes from conf/study/ (Hydra sweep syntax on the command line replaces an axis); the
cells live in <output>/cells/ and finished ones are not rerun (fedtosc.studies.sweep).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtosc.preflight import check_writable
from fedtosc.registries import STUDIES
from fedtosc.run_dir import project_root

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="run a study (a Hydra multirun grid of runs) and summarize it")
    studies = parser.add_subparsers(dest="study", required=True)
    for name in STUDIES.names():
        study = STUDIES.get(name)
        study_parser = studies.add_parser(name, help=study.summary, description=f"{study.summary}. Overrides: e.g. {study.example}")
        study_parser.add_argument("overrides", nargs="*", help="Hydra overrides; a comma list sweeps that key")
        study_parser.add_argument("--output", type=Path, default=None, help=f"study directory (default: studies/{name})")
        study_parser.add_argument(
            "--centralized", action="store_true", help="run each cell with `fedtosc train` instead of `fedtosc run`"
        )
        study_parser.add_argument(
            "--no-run", action="store_true",
            help="run no cell: summarize the grid's complete cells and list the missing ones (a grid finished in parts)",
        )
        for flag, options in study.options.items():
            study_parser.add_argument(flag, **options)
        study_parser.set_defaults(func=_study)


def _study(args: argparse.Namespace) -> int:
    from fedtosc import studies
    from fedtosc.results import write_json_atomic

    study_dir = (args.output or project_root() / "studies" / args.study).expanduser().resolve()
    check_writable(study_dir, "--output")
    print(f"study directory: {study_dir}")
    outcomes = studies.run_study(args.study, list(args.overrides), study_dir, centralized=args.centralized,
                                 run_missing=not args.no_run)
    finished = studies.load_cells([o.run_dir for o in outcomes if o.status in studies.FINISHED])
    study = STUDIES.get(args.study)
    stem = study.conf
    rows, claims = [], []
    if finished:
        options = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag in study.options}
        rows = study.summarize(finished, **options)
        claims = study.headline(rows)
        study.draw(rows, study_dir / f"{stem}.png")
        studies.write_csv(rows, study_dir / f"{stem}.csv")
        _print_rows(rows, study.printed)
        for claim in claims:
            print(f"claim: {claim['claim']}")
        print(f"summary: {study_dir / f'{stem}.csv'}, {study_dir / f'{stem}.png'}")
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
            "claims": claims,
            "rows": rows,
        },
    )
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ran", "skipped", "missing", "failed")}
    missing = f", {counts['missing']} missing (not run: --no-run)" if counts["missing"] else ""
    print(f"cells: {counts['ran']} ran, {counts['skipped']} already complete{missing}, {counts['failed']} failed")
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"  failed: {outcome.run_dir.name}: {outcome.message}")
    return 1 if counts["failed"] else 0


def _print_rows(rows: list[dict], columns: tuple[str, ...]) -> None:
    """The study's chosen columns, aligned; numbers to 3 decimals."""
    shown = [column for column in columns if any(column in row for row in rows)]
    table = [[_cell_text(row.get(column, "")) for column in shown] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in table)) for i, column in enumerate(shown)]
    print()
    for line in [shown, *table]:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)))


def _cell_text(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
