"""Shared by the benchmark scripts: print the table, write the JSON with the table beside it, and
record the command line that produced them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["command_line", "emit"]


def command_line() -> str:
    """This script's command as run (the interpreter's name, then the arguments), for the report."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def emit(report: dict, table: str, json_path: Path | None) -> None:
    print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        json_path.with_suffix(".md").write_text(table + "\n")
