"""Specification of the knowledge store: a self-describing, validated, atomically written file."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from fedtosc import atomic_write
from fedtosc.digests import DIGESTS_KEY
from fedtosc.knowledge import store as store_module
from fedtosc.knowledge.codecs import build_codec
from fedtosc.knowledge.store import (
    KnowledgeStore,
    KnowledgeStoreError,
    StoreHeader,
    export_slice,
    import_slice,
    write_store,
)
from fedtosc.models.outputs import TeacherOutputs
from store_files import rewrite_store

_NUM_SAMPLES = 50
_NUM_CLASSES = 10
# Dataset indices need not be contiguous: a store may cover any subset of a dataset.
_INDICES = np.arange(_NUM_SAMPLES, dtype=np.int64) * 3 + 7
_WrittenStore = tuple[Path, dict[str, np.ndarray]]  # the store's path and the arrays written to it


def _encoded(codec_name: str, **params) -> tuple[StoreHeader, dict[str, np.ndarray], dict[str, np.ndarray]]:
    generator = torch.Generator().manual_seed(0)
    outputs = TeacherOutputs(
        logits=torch.randn(_NUM_SAMPLES, _NUM_CLASSES, generator=generator) * 3,
        embeddings=torch.randn(_NUM_SAMPLES, 12, generator=generator),
    )
    codec = build_codec(codec_name, **params)
    shared = codec.fit(outputs)
    samples = codec.encode(outputs, shared)
    header = StoreHeader(
        teacher_id="clip-vit-b32",
        dataset_fingerprint="sha256:abc",
        transform="resize224-center-crop",
        codec=codec_name,
        codec_params=codec.params(),
        num_samples=_NUM_SAMPLES,
        num_classes=_NUM_CLASSES,
        extra={"build_seconds": 1.5, "teacher_accuracy": 0.9},
    )
    return header, samples, shared


@pytest.fixture
def topk_store(tmp_path: Path) -> _WrittenStore:
    header, samples, shared = _encoded("topk", k=5)
    path = tmp_path / "knowledge.safetensors"
    write_store(path, header, samples, _INDICES, shared)
    return path, samples


def test_round_trip_slices_any_subset_in_the_requested_order(topk_store: _WrittenStore) -> None:
    path, samples = topk_store
    store = KnowledgeStore.open(path)
    positions = np.array([49, 0, 17, 3, 3, 48, 20])
    sliced = store.slice(_INDICES[positions])
    assert sorted(sliced) == sorted(samples)
    for name, rows in sliced.items():
        assert rows.dtype == samples[name].dtype
        np.testing.assert_array_equal(rows, samples[name][positions])
    assert store.header.extra == {"build_seconds": 1.5, "teacher_accuracy": 0.9}
    assert store.header.codec_params == {"k": 5, "temperature": 1.0, "num_classes": _NUM_CLASSES}


def test_slice_reads_rows_far_apart_and_empty_requests(tmp_path: Path) -> None:
    rows = np.arange(1000, dtype=np.int64)
    header = replace(_encoded("full", dtype="float32")[0], num_samples=1000)
    probs = np.ones((1000, _NUM_CLASSES), np.float32)
    probs[:, 0] = rows  # row i is recognizable by its first value
    write_store(tmp_path / "wide.safetensors", header, {"probs": probs}, rows, {})
    store = KnowledgeStore.open(tmp_path / "wide.safetensors")
    wanted = np.array([999, 1, 500, 2, 998])
    np.testing.assert_array_equal(store.slice(wanted)["probs"][:, 0], wanted)
    assert store.slice(np.array([], dtype=np.int64))["probs"].shape == (0, _NUM_CLASSES)
    assert store.decode(wanted).probs.shape == (5, _NUM_CLASSES)


def test_decode_matches_decoding_the_original_arrays(topk_store: _WrittenStore) -> None:
    path, samples = topk_store
    store = KnowledgeStore.open(path)
    positions = np.array([5, 1, 30])
    expected = store.codec().decode({name: rows[positions] for name, rows in samples.items()}, {})
    decoded = store.decode(_INDICES[positions])
    assert torch.equal(decoded.probs, expected.probs)
    assert torch.allclose(decoded.probs.sum(dim=1), torch.ones(3))


def test_pca_store_round_trips_its_shared_basis(tmp_path: Path) -> None:
    header, samples, shared = _encoded("pca_embedding", dim=4)
    write_store(tmp_path / "pca.safetensors", header, samples, _INDICES, shared)
    store = KnowledgeStore.open(tmp_path / "pca.safetensors")
    assert sorted(store.shared()) == ["pca_components", "pca_mean"]
    np.testing.assert_array_equal(store.shared()["pca_components"], shared["pca_components"])
    expected = store.codec().decode({"pca_coefficients": samples["pca_coefficients"][:2]}, shared)
    assert torch.equal(store.decode(_INDICES[:2]).embeddings, expected.embeddings)


def test_bytes_per_sample_of_top5_over_10_classes_is_15(topk_store: _WrittenStore) -> None:
    # 5 float16 probabilities (10 bytes) + 5 uint8 class indices (5 bytes); the index is not counted.
    assert KnowledgeStore.open(topk_store[0]).bytes_per_sample == 15.0


def test_slice_of_an_unknown_index_names_it(topk_store: _WrittenStore) -> None:
    store = KnowledgeStore.open(topk_store[0])
    with pytest.raises(KnowledgeStoreError, match=r"\[8, 100000\]"):
        store.slice(np.array([7, 8, 100000]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("teacher_id", "resnet50"), ("dataset_fingerprint", "sha256:other"), ("codec", "full"), ("transform", "none")],
)
def test_expect_mismatch_names_field_expected_and_found(
    topk_store: _WrittenStore, field: str, value: str
) -> None:
    with pytest.raises(KnowledgeStoreError, match=field) as raised:
        KnowledgeStore.open(topk_store[0], expect={field: value})
    assert repr(value) in str(raised.value) and str(topk_store[0]) in str(raised.value)


def test_expect_match_opens(topk_store: _WrittenStore) -> None:
    expect = {"teacher_id": "clip-vit-b32", "dataset_fingerprint": "sha256:abc", "codec": "topk", "num_classes": "10"}
    assert KnowledgeStore.open(topk_store[0], expect=expect).header.teacher_id == "clip-vit-b32"


def test_missing_file_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeStoreError, match="does not exist.*fedtosc knowledge build"):
        KnowledgeStore.open(tmp_path / "absent.safetensors")


def test_truncated_file_is_a_store_error(topk_store: _WrittenStore) -> None:
    path = topk_store[0]
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(KnowledgeStoreError, match="truncated or corrupted.*fedtosc knowledge build"):
        KnowledgeStore.open(path)


def test_garbage_bytes_are_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(os.urandom(64))
    with pytest.raises(KnowledgeStoreError, match=str(path)):
        KnowledgeStore.open(path)


def test_plain_safetensors_file_is_not_a_knowledge_store(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(KnowledgeStoreError, match="not a fedtosc knowledge store"):
        KnowledgeStore.open(path)


def test_a_flipped_byte_in_the_data_region_is_named(topk_store: _WrittenStore) -> None:
    path = topk_store[0]
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # the last tensor's bytes: safetensors itself would read it without complaint
    path.write_bytes(bytes(raw))
    with pytest.raises(KnowledgeStoreError, match=r"does not match its recorded sha256 digest.*Rebuild"):
        KnowledgeStore.open(path)


def test_a_store_without_digests_is_refused(topk_store: _WrittenStore) -> None:
    path = topk_store[0]
    rewrite_store(path, {DIGESTS_KEY: "not json"}, {})
    with pytest.raises(KnowledgeStoreError, match="records no tensor digests"):
        KnowledgeStore.open(path)


@pytest.mark.parametrize(
    ("metadata_changes", "tensor_changes", "message"),
    [
        ({"format_version": "3"}, {}, "format_version 3.*Upgrade fedtosc"),
        ({"format_version": "0"}, {}, "format_version 0"),
        ({"num_samples": "49"}, {}, "num_samples"),
        ({}, {"sample.topk_probs": np.zeros((49, 5), np.float16)}, "'sample.topk_probs'.*num_samples=50"),
        ({}, {"index": np.arange(50, dtype=np.int64)[::-1].copy()}, "sorted and unique"),
        ({"codec_params": "{not json"}, {}, "'codec_params' is invalid"),
        ({"codec": "zip"}, {}, r"knowledge.codec='zip' is not one of \['topk'"),
        ({}, {"stray": np.zeros(1, np.float32)}, "unexpected"),
    ],
)
def test_inconsistent_store_is_a_store_error_naming_the_cause(
    topk_store: _WrittenStore,
    metadata_changes: dict[str, str],
    tensor_changes: dict[str, np.ndarray],
    message: str,
) -> None:
    path = topk_store[0]
    rewrite_store(path, metadata_changes, tensor_changes)
    with pytest.raises(KnowledgeStoreError, match=message):
        KnowledgeStore.open(path)


def test_missing_metadata_field_is_named(topk_store: _WrittenStore) -> None:
    path = topk_store[0]
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        metadata = json.loads(file.read(header_length))["__metadata__"]
    del metadata["teacher_id"]
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(KnowledgeStoreError, match="'teacher_id' is missing"):
        KnowledgeStore.open(path)


def test_failed_write_leaves_previous_file_untouched_and_no_temp_file(
    topk_store: _WrittenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = topk_store[0]
    before = path.read_bytes()
    header, samples, shared = _encoded("full")

    def _fail_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_write.os, "replace", _fail_replace)
    with pytest.raises(OSError, match="disk full"):
        write_store(path, header, samples, _INDICES, shared)
    assert path.read_bytes() == before
    assert sorted(path.parent.iterdir()) == [path]


def test_failed_serialization_leaves_no_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header, samples, shared = _encoded("topk", k=5)

    def _fail_midway(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(store_module, "save_file", _fail_midway)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_store(tmp_path / "knowledge.safetensors", header, samples, _INDICES, shared)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (_INDICES[::-1].copy(), "sorted and unique"),
        (_INDICES[:-1], "index has shape"),
        (_INDICES.astype(float), "integers"),
    ],
)
def test_write_rejects_inconsistent_inputs(tmp_path: Path, indices: np.ndarray, message: str) -> None:
    header, samples, shared = _encoded("topk", k=5)
    with pytest.raises(ValueError, match=message):
        write_store(tmp_path / "knowledge.safetensors", header, samples, indices, shared)
    assert list(tmp_path.iterdir()) == []


def test_export_import_slice_round_trip(topk_store: _WrittenStore) -> None:
    store = KnowledgeStore.open(topk_store[0])
    wanted = _INDICES[[40, 2, 11]]
    arrays, header = export_slice(store, wanted)
    assert all(isinstance(value, str) for value in header.values()) and header["num_samples"] == "3"
    indices, knowledge = import_slice(arrays, header)
    np.testing.assert_array_equal(indices, np.sort(wanted))
    assert torch.equal(knowledge.probs, store.decode(np.sort(wanted)).probs)


def test_import_slice_validates_the_payload(topk_store: _WrittenStore) -> None:
    arrays, header = export_slice(KnowledgeStore.open(topk_store[0]), _INDICES[:4])
    with pytest.raises(KnowledgeStoreError, match="knowledge payload.*num_samples=4.*resend"):
        import_slice(arrays | {"sample.topk_probs": arrays["sample.topk_probs"][:3]}, header)
    with pytest.raises(KnowledgeStoreError, match="not a fedtosc knowledge store"):
        import_slice(arrays, {key: value for key, value in header.items() if key != "format"})
