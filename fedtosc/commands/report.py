"""`fedtosc report RUN_DIR...`: one self-contained HTML page for runs and studies (fedtosc.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write an HTML report for run or study directories")
    parser.add_argument("directories", nargs="+", type=Path, help="run directories (fedtosc run/train) or study directories")
    parser.add_argument(
        "-o", "--output", type=Path, default=None,
        help="HTML file to write (default: DIR/report.html for one directory, ./report.html for several)",
    )
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from fedtosc.report import render_report

    directories = [d.expanduser().resolve() for d in args.directories]
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise SystemExit(f"fedtosc report: not a directory: {', '.join(missing)}")
    output = args.output or (directories[0] / "report.html" if len(directories) == 1 else Path.cwd() / "report.html")
    try:
        print(f"report: {render_report(directories, output)}")
    except FileNotFoundError as error:
        raise SystemExit(f"fedtosc report: {error}") from error
    return 0
