"""Test-wide isolation: caches go to a per-session temp dir, never the user's ~/.cache."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_home_cache(tmp_path_factory, monkeypatch):
    # Defaults in conf/ point at ~/.cache/fedtosc; a test must not read or write a user's cache.
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))
