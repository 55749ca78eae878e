"""Cache entries are made under a lock: a second process needing the same teacher or store waits
for the first and then finds it made, instead of making it again beside it (two knowledge builds
of one store share its `.partial` chunk folder, and the first to finish removes it)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

import fedtosc.experiment as experiment_module
import fedtosc.models.teachers as teachers_module
from fedtosc.cache_lock import entry_lock, lock_path
from fedtosc.cli import main


def _held_by_another(entry: Path) -> bool:
    """Whether someone holds `entry`'s lock: a non-blocking try from a handle of our own."""
    lock_path(entry).parent.mkdir(parents=True, exist_ok=True)
    with lock_path(entry).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_a_held_entry_lock_keeps_others_out_until_it_is_released(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "store.safetensors"
    with entry_lock(entry):
        assert _held_by_another(entry)
    assert not _held_by_another(entry)
    assert not entry.exists()  # the lock is a file of its own, beside the entry


def test_the_teacher_is_trained_and_the_store_built_under_their_entry_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_under_lock = []

    def checked(make, entry_of):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            made_under_lock.append(_held_by_another(entry_of(args, kwargs)))
            return make(*args, **kwargs)
        return wrapper

    teacher_dir, knowledge_dir = tmp_path / "teachers", tmp_path / "knowledge"
    monkeypatch.setattr(teachers_module, "_train_classifier", checked(
        teachers_module._train_classifier, lambda args, kwargs: teacher_dir / f"{args[0].teacher_id}.safetensors"))
    monkeypatch.setattr(experiment_module, "build_knowledge", checked(
        experiment_module.build_knowledge, lambda args, kwargs: args[4]))

    assert main(["knowledge", "build", "teacher.epochs=1", "teacher.width=4", f"teacher.cache_dir={teacher_dir}",
                 f"knowledge.cache_dir={knowledge_dir}", "device=cpu"]) == 0
    assert made_under_lock == [True, True]
    assert len(list(knowledge_dir.glob("*.safetensors"))) == 1
