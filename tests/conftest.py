"""Test-wide isolation (caches in a per-session temp dir, never the user's ~/.cache), what the
session's Flower runs share, and the order pytest-xdist hands tests out."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# One intra-op thread per process, set before torch loads here and inherited by every process a test
# starts (runs, SuperNodes, ClientApps; Ray's workers get 1 already). The suite's parallelism is its
# xdist workers and their runs' processes, several per core: on top of that, torch's OpenMP threads
# spin-wait for one another and burn CPU (on the loaded two-core machine, the session teacher's
# training took 2.5 CPU seconds on one thread and more than 26 on two).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_home_cache(tmp_path_factory, monkeypatch):
    # Defaults in conf/ point at ~/.cache/fedtosc; a test must not read or write a user's cache.
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))


def session_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder all of this session's tests see, pytest-xdist workers included (each worker's base
    temp dir is a child of the session's)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / name
    root.mkdir(exist_ok=True)
    return root


@contextmanager
def made_once(root: Path) -> Iterator[bool]:
    """Yields whether `root`'s contents still have to be made, under a lock across workers: the
    first test to get here makes them, the others wait for it and then reuse them."""
    with (root / "made.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = not (root / "made").is_file()
        yield missing
        if missing:
            (root / "made").touch()


def prepared_caches(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str],
                    prepare: Callable[[list[str]], None]) -> list[str]:
    """Overrides pointing at a session-wide teacher and knowledge cache that `prepare` fills once."""
    root = session_dir(tmp_path_factory, name)
    cached = [*overrides, f"teacher.cache_dir={root / 'teachers'}", f"knowledge.cache_dir={root / 'knowledge'}"]
    with made_once(root) as missing:
        if missing:
            prepare(cached)
    return cached


def _prepare_in_process(overrides: list[str]) -> None:
    from fedtosc.config import load_config
    from fedtosc.experiment import prepare_experiment

    prepare_experiment(load_config(overrides))


# The session's one teacher: width 32 and 8 epochs reach about 0.95 test accuracy on digits (the
# default, width 64 and 30 epochs, costs some 25 times the CPU; 2 epochs of it stay at chance).
DIGITS_TEACHER = ["teacher.width=32", "teacher.epochs=8"]
# A simulation of a few digits clients trains them one at a time in one Ray actor: each actor
# imports torch, Flower and Sionna (some 6 CPU-seconds), and a second one buys nothing at this
# size on a suite that keeps both cores busy. Tests that need clients trained side by side (replies
# arriving in any order) set ray.num_cpus=null.
ONE_ACTOR = ["ray.num_cpus=1"]


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The digits teacher and its knowledge store, trained once per session for every run, test
    and deployment that needs no other teacher: the server's share and the distillation set do not
    depend on the number of clients, so runs of 2, 3 or 4 clients all find both cached. Tests on
    other workers that need another store of this teacher build it here once: the first takes the
    store's entry lock (fedtosc.cache_lock), the others wait for it and open what it built.
    Simulated runs with these overrides use one Ray actor (ONE_ACTOR)."""
    return [*prepared_caches(tmp_path_factory, "digits-teacher", DIGITS_TEACHER, _prepare_in_process), *ONE_ACTOR]


# The eight longest tests (`make test --durations`), in the order they start. pytest-xdist gives each of
# the Makefile's four workers its first two tests at once: the first four here start together, longest
# first, and the next four queue behind them worker by worker, shortest first, so the longest test has
# the shortest behind it. Only the order tests start in depends on this list.
_LONGEST_TESTS = (
    "test_same_seed_same_weights_and_a_resumed_run_equals_an_uninterrupted_one_bit_for_bit",
    "test_deploy_run_resumes_from_its_checkpoint_after_the_superlink_restarts",
    "test_run_finishes_with_the_others_when_a_supernode_dies_and_another_hangs",
    "test_two_supernodes_over_tls_run_two_rounds_and_leave_no_process",
    "test_crashing_and_poisoned_clients_are_rejected_and_the_round_completes",
    "test_hundred_clients_one_round_finish_and_memory_does_not_grow_with_clients",
    "test_the_loopback_walkthrough_runs_and_a_box_restarted_mid_run_reuses_its_cached_transfer_set",
    "test_ctrl_c_mid_run_stops_everything_and_resume_finishes_it",
)


def _start_rank(item: pytest.Item) -> tuple[bool, int]:
    return item.get_closest_marker("slow") is None, (
        _LONGEST_TESTS.index(item.name) if item.name in _LONGEST_TESTS else len(_LONGEST_TESTS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, the longest in the order above: pytest-xdist hands tests out in this order (the
    Makefile turns off its reordering by scope size), so the longest runs start at once on separate
    workers and the quick tests fill the gaps, instead of a long run starting last and running alone."""
    items.sort(key=_start_rank)
