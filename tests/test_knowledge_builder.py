"""Specification of the knowledge builder and `fedtosc knowledge inspect`.

The builder is resumable: a build killed after some chunks and run again computes only the
missing chunks, and its store is identical to an uninterrupted build's. Chunks of another
teacher or data, and corrupted chunks, are never reused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedtosc.cli import main
from fedtosc.data.datasets import ImageDataset
from fedtosc.knowledge import builder as builder_module
from fedtosc.knowledge.builder import build_knowledge, partial_dir
from fedtosc.knowledge.codecs import build_codec
from fedtosc.knowledge.store import KnowledgeStore
from fedtosc.models.teachers import ServerCNNTeacher

_BATCH = 8
_CHUNK = 16  # two batches per chunk: 65 distilled samples -> 5 chunks, the last one short
_CPU = torch.device("cpu")


class _CountingTeacher(ServerCNNTeacher):
    """A small deterministic teacher that counts the images it has seen."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__(in_channels=1, num_classes=4, width=4)
        self.teacher_id = f"counting-{seed}"
        self.images_seen = 0
        self.eval()

    def forward(self, images: torch.Tensor):  # noqa: ANN201
        self.images_seen += len(images)
        return super().forward(images)


@pytest.fixture
def data() -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (90, 1, 8, 8), generator=generator, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(90) % 4, ("a", "b", "c", "d"))


# Dataset indices need not be contiguous: 0, 9, 18, 20..80, 81 (65 samples).
_INDICES = np.unique(np.r_[np.arange(0, 90, 9), np.arange(20, 81)])
_NUM = len(_INDICES)


def _build(teacher: _CountingTeacher, data: ImageDataset, path: Path, codec: str = "topk", params: dict | None = None):  # noqa: ANN202
    return build_knowledge(
        teacher,
        data,
        _INDICES,
        build_codec(codec, **({"k": 2, "temperature": 2.0} if params is None else params)),
        path,
        dataset_fingerprint=data.fingerprint(),
        transform="uint8/255",
        batch_size=_BATCH,
        device=_CPU,
        chunk_size=_CHUNK,
    )


def _same_store(first: Path, second: Path) -> None:
    a, b = KnowledgeStore.open(first), KnowledgeStore.open(second)
    for field in ("teacher_id", "dataset_fingerprint", "transform", "codec", "codec_params", "num_samples"):
        assert getattr(a.header, field) == getattr(b.header, field), field
    assert a.header.extra["fidelity"] == b.header.extra["fidelity"]
    arrays_a, arrays_b = load_file(str(first)), load_file(str(second))
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


class _Killed(RuntimeError):
    pass


def _build_killed_after(
    monkeypatch: pytest.MonkeyPatch, chunks: int, teacher: "_CountingTeacher", data: ImageDataset, path: Path
) -> None:
    """Start a build that dies right after writing `chunks` chunk files, as a kill would."""
    real_save = builder_module._save_chunk
    saved = []

    def save_then_maybe_die(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == chunks:
            raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(builder_module, "_save_chunk", save_then_maybe_die)
        with pytest.raises(_Killed):
            _build(teacher, data, path)


def test_resumed_build_equals_uninterrupted_build(
    tmp_path: Path, data: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(_CountingTeacher(), data, tmp_path / "uninterrupted.safetensors")
    resumed_path = tmp_path / "resumed.safetensors"
    _build_killed_after(monkeypatch, 2, _CountingTeacher(), data, resumed_path)
    assert not resumed_path.exists()
    assert len(list(partial_dir(resumed_path).glob("chunk-*.safetensors"))) == 2

    teacher = _CountingTeacher()
    _build(teacher, data, resumed_path)
    assert teacher.images_seen == _NUM - 2 * _CHUNK  # only the missing chunks ran
    assert not partial_dir(resumed_path).exists()
    _same_store(tmp_path / "uninterrupted.safetensors", resumed_path)


def test_partial_build_of_another_teacher_is_discarded(
    tmp_path: Path, data: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(_CountingTeacher(seed=0), data, tmp_path / "reference.safetensors")
    path = tmp_path / "store.safetensors"
    _build_killed_after(monkeypatch, 3, _CountingTeacher(seed=1), data, path)  # another teacher's outputs

    teacher = _CountingTeacher(seed=0)
    store = _build(teacher, data, path)
    assert teacher.images_seen == _NUM
    assert store.header.teacher_id == "counting-0"
    _same_store(tmp_path / "reference.safetensors", path)


def test_corrupted_chunk_is_recomputed(tmp_path: Path, data: ImageDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    _build(_CountingTeacher(), data, tmp_path / "reference.safetensors")
    path = tmp_path / "store.safetensors"
    _build_killed_after(monkeypatch, 2, _CountingTeacher(), data, path)
    first_chunk = sorted(partial_dir(path).glob("chunk-*.safetensors"))[0]
    first_chunk.write_bytes(first_chunk.read_bytes()[:40])  # truncated, as by a full disk

    teacher = _CountingTeacher()
    _build(teacher, data, path)
    assert teacher.images_seen == _NUM - _CHUNK
    _same_store(tmp_path / "reference.safetensors", path)


@pytest.mark.parametrize(
    ("codec", "params", "metrics"),
    [
        ("topk", {"k": 2, "temperature": 2.0}, {"kl_to_full", "argmax_agreement"}),
        ("full", {"temperature": 2.0}, {"kl_to_full", "argmax_agreement"}),
        ("int8_embedding", {}, {"embedding_relative_error", "kl_to_full", "argmax_agreement"}),
        ("pca_embedding", {"dim": 16}, {"embedding_relative_error", "kl_to_full", "argmax_agreement"}),
    ],
)
def test_build_records_codec_fidelity_in_the_header(
    tmp_path: Path, data: ImageDataset, codec: str, params: dict, metrics: set
) -> None:
    store = _build(_CountingTeacher(), data, tmp_path / "store.safetensors", codec, params)
    fidelity = store.header.extra["fidelity"]
    assert set(fidelity) == metrics
    # Soft-label codecs keep the argmax; for embedding codecs the teacher's head is applied to them.
    assert fidelity["argmax_agreement"] >= (1.0 if codec in ("topk", "full") else 0.9)
    assert 0 <= fidelity["kl_to_full"] < 0.05
    if "embedding_relative_error" in fidelity:
        assert 0 <= fidelity["embedding_relative_error"] < 0.1


def test_chunk_size_must_align_with_batches(tmp_path: Path, data: ImageDataset) -> None:
    with pytest.raises(ValueError, match="multiple of batch_size"):
        build_knowledge(
            _CountingTeacher(), data, np.arange(10), build_codec("full"), tmp_path / "s.safetensors",
            dataset_fingerprint="x", transform="uint8/255", batch_size=8, device=_CPU, chunk_size=12,
        )


def test_knowledge_inspect_prints_what_the_store_is(
    tmp_path: Path, data: ImageDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _build(_CountingTeacher(), data, tmp_path / "store.safetensors")
    assert main(["knowledge", "inspect", str(store.path)]) == 0
    printed = capsys.readouterr().out
    for expected in (
        "counting-0",
        data.fingerprint(),
        "topk (k=2, num_classes=4, temperature=2.0)",
        f"{_NUM} x 4 classes",
        f"bytes per sample              {store.bytes_per_sample:.1f}",
        "argmax_agreement 1",
        "kl_to_full",
    ):
        assert expected in printed, expected


def test_knowledge_inspect_rejects_a_corrupted_store(
    tmp_path: Path, data: ImageDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _build(_CountingTeacher(), data, tmp_path / "store.safetensors").path
    path.write_bytes(path.read_bytes()[:100])
    assert main(["knowledge", "inspect", str(path)]) == 1
    assert "truncated or corrupted" in capsys.readouterr().err


def _tiny_build(tmp_path: Path) -> list[str]:
    """`fedtosc knowledge build` overrides for a tiny teacher (one epoch, width 4) cached under tmp_path."""
    return [
        "teacher.epochs=1",
        "teacher.width=4",
        f"teacher.cache_dir={tmp_path / 'teachers'}",
        f"knowledge.cache_dir={tmp_path / 'knowledge'}",
        "device=cpu",
    ]


@pytest.mark.slow
def test_knowledge_build_command_builds_once_then_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = _tiny_build(tmp_path)
    assert main(["knowledge", "build", *overrides]) == 0
    first = capsys.readouterr().out
    stores = list((tmp_path / "knowledge").glob("*.safetensors"))
    assert len(stores) == 1 and str(stores[0]) in first
    assert "fidelity vs full soft labels  argmax_agreement 1" in first
    modified = stores[0].stat().st_mtime_ns
    assert main(["knowledge", "build", *overrides]) == 0
    assert stores[0].stat().st_mtime_ns == modified  # cached: not rebuilt
    assert not list((tmp_path / "knowledge").glob("*.partial"))


def test_a_corrupt_cached_store_is_rebuilt_with_a_warning_naming_the_file_and_the_flipped_tensor(tmp_path: Path) -> None:
    """A cache entry derives from the teacher and the data alone: rebuilding it is the fix, so the
    run goes on, but never silently. The same path serves `fedtosc run`, `train` and the ServerApp
    (`fedtosc.experiment.ensure_knowledge`)."""
    from fedtosc.experiment import KnowledgeCacheRebuilt

    overrides = _tiny_build(tmp_path)
    assert main(["knowledge", "build", *overrides]) == 0
    (path,) = (tmp_path / "knowledge").glob("*.safetensors")
    built = KnowledgeStore.open(path)
    expected = built.slice(built.index)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # the data region's last byte: safetensors alone would read it as another value
    path.write_bytes(bytes(raw))

    with pytest.warns(KnowledgeCacheRebuilt, match=rf"{re.escape(str(path))}: tensor '.*' does not match its recorded sha256"):
        assert main(["knowledge", "build", *overrides]) == 0

    rebuilt = KnowledgeStore.open(path)  # its digests match again
    assert expected.keys() == rebuilt.slice(rebuilt.index).keys()
    assert all(np.array_equal(expected[name], rebuilt.slice(rebuilt.index)[name]) for name in expected)
    assert not list((tmp_path / "knowledge").glob("*.partial"))
