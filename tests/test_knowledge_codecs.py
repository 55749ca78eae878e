"""Specification of the knowledge codecs: each decodes within the error its docstring states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedtosc.knowledge.codecs import Knowledge, build_codec, fidelity
from fedtosc.registries import CODECS
from fedtosc.models.outputs import TeacherOutputs

_FEW = settings(deadline=None, max_examples=25)


def _logits(num_rows: int, num_classes: int, seed: int, spread: float = 3.0) -> torch.Tensor:
    return torch.randn(num_rows, num_classes, generator=torch.Generator().manual_seed(seed)) * spread


def _round_trip(name: str, outputs: TeacherOutputs, **params) -> tuple[Knowledge, dict[str, np.ndarray]]:
    codec = build_codec(name, **params)
    shared = codec.fit(outputs)
    encoded = codec.encode(outputs, shared)
    return codec.decode(encoded, shared), encoded


@st.composite
def _logit_batches(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    num_classes = draw(st.sampled_from([2, 3, 10, 100, 256, 257, 1000]))
    num_rows = draw(st.integers(1, 8))
    values = draw(arrays(np.float32, (num_rows, num_classes), elements=st.floats(-20, 20, width=32)))
    k = draw(st.integers(1, min(num_classes, 20)))
    return torch.from_numpy(values), k


@_FEW
@given(_logit_batches(), st.sampled_from([0.5, 1.0, 4.0]))
def test_topk_decodes_within_stated_l1_bound_with_unit_rows(
    batch: tuple[torch.Tensor, int], temperature: float
) -> None:
    logits, k = batch
    decoded, _ = _round_trip("topk", TeacherOutputs(logits), k=k, temperature=temperature)
    true_probs = torch.softmax(logits.double() / temperature, dim=1)
    tail_mass = 1.0 - torch.topk(true_probs, k, dim=1).values.sum(dim=1)
    l1_error = (decoded.probs.double() - true_probs).abs().sum(dim=1)
    assert decoded.probs.dtype == torch.float32 and decoded.embeddings is None
    assert torch.allclose(decoded.probs.sum(dim=1), torch.ones(len(logits)), atol=1e-5)
    assert bool((l1_error <= 2 * tail_mass + 2**-8).all())


@_FEW
@given(_logit_batches())
def test_topk_keeps_the_teacher_argmax(batch: tuple[torch.Tensor, int]) -> None:
    logits, k = batch
    decoded, _ = _round_trip("topk", TeacherOutputs(logits), k=k)
    true_probs = torch.softmax(logits.double(), dim=1)
    # With ties (equal logits, or values equal after fp16) several classes are the argmax, so
    # the spec is: some class is the argmax of both the teacher and the decoded row.
    teacher_argmax = true_probs == true_probs.max(dim=1, keepdim=True).values
    decoded_argmax = decoded.probs == decoded.probs.max(dim=1, keepdim=True).values
    assert bool((teacher_argmax & decoded_argmax).any(dim=1).all())


@pytest.mark.parametrize(
    ("num_classes", "index_dtype"), [(10, np.uint8), (256, np.uint8), (257, np.uint16), (1000, np.uint16)]
)
def test_topk_index_dtype_is_uint8_up_to_256_classes_else_uint16(num_classes: int, index_dtype: type) -> None:
    _, encoded = _round_trip("topk", TeacherOutputs(_logits(4, num_classes, seed=0)), k=5)
    assert encoded["topk_indices"].dtype == index_dtype
    assert encoded["topk_probs"].dtype == np.float16 and encoded["topk_probs"].shape == (4, 5)


def test_topk_params_include_num_classes_after_fit_and_rebuild_the_decoder() -> None:
    outputs = TeacherOutputs(_logits(6, 12, seed=1))
    codec = build_codec("topk", k=3, temperature=2.0)
    assert "num_classes" not in codec.params()
    shared = codec.fit(outputs)
    assert codec.params() == {"k": 3, "temperature": 2.0, "num_classes": 12}
    encoded = codec.encode(outputs, shared)
    rebuilt = build_codec("topk", **codec.params())
    assert torch.equal(rebuilt.decode(encoded, shared).probs, codec.decode(encoded, shared).probs)


def test_topk_with_k_equal_to_classes_matches_full_softmax() -> None:
    logits = _logits(5, 7, seed=2)
    decoded, _ = _round_trip("topk", TeacherOutputs(logits), k=7)
    assert torch.allclose(decoded.probs.double(), torch.softmax(logits.double(), dim=1), atol=1e-3)


@pytest.mark.parametrize("dtype, bound", [("float16", 2**-9), ("float32", 1e-5)])
def test_full_decodes_within_stated_l1_bound(dtype: str, bound: float) -> None:
    logits = _logits(64, 100, seed=3, spread=5.0)
    decoded, encoded = _round_trip("full", TeacherOutputs(logits), temperature=2.0, dtype=dtype)
    true_probs = torch.softmax(logits.double() / 2.0, dim=1)
    assert encoded["probs"].dtype == np.dtype(dtype)
    assert float((decoded.probs.double() - true_probs).abs().sum(dim=1).max()) <= bound
    assert torch.allclose(decoded.probs.sum(dim=1), torch.ones(64), atol=1e-5)


@_FEW
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=st.floats(-1e3, 1e3, width=32)))
def test_int8_embedding_error_per_element_is_at_most_half_the_row_scale(embeddings: np.ndarray) -> None:
    outputs = TeacherOutputs(torch.zeros(len(embeddings), 2), torch.from_numpy(embeddings))
    decoded, encoded = _round_trip("int8_embedding", outputs)
    scale = encoded["embedding_scale"].astype(np.float64)
    assert encoded["embedding_int8"].dtype == np.int8 and encoded["embedding_scale"].dtype == np.float16
    assert decoded.probs is None
    # float32 decode arithmetic adds at most a few ulps on top of the quantization error.
    error = np.abs(decoded.embeddings.numpy().astype(np.float64) - embeddings)
    assert (error <= scale[:, None] / 2 * (1 + 1e-6) + 1e-30).all()
    assert (scale >= np.abs(embeddings).max(axis=1) / 127).all()


def test_int8_embedding_rejects_missing_embeddings() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        build_codec("int8_embedding").fit(TeacherOutputs(_logits(2, 3, seed=0)))


@_FEW
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_pca_with_dim_at_least_rank_reconstructs_up_to_fp16(rank: int, seed: int) -> None:
    generator = np.random.default_rng(seed)
    width, num_rows = 16, 40
    low_rank = generator.normal(size=(num_rows, rank)) @ generator.normal(size=(rank, width))
    embeddings = low_rank + generator.normal(size=width)
    outputs = TeacherOutputs(torch.zeros(num_rows, 2), torch.from_numpy(embeddings.astype(np.float32)))
    codec = build_codec("pca_embedding", dim=8)
    shared = codec.fit(outputs)
    encoded = codec.encode(outputs, shared)
    decoded = codec.decode(encoded, shared)
    coefficient_norm = np.linalg.norm(encoded["pca_coefficients"].astype(np.float64), axis=1)
    error = np.linalg.norm(decoded.embeddings.numpy() - outputs.embeddings.numpy(), axis=1)
    assert shared["pca_components"].shape == (8, width) and shared["pca_mean"].dtype == np.float32
    assert encoded["pca_coefficients"].dtype == np.float16 and decoded.probs is None
    assert (error <= 2**-11 * coefficient_norm + 1e-4 * (1 + np.linalg.norm(embeddings, axis=1))).all()


def test_pca_error_is_bounded_by_the_truncation_residual() -> None:
    generator = np.random.default_rng(0)
    embeddings = generator.normal(size=(200, 24)).astype(np.float32)
    outputs = TeacherOutputs(torch.zeros(200, 2), torch.from_numpy(embeddings))
    codec = build_codec("pca_embedding", dim=4)
    shared = codec.fit(outputs)
    encoded = codec.encode(outputs, shared)
    decoded = codec.decode(encoded, shared)
    centered = embeddings - shared["pca_mean"]
    components = shared["pca_components"]
    residual = np.linalg.norm(centered - centered @ components.T @ components, axis=1)
    coefficient_norm = np.linalg.norm(encoded["pca_coefficients"].astype(np.float64), axis=1)
    error = np.linalg.norm(decoded.embeddings.numpy() - embeddings, axis=1)
    assert (error <= residual + 2**-11 * coefficient_norm + 1e-4).all()


def test_fidelity_of_full_against_itself_is_perfect() -> None:
    decoded, _ = _round_trip("full", TeacherOutputs(_logits(32, 10, seed=4)), dtype="float32")
    scores = fidelity(decoded, decoded)
    assert scores["kl_to_full"] == pytest.approx(0.0, abs=1e-12)
    assert scores["argmax_agreement"] == 1.0


def test_fidelity_kl_shrinks_as_topk_keeps_more_classes() -> None:
    outputs = TeacherOutputs(_logits(128, 100, seed=5, spread=2.0))
    reference, _ = _round_trip("full", outputs, dtype="float32")
    kl_by_k = [fidelity(reference, _round_trip("topk", outputs, k=k)[0])["kl_to_full"] for k in (1, 5, 20, 100)]
    assert kl_by_k == sorted(kl_by_k, reverse=True) and kl_by_k[0] > kl_by_k[-1]
    assert kl_by_k[-1] < 1e-5


def test_fidelity_reports_embedding_error_for_embedding_codecs() -> None:
    embeddings = torch.randn(16, 8, generator=torch.Generator().manual_seed(6))
    reference = Knowledge(probs=None, embeddings=embeddings)
    decoded, _ = _round_trip("int8_embedding", TeacherOutputs(torch.zeros(16, 2), embeddings))
    assert 0.0 < fidelity(reference, decoded)["embedding_relative_error"] < 0.01
    with pytest.raises(ValueError, match="neither"):
        fidelity(reference, Knowledge(probs=torch.ones(16, 2) / 2, embeddings=None))


def test_every_codec_states_an_error_bound_and_rebuilds_from_its_params() -> None:
    outputs = TeacherOutputs(_logits(8, 10, seed=7), torch.randn(8, 6, generator=torch.Generator().manual_seed(7)))
    defaults = {"pca_embedding": {"dim": 4}}
    for name in CODECS.names():
        codec_class = CODECS.get(name)
        codec = build_codec(name, **defaults.get(name, {}))
        codec.fit(outputs)
        assert isinstance(codec, codec_class) and codec.error_bound()
        assert build_codec(name, **codec.params()).params() == codec.params()


def test_build_codec_unknown_name_lists_known_codecs() -> None:
    with pytest.raises(ValueError, match=r"'zip' is not one of \['topk', 'full', 'int8_embedding', 'pca_embedding'\]"):
        build_codec("zip")


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("topk", {"k": 0}, "k"),
        ("topk", {"k": 5, "num_classes": 3}, "k"),
        ("topk", {"temperature": 0.0}, "temperature"),
        ("topk", {"kk": 3}, "kk"),
        ("full", {"dtype": "int8"}, "dtype"),
        ("pca_embedding", {"dim": 0}, "dim"),
    ],
)
def test_build_codec_bad_params_raise_value_error_naming_the_param(name: str, params: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build_codec(name, **params)


def test_topk_with_k_above_class_count_fails_at_fit_naming_k() -> None:
    with pytest.raises(ValueError, match="k must be <="):
        build_codec("topk", k=11).fit(TeacherOutputs(_logits(2, 10, seed=0)))


def test_pca_dim_above_embedding_width_fails_at_fit_naming_dim() -> None:
    outputs = TeacherOutputs(torch.zeros(4, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="dim must be <="):
        build_codec("pca_embedding", dim=4).fit(outputs)


def test_topk_decode_rejects_corrupt_arrays() -> None:
    codec = build_codec("topk", k=2, num_classes=4)
    valid_probs = np.full((1, 2), 0.4, np.float16)
    valid_indices = np.array([[0, 1]], np.uint8)
    with pytest.raises(ValueError, match="num_classes"):
        codec.decode({"topk_probs": valid_probs, "topk_indices": np.array([[0, 9]], np.uint8)}, {})
    with pytest.raises(ValueError, match="non-negative"):
        codec.decode({"topk_probs": np.array([[np.nan, 0.1]], np.float16), "topk_indices": valid_indices}, {})
    with pytest.raises(ValueError, match="missing array 'topk_indices'"):
        codec.decode({"topk_probs": np.full((1, 2), 0.4, np.float16)}, {})
