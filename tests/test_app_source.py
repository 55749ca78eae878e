"""`flwr run` is pointed at a staged copy of the app's files: the bundle it makes is the project's."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from fedtosc.app_source import app_files, stage_app_source

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Flower's bundler builds its patterns with a pathspec factory that pathspec now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


def _bundle(folder: Path) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(folder)))
    return {name: archive.read(name) for name in archive.namelist()}


def test_the_staged_folder_bundles_to_the_projects_own_app_bundle(tmp_path: Path) -> None:
    staged = stage_app_source(PROJECT_ROOT, tmp_path)

    assert _bundle(staged) == _bundle(PROJECT_ROOT)  # every file, byte for byte, and its content list
    assert "clients/client_app.py" in app_files(PROJECT_ROOT)
    assert not any(name.startswith((".venv/", "tests/", "results/")) for name in app_files(PROJECT_ROOT))


def test_staging_again_drops_what_the_project_no_longer_has(tmp_path: Path) -> None:
    staged = stage_app_source(PROJECT_ROOT, tmp_path)
    (staged / "fedtosc" / "stale_module.py").write_text("raise ImportError\n")

    assert stage_app_source(PROJECT_ROOT, tmp_path) == staged

    assert not (staged / "fedtosc" / "stale_module.py").exists()
