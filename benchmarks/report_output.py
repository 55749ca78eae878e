"""Shared by the benchmark scripts: print the table, and write the JSON with the table beside it."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["emit"]


def emit(report: dict, table: str, json_path: Path | None) -> None:
    print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        json_path.with_suffix(".md").write_text(table + "\n")
