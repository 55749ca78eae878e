"""Knowledge codecs: compress a teacher's outputs once on the server, decode them on clients.

docs/architecture.md has the teacher run ONCE over the distillation set; a codec decides what of its
outputs is kept (top-k soft labels, quantized or PCA-projected embeddings) and at what
precision. `encode` gives per-sample arrays (first dim N, keyed by the store's dataset index),
`fit` gives shared arrays (e.g. a PCA basis); both are plain numpy so the store can write them.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from fedtosc.models.outputs import TeacherOutputs
from fedtosc.registries import CODECS

if TYPE_CHECKING:
    from fedtosc.config import KnowledgeConfig

__all__ = [
    "FullCodec",
    "Int8EmbeddingCodec",
    "Knowledge",
    "KnowledgeCodec",
    "PCAEmbeddingCodec",
    "TopKCodec",
    "build_codec",
    "fidelity",
    "teacher_head_arrays",
]

# Unit roundoff of float16 for normal numbers: fp16 keeps 11 significant bits.
_FP16_REL_ERROR = 2.0**-11
_FP16_MAX = float(np.finfo(np.float16).max)
# KL(p || q) is infinite where q == 0 < p; clamping q keeps the metric finite and comparable.
_KL_FLOOR = 1e-12


# Shared arrays an embedding store carries so a client can turn embeddings into soft labels with
# the teacher's own (affine) head: logits = embeddings @ weight.T + bias. Sent once per node.
HEAD_WEIGHT, HEAD_BIAS = "teacher_head_weight", "teacher_head_bias"


@dataclass(frozen=True)
class Knowledge:
    """What a student trains on, decoded.

    `probs`: [R, C] float32 soft labels at the codec's temperature, rows sum to 1 (None for
    embedding codecs). `embeddings`: [R, D] float32 (None for soft-label codecs).
    `view_params`: None when each sample has one view, the image as stored (R = N rows);
    with K > 1 augmented views (data/views.py) int16 [N, K, 5], and the R = N * K rows
    are sample-major: row i * K + v is the teacher's output on
    `apply_views(image_i, view_params[i, v])`.
    `head_weight` [C, D] / `head_bias` [C] float32: the teacher's classifier head, when an
    embedding store carries it.
    """

    probs: torch.Tensor | None
    embeddings: torch.Tensor | None
    view_params: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None

    def soft_labels(self, temperature: float) -> torch.Tensor | None:
        """[R, C] soft labels: the stored ones, or the teacher head's softmax(logits / T) on the
        decoded embeddings; None when there are neither."""
        if self.probs is not None:
            return self.probs
        if self.embeddings is None or self.head_weight is None or self.head_bias is None:
            return None
        logits = self.embeddings @ self.head_weight.T + self.head_bias
        return torch.softmax(logits / _check_temperature(temperature), dim=1)


def teacher_head_arrays(weight: torch.Tensor, bias: torch.Tensor) -> dict[str, np.ndarray]:
    """The shared arrays that carry a teacher head ([C, D] weight, [C] bias) in a store."""
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"a head is weight [C, D] and bias [C], got {tuple(weight.shape)} and {tuple(bias.shape)}")
    return {HEAD_WEIGHT: weight.detach().cpu().float().numpy(), HEAD_BIAS: bias.detach().cpu().float().numpy()}


def _teacher_head(shared: dict[str, np.ndarray], width: int) -> dict[str, torch.Tensor]:
    """The head fields of `Knowledge` from shared arrays (empty when the store has no head)."""
    if HEAD_WEIGHT not in shared:
        return {}
    weight, bias = _require(shared, HEAD_WEIGHT, 2), _require(shared, HEAD_BIAS, 1)
    if weight.shape[1] != width or bias.shape[0] != weight.shape[0]:
        raise ValueError(f"teacher head {weight.shape} / {bias.shape} does not fit embeddings of width {width}")
    return {"head_weight": torch.from_numpy(weight.astype(np.float32)), "head_bias": torch.from_numpy(bias.astype(np.float32))}


class KnowledgeCodec(ABC):
    """Compresses `TeacherOutputs` into numpy arrays and decodes them into `Knowledge`.

    Protocol: `fit` once over all outputs (returns shared arrays, may record facts such as the
    number of classes in `params()`), then `encode` any batch, then `decode` any subset of rows.
    `params()` is JSON-able and rebuilds an equivalent (fitted) codec via `build_codec`.
    """

    name: ClassVar[str]
    # Embedding codecs decode to embeddings; their stores also carry the teacher head (HEAD_WEIGHT).
    decodes_embeddings: ClassVar[bool] = False

    @classmethod
    def from_config(cls, knowledge: KnowledgeConfig) -> KnowledgeCodec:
        """This codec with the settings it reads from the knowledge config (none by default)."""
        return cls()

    @abstractmethod
    def params(self) -> dict[str, int | float | str]: ...

    @abstractmethod
    def fit(self, outputs: TeacherOutputs) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def encode(self, outputs: TeacherOutputs, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def decode(self, arrays: dict[str, np.ndarray], shared: dict[str, np.ndarray]) -> Knowledge: ...

    @abstractmethod
    def error_bound(self) -> str: ...


def _softmax_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    # float64 so the reference itself carries no rounding error worth mentioning.
    return torch.softmax(logits.detach().to(torch.float64) / temperature, dim=1)


def _embeddings_of(outputs: TeacherOutputs, codec_name: str) -> np.ndarray:
    if outputs.embeddings is None:
        raise ValueError(f"codec {codec_name!r} needs teacher embeddings, but outputs.embeddings is None")
    if outputs.embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {tuple(outputs.embeddings.shape)}")
    return outputs.embeddings.detach().cpu().to(torch.float64).numpy()


def _require(arrays: dict[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    if name not in arrays:
        raise ValueError(f"missing array {name!r} (have: {sorted(arrays)})")
    array = np.asarray(arrays[name])
    if array.ndim != ndim:
        raise ValueError(f"array {name!r} must have {ndim} dims, got shape {array.shape}")
    return array


def _check_probabilities(probs: np.ndarray, name: str) -> None:
    # Decoded rows are divided by their sum, so a corrupt row must fail here, not become NaN.
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs.shape[1] and (probs.sum(axis=1) <= 0).any()):
        raise ValueError(f"{name} must be finite, non-negative, and positive in every row")


def _check_temperature(temperature: float) -> float:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return float(temperature)


def _check_fp16_range(values: np.ndarray, what: str) -> None:
    if values.size and np.abs(values).max() > _FP16_MAX:
        raise ValueError(f"{what} exceed the float16 range (|x| <= {_FP16_MAX}); rescale the teacher outputs")


class TopKCodec(KnowledgeCodec):
    """Top-k soft labels (as in FKD).

    Stores p = softmax(logits / temperature) as `topk_probs` [N, k] float16 and `topk_indices`
    [N, k] uint8 (C <= 256) or uint16 (C <= 65536). Decode puts the missing mass
    (1 - sum of kept values, clamped at 0) uniformly on the other C - k classes, never above the
    smallest kept value (so the kept order and the argmax survive), then renormalizes rows to 1.

    Error: per row, sum_j |q_j - p_j| <= 2 * tail_mass + 2^-8, where tail_mass is the true mass
    outside the top k (0 when k == C); the 2^-8 covers fp16 rounding (relative 2^-11 per value).
    """

    name: ClassVar[str] = "topk"

    def __init__(self, k: int = 5, temperature: float = 1.0, num_classes: int | None = None) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if num_classes is not None and not 1 <= num_classes <= np.iinfo(np.uint16).max + 1:
            raise ValueError(f"num_classes must be in [1, 65536], got {num_classes}")
        if num_classes is not None and k > num_classes:
            raise ValueError(f"k must be <= num_classes ({num_classes}), got {k}")
        self.k = int(k)
        self.temperature = _check_temperature(temperature)
        self.num_classes = None if num_classes is None else int(num_classes)

    @classmethod
    def from_config(cls, knowledge: KnowledgeConfig) -> TopKCodec:
        return cls(k=knowledge.k, temperature=knowledge.temperature)

    def params(self) -> dict[str, int | float | str]:
        params: dict[str, int | float | str] = {"k": self.k, "temperature": self.temperature}
        if self.num_classes is not None:
            params["num_classes"] = self.num_classes
        return params

    def fit(self, outputs: TeacherOutputs) -> dict[str, np.ndarray]:
        num_classes = int(outputs.logits.shape[-1])
        if self.num_classes is not None and self.num_classes != num_classes:
            raise ValueError(f"num_classes is {self.num_classes} but the logits have {num_classes} classes")
        self._check_k(num_classes)
        self.num_classes = num_classes
        return {}

    def encode(self, outputs: TeacherOutputs, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = _softmax_probs(outputs.logits, self.temperature)
        num_classes = self._fitted_num_classes()
        if probs.shape[1] != num_classes:
            raise ValueError(f"codec was fitted for num_classes={num_classes}, logits have {probs.shape[1]}")
        values, indices = torch.topk(probs, self.k, dim=1)
        return {
            "topk_probs": values.numpy().astype(np.float16),
            "topk_indices": indices.numpy().astype(self._index_dtype(num_classes)),
        }

    def decode(self, arrays: dict[str, np.ndarray], shared: dict[str, np.ndarray]) -> Knowledge:
        num_classes = self._fitted_num_classes()
        kept_np = _require(arrays, "topk_probs", 2).astype(np.float32)
        _check_probabilities(kept_np, "topk_probs")
        kept = torch.from_numpy(kept_np)
        indices_np = _require(arrays, "topk_indices", 2)
        if indices_np.shape != tuple(kept.shape) or indices_np.shape[1] != self.k:
            raise ValueError(f"topk arrays must both be [N, k={self.k}], got {kept.shape} and {indices_np.shape}")
        if indices_np.size and int(indices_np.max()) >= num_classes:
            raise ValueError(f"topk_indices hold class {int(indices_np.max())} >= num_classes={num_classes}")
        indices = torch.from_numpy(indices_np.astype(np.int64))
        probs = torch.zeros(kept.shape[0], num_classes, dtype=torch.float32)
        if num_classes > self.k:
            missing_mass = (1.0 - kept.sum(dim=1, keepdim=True)).clamp(min=0.0)
            fill = torch.minimum(missing_mass / (num_classes - self.k), kept.min(dim=1, keepdim=True).values)
            probs += fill
        probs.scatter_(1, indices, kept)
        return Knowledge(probs=probs / probs.sum(dim=1, keepdim=True), embeddings=None)

    def error_bound(self) -> str:
        return (
            f"top-{self.k} fp16 soft labels at T={self.temperature}: per row "
            "sum|q - p| <= 2 * (true mass outside the top k) + 2^-8; argmax kept"
        )

    def _check_k(self, num_classes: int) -> None:
        if self.k > num_classes:
            raise ValueError(f"k must be <= the number of classes ({num_classes}), got {self.k}")
        self._index_dtype(num_classes)

    def _fitted_num_classes(self) -> int:
        if self.num_classes is None:
            raise ValueError("num_classes is unknown: call fit() first or pass num_classes")
        return self.num_classes

    @staticmethod
    def _index_dtype(num_classes: int) -> type[np.unsignedinteger]:
        if num_classes <= 256:
            return np.uint8
        if num_classes <= 65536:
            return np.uint16
        raise ValueError(f"num_classes must be <= 65536 for uint16 indices, got {num_classes}")


class FullCodec(KnowledgeCodec):
    """All soft labels: `probs` [N, C] as float16 or float32; the reference for `fidelity`.

    Error (decode renormalizes rows to 1): per row sum_j |q_j - p_j| <= 2^-9 for float16
    (relative 2^-11 per value, doubled by renormalization, plus subnormal slack) and <= 1e-5
    for float32.
    """

    name: ClassVar[str] = "full"
    _DTYPES: ClassVar[dict[str, type[np.floating]]] = {"float16": np.float16, "float32": np.float32}

    def __init__(self, temperature: float = 1.0, dtype: str = "float16") -> None:
        if dtype not in self._DTYPES:
            raise ValueError(f"dtype must be one of {sorted(self._DTYPES)}, got {dtype!r}")
        self.temperature = _check_temperature(temperature)
        self.dtype = dtype

    @classmethod
    def from_config(cls, knowledge: KnowledgeConfig) -> FullCodec:
        return cls(temperature=knowledge.temperature)

    def params(self) -> dict[str, int | float | str]:
        return {"temperature": self.temperature, "dtype": self.dtype}

    def fit(self, outputs: TeacherOutputs) -> dict[str, np.ndarray]:
        return {}

    def encode(self, outputs: TeacherOutputs, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = _softmax_probs(outputs.logits, self.temperature)
        return {"probs": probs.numpy().astype(self._DTYPES[self.dtype])}

    def decode(self, arrays: dict[str, np.ndarray], shared: dict[str, np.ndarray]) -> Knowledge:
        probs_np = _require(arrays, "probs", 2).astype(np.float32)
        if probs_np.shape[1] < 1:
            raise ValueError("probs must have at least one class")
        _check_probabilities(probs_np, "probs")
        probs = torch.from_numpy(probs_np)
        return Knowledge(probs=probs / probs.sum(dim=1, keepdim=True), embeddings=None)

    def error_bound(self) -> str:
        bound = "2^-9" if self.dtype == "float16" else "1e-5"
        return f"all {self.dtype} soft labels at T={self.temperature}: per row sum|q - p| <= {bound}"


class Int8EmbeddingCodec(KnowledgeCodec):
    """Embeddings as int8 with a per-row float16 scale (symmetric quantization).

    `embedding_int8` [N, D] int8 and `embedding_scale` [N] float16, where the scale is
    max|row| / 127 rounded *up* to float16 so codes never clip. Decode: codes * scale.
    Error: every element |e_hat - e| <= scale / 2 (the stored per-row scale). probs is None.
    """

    name: ClassVar[str] = "int8_embedding"
    decodes_embeddings: ClassVar[bool] = True

    def params(self) -> dict[str, int | float | str]:
        return {}

    def fit(self, outputs: TeacherOutputs) -> dict[str, np.ndarray]:
        _embeddings_of(outputs, self.name)
        return {}

    def encode(self, outputs: TeacherOutputs, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = _embeddings_of(outputs, self.name)
        exact_scale = np.abs(embeddings).max(axis=1, initial=0.0) / 127.0
        _check_fp16_range(exact_scale, "per-row int8 scales (max|row| / 127)")
        scale = exact_scale.astype(np.float16)
        rounded_down = scale.astype(np.float64) < exact_scale
        scale[rounded_down] = np.nextafter(scale[rounded_down], np.float16(np.inf))
        # An all-zero row has scale 0; dividing by 1 instead encodes it as zeros exactly.
        divisor = np.where(scale > 0, scale.astype(np.float64), 1.0)
        codes = np.clip(np.rint(embeddings / divisor[:, None]), -127, 127).astype(np.int8)
        return {"embedding_int8": codes, "embedding_scale": scale}

    def decode(self, arrays: dict[str, np.ndarray], shared: dict[str, np.ndarray]) -> Knowledge:
        codes = _require(arrays, "embedding_int8", 2)
        scale = _require(arrays, "embedding_scale", 1)
        if scale.shape[0] != codes.shape[0]:
            raise ValueError(f"embedding_scale has {scale.shape[0]} rows, embedding_int8 has {codes.shape[0]}")
        embeddings = codes.astype(np.float32) * scale.astype(np.float32)[:, None]
        return Knowledge(probs=None, embeddings=torch.from_numpy(embeddings), **_teacher_head(shared, codes.shape[1]))

    def error_bound(self) -> str:
        return "int8 embeddings, per-row fp16 scale ~ max|row|/127: per element |de| <= scale/2"


class PCAEmbeddingCodec(KnowledgeCodec):
    """Embeddings projected on a PCA basis fitted over the whole distillation set.

    Shared: `pca_mean` [D] float32 and `pca_components` [dim, D] float32 (orthonormal rows;
    zero rows when the data has fewer than `dim` directions). Per sample: `pca_coefficients`
    [N, dim] float16. Decode: mean + coefficients @ components. probs is None.
    Error: per row ||e_hat - e||_2 <= ||residual outside the top `dim` components||_2
    + 2^-11 * ||coefficients||_2 (+ float32 rounding); exact up to fp16 when dim >= rank.
    """

    name: ClassVar[str] = "pca_embedding"
    decodes_embeddings: ClassVar[bool] = True

    def __init__(self, dim: int = 32) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)

    @classmethod
    def from_config(cls, knowledge: KnowledgeConfig) -> PCAEmbeddingCodec:
        return cls(dim=knowledge.pca_dim)

    def params(self) -> dict[str, int | float | str]:
        return {"dim": self.dim}

    def fit(self, outputs: TeacherOutputs) -> dict[str, np.ndarray]:
        embeddings = _embeddings_of(outputs, self.name)
        if self.dim > embeddings.shape[1]:
            raise ValueError(f"dim must be <= the embedding width ({embeddings.shape[1]}), got {self.dim}")
        mean = embeddings.mean(axis=0)
        _, _, right_vectors = np.linalg.svd(embeddings - mean, full_matrices=False)
        components = np.zeros((self.dim, embeddings.shape[1]))
        kept = min(self.dim, right_vectors.shape[0])
        components[:kept] = right_vectors[:kept]
        return {"pca_mean": mean.astype(np.float32), "pca_components": components.astype(np.float32)}

    def encode(self, outputs: TeacherOutputs, shared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = _embeddings_of(outputs, self.name)
        mean, components = self._basis(shared)
        if embeddings.shape[1] != mean.shape[0]:
            raise ValueError(f"embeddings have width {embeddings.shape[1]}, the PCA basis {mean.shape[0]}")
        coefficients = (embeddings - mean) @ components.T
        _check_fp16_range(coefficients, "PCA coefficients")
        return {"pca_coefficients": coefficients.astype(np.float16)}

    def decode(self, arrays: dict[str, np.ndarray], shared: dict[str, np.ndarray]) -> Knowledge:
        mean, components = self._basis(shared)
        coefficients = _require(arrays, "pca_coefficients", 2).astype(np.float64)
        if coefficients.shape[1] != components.shape[0]:
            raise ValueError(f"pca_coefficients have {coefficients.shape[1]} columns, the basis {components.shape[0]}")
        embeddings = (mean + coefficients @ components).astype(np.float32)
        return Knowledge(probs=None, embeddings=torch.from_numpy(embeddings), **_teacher_head(shared, mean.shape[0]))

    def error_bound(self) -> str:
        return (
            f"PCA to {self.dim} dims, fp16 coefficients: per row ||de||_2 <= "
            "||PCA residual||_2 + 2^-11 * ||coefficients||_2"
        )

    def _basis(self, shared: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        mean = _require(shared, "pca_mean", 1)
        components = _require(shared, "pca_components", 2)
        if components.shape != (self.dim, mean.shape[0]):
            raise ValueError(f"pca_components must be [dim={self.dim}, D={mean.shape[0]}], got {components.shape}")
        return mean.astype(np.float64), components.astype(np.float64)


def build_codec(name: str, **params: int | float | str) -> KnowledgeCodec:
    """The codec registered as `name` (`fedtosc.registries.CODECS`), built from `params` (as
    returned by its `params()`, e.g. from a store's header)."""
    codec_class = CODECS.get(name)
    accepted = list(inspect.signature(codec_class).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for codec {name!r}; accepted: {accepted}")
    return codec_class(**params)


def fidelity(reference: Knowledge, approx: Knowledge) -> dict[str, float]:
    """How close decoded knowledge is to a reference (usually the `full` codec's).

    Soft labels: "kl_to_full" = mean over rows of KL(reference || approx) in nats and
    "argmax_agreement" = fraction of rows with the same argmax. Embeddings (when both have them):
    "embedding_relative_error" = ||approx - reference||_F / ||reference||_F.
    """
    scores: dict[str, float] = {}
    if reference.probs is not None and approx.probs is not None:
        if reference.probs.shape != approx.probs.shape:
            raise ValueError(f"probs shapes differ: {tuple(reference.probs.shape)} vs {tuple(approx.probs.shape)}")
        ref = reference.probs.to(torch.float64)
        other = approx.probs.to(torch.float64).clamp(min=_KL_FLOOR)
        kl_terms = torch.where(ref > 0, ref * (ref.clamp(min=_KL_FLOOR).log() - other.log()), torch.zeros_like(ref))
        scores["kl_to_full"] = float(kl_terms.sum(dim=1).mean())
        scores["argmax_agreement"] = float((ref.argmax(dim=1) == other.argmax(dim=1)).to(torch.float64).mean())
    if reference.embeddings is not None and approx.embeddings is not None:
        if reference.embeddings.shape != approx.embeddings.shape:
            raise ValueError("embeddings shapes differ")
        ref_emb = reference.embeddings.to(torch.float64)
        error = torch.linalg.norm(approx.embeddings.to(torch.float64) - ref_emb)
        scores["embedding_relative_error"] = float(error / torch.linalg.norm(ref_emb).clamp(min=_KL_FLOOR))
    if not scores:
        raise ValueError("reference and approx share neither probs nor embeddings")
    return scores
