"""Nothing lost, nothing let in: atomic results, fuzzed knowledge-store and teacher-cache readers, no pickle loading."""

import errno
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtosc.config import TeacherConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.knowledge.store import KnowledgeStore, KnowledgeStoreError, StoreHeader, write_store
from fedtosc.models.teachers import TeacherCacheRebuilt, load_or_train_server_teacher
from fedtosc.results import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_a_full_disk_never_leaves_a_half_written_results_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"accuracy": 0.5})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fedtosc.results.json.dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"accuracy": 0.9})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def _mutate(original: bytes, data: st.DataObject) -> bytes:
    """Up to 8 bytes replaced, then as often as not cut short: corrupt, tampered or truncated."""
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    return bytes(mutated[:cut]) if data.draw(st.booleans()) else bytes(mutated)


def _valid_store_bytes(tmp_path: Path) -> bytes:
    from fedtosc.knowledge.codecs import build_codec
    from fedtosc.models.outputs import TeacherOutputs

    codec = build_codec("topk", k=3, temperature=2.0)
    outputs = TeacherOutputs(logits=torch.randn(6, 10))
    shared = codec.fit(outputs)
    header = StoreHeader(
        teacher_id="t", dataset_fingerprint="d", transform="uint8/255", codec="topk",
        codec_params=codec.params(), num_samples=6, num_classes=10,
    )
    path = tmp_path / "valid.safetensors"
    write_store(path, header, codec.encode(outputs, shared), np.arange(6), shared)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_store_files_are_rejected_cleanly_or_read_consistently(tmp_path, data):
    original = _valid_store_bytes(tmp_path)
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(_mutate(original, data))
    try:
        store = KnowledgeStore.open(path)
        knowledge = store.decode(np.arange(6))
    except KnowledgeStoreError:
        return  # the only acceptable failure: a named, explained store error
    # Every tensor's digest is checked on open: whatever mutation survived left the data unchanged.
    reference = tmp_path / "reference.safetensors"
    reference.write_bytes(original)
    assert torch.equal(knowledge.probs, KnowledgeStore.open(reference).decode(np.arange(6)).probs)


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> tuple[TeacherConfig, ImageDataset, bytes, dict[str, torch.Tensor]]:
    """A tiny server teacher's config and data, its cache entry's bytes and its weights."""
    cache_dir = tmp_path_factory.mktemp("teacher_cache")
    config = TeacherConfig(width=2, epochs=1, batch_size=8, cache_dir=str(cache_dir))
    generator = torch.Generator().manual_seed(0)
    labelled = ImageDataset(torch.randint(0, 256, (6, 1, 8, 8), generator=generator, dtype=torch.uint8), torch.arange(6) % 2, ("a", "b"))
    teacher = load_or_train_server_teacher(config, labelled, seed=0, device=torch.device("cpu"))
    (entry,) = cache_dir.glob("*.safetensors")
    return config, labelled, entry.read_bytes(), teacher.state_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_teacher_cache_entries_are_retrained_with_a_warning_or_read_unchanged(teacher_cache, monkeypatch, data):
    config, labelled, original, weights = teacher_cache
    (path,) = Path(config.cache_dir).glob("*.safetensors")
    path.write_bytes(_mutate(original, data))
    trainings = []

    def train(teacher, *args):  # a stand-in with the same outcome: the real one takes a second
        trainings.append(teacher.teacher_id)
        teacher.load_state_dict(weights)

    monkeypatch.setattr("fedtosc.models.teachers._train_classifier", train)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        teacher = load_or_train_server_teacher(config, labelled, seed=0, device=torch.device("cpu"))
    rebuilt = [str(warning.message) for warning in caught if warning.category is TeacherCacheRebuilt]
    # Never other weights: a mutation either left the tensors as they were or cost a retraining, and
    # a retraining is never silent.
    assert all(torch.equal(tensor, weights[name]) for name, tensor in teacher.state_dict().items())
    assert len(rebuilt) == len(trainings) <= 1
    if rebuilt:
        assert rebuilt[0].startswith(f"retraining the cached server teacher {path}: ")
        assert path.read_bytes() == original  # rewritten whole


def test_no_code_loads_pickles():
    offenders = []
    for path in list((ROOT / "fedtosc").rglob("*.py")) + list((ROOT / "server").rglob("*.py")) + list((ROOT / "clients").rglob("*.py")):
        text = path.read_text()
        if re.search(r"\bimport pickle\b|pickle\.load|allow_pickle=True", text):
            offenders.append(str(path))
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path}: {call}")
    assert offenders == []
