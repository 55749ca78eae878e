"""The folder `flwr run` bundles the app from: only the files the app bundle (FAB) carries.

`flwr run <folder>` (Flower 1.42) walks and resolves every file under the folder before it applies
pyproject's `fab-include`, and a project folder holds its virtual environment: on this project that
walk took 5 s of CPU for every run, simulated or deployed. A folder with just `pyproject.toml`, its
`.gitignore` and the files `fab-include` names gives Flower the same files to bundle, so the same
bundle, without the walk.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

__all__ = ["app_files", "stage_app_source"]

_ALWAYS = ("pyproject.toml", ".gitignore")


def app_files(project_root: Path) -> list[str]:
    """Paths, relative to `project_root`, of pyproject.toml, .gitignore and what `fab-include` names."""
    project = tomllib.loads((project_root / "pyproject.toml").read_text())
    patterns = project["tool"]["flwr"]["app"]["fab-include"]
    found = {name for name in _ALWAYS if (project_root / name).is_file()}
    for pattern in patterns:
        found.update(path.relative_to(project_root).as_posix() for path in project_root.glob(pattern) if path.is_file())
    return sorted(found)


def stage_app_source(project_root: Path, run_dir: Path) -> Path:
    """Copy `app_files(project_root)` into `<run_dir>/.flwr/app-source` (emptied first); returns that
    folder, for `flwr run`."""
    into = run_dir / ".flwr" / "app-source"
    shutil.rmtree(into, ignore_errors=True)
    for name in app_files(project_root):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project_root / name, target)
    return into
