"""Specification of FKD-style augmented views (`knowledge.views=K`).

The teacher labels K views per image (view 0: the image as stored; then random crops resized
back to the input resolution, maybe mirrored); the store keeps each view's parameters, and a
client that replays them sees, pixel for pixel, the input the teacher labelled.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from fedtosc.cli import main
from fedtosc.config import ConfigError, load_config
from fedtosc.data.datasets import ImageDataset
from fedtosc.data.views import apply_views, draw_views
from fedtosc.experiment import Experiment, knowledge_path
from fedtosc.knowledge import builder as builder_module
from fedtosc.knowledge.builder import build_knowledge, codec_fidelity
from fedtosc.knowledge.codecs import build_codec
from fedtosc.knowledge.store import KnowledgeStore, KnowledgeStoreError, export_slice, import_slice
from fedtosc.models.outputs import TeacherOutputs
from fedtosc.models.teachers import Teacher
from store_files import rewrite_store

_CPU = torch.device("cpu")
_HEIGHT, _WIDTH = 12, 10  # not square: rows and columns must not be mixed up
_CLASSES = 5
# Dataset indices need not be contiguous: 0, 7, ..., 49 and 50..59 (18 samples).
_INDICES = np.unique(np.r_[np.arange(0, 50, 7), np.arange(50, 60)])


class _RecordingTeacher(Teacher):
    """Logits linear in the pixels (any change of the input changes the soft labels); keeps a
    copy of every input batch it receives."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(3 * _HEIGHT * _WIDTH, _CLASSES, generator=generator) / 10)
        self.teacher_id = self.display_name = "recording"
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> TeacherOutputs:
        self.inputs.append(images.clone())
        embeddings = images.flatten(1)
        return TeacherOutputs(logits=self.classify(embeddings), embeddings=embeddings)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings @ self.weight


@pytest.fixture
def data() -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, _HEIGHT, _WIDTH), generator=generator, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(60) % _CLASSES, tuple("abcde"))


def _build(
    teacher: Teacher,
    data: ImageDataset,
    path: Path,
    views: int,
    *,
    codec: str = "full",
    params: dict | None = None,
    view_seed: int = 0,
) -> KnowledgeStore:
    return build_knowledge(
        teacher,
        data,
        _INDICES,
        build_codec(codec, **({"dtype": "float32"} if params is None else params)),
        path,
        dataset_fingerprint=data.fingerprint(),
        transform="uint8/255",
        batch_size=4,
        device=_CPU,
        chunk_size=8,  # 18 samples -> 3 chunks, the last one short
        views=views,
        view_seed=view_seed,
    )


def _random_params(count: int, generator: torch.Generator) -> torch.Tensor:
    """Any valid boxes (including 1-pixel and full-size ones) and flip bits, not only draw_views' range."""
    height = torch.randint(1, _HEIGHT + 1, (count,), generator=generator)
    width = torch.randint(1, _WIDTH + 1, (count,), generator=generator)
    top = (torch.rand(count, generator=generator) * (_HEIGHT - height + 1)).long()
    left = (torch.rand(count, generator=generator) * (_WIDTH - width + 1)).long()
    flip = torch.randint(0, 2, (count,), generator=generator)
    return torch.stack([top, left, height, width, flip], dim=1)


def test_identity_view_is_the_stored_image_exactly() -> None:
    every_value = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    identity = torch.tensor([[0, 0, 16, 16, 0]] * 2, dtype=torch.int16)
    assert torch.equal(apply_views(every_value, identity), every_value.float() / 255)


def test_full_image_flip_mirrors_the_columns_exactly(data: ImageDataset) -> None:
    flipped = torch.tensor([[0, 0, _HEIGHT, _WIDTH, 1]] * 4)
    assert torch.equal(apply_views(data.images[:4], flipped), data.images[:4].flip(-1).float() / 255)


def test_drawn_views_lie_inside_the_image_and_view_zero_is_the_identity() -> None:
    params = draw_views(500, 4, (_HEIGHT, _WIDTH), torch.Generator().manual_seed(3))
    assert params.dtype == torch.int16 and params.shape == (500, 4, 5)
    assert (params[:, 0] == torch.tensor([0, 0, _HEIGHT, _WIDTH, 0], dtype=torch.int16)).all()
    top, left, height, width, flip = params[:, 1:].long().unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= _HEIGHT).all() and (left + width <= _WIDTH).all()
    area = (height * width).double() / (_HEIGHT * _WIDTH)
    assert area.min() >= 0.45 and area.max() <= 1.0  # 0.6-1.0 of the area, up to rounding and clipping
    assert 0.4 < flip.double().mean() < 0.6
    assert torch.equal(params, draw_views(500, 4, (_HEIGHT, _WIDTH), torch.Generator().manual_seed(3)))
    assert not torch.equal(params, draw_views(500, 4, (_HEIGHT, _WIDTH), torch.Generator().manual_seed(4)))


def test_apply_views_is_a_deterministic_bilinear_crop_resize_flip_within_bounds(data: ImageDataset) -> None:
    images = data.images[:40]
    params = _random_params(40, torch.Generator().manual_seed(1))
    views = apply_views(images, params)
    assert views.dtype == torch.float32 and views.shape == images.shape
    assert views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, apply_views(images, params.to(torch.int16)))
    assert torch.equal(views[7:8], apply_views(images[7:8], params[7:8]))  # whatever else is in the batch
    # Reference: torch's bilinear resize of each crop (float rounding apart), then the mirror.
    for image, view, (top, left, height, width, flip) in zip(images, views, params.tolist()):
        crop = image[None, :, top : top + height, left : left + width].float() / 255
        expected = F.interpolate(crop, size=(_HEIGHT, _WIDTH), mode="bilinear", align_corners=False, antialias=False)
        torch.testing.assert_close(view, expected[0].flip(-1) if flip else expected[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad", [[-1, 0, 4, 4, 0], [0, 0, _HEIGHT + 1, 4, 0], [0, 7, 4, 4, 0], [0, 0, 0, 4, 0], [0, 0, 4, 4, 2]]
)
def test_apply_views_rejects_boxes_outside_the_image(data: ImageDataset, bad: list[int]) -> None:
    with pytest.raises(ValueError, match="inside the 12x10 image"):
        apply_views(data.images[:1], torch.tensor([bad]))


def test_client_replayed_view_equals_the_teachers_view_pixel_for_pixel(tmp_path: Path, data: ImageDataset) -> None:
    teacher = _RecordingTeacher()
    store = _build(teacher, data, tmp_path / "store.safetensors", views=3)
    seen = torch.cat(teacher.inputs)  # N * K rows, sample-major, at the input resolution
    assert seen.shape == (len(_INDICES) * 3, 3, _HEIGHT, _WIDTH)

    # A client gets its slice, then replays view v of each of its samples from its own images.
    positions = np.array([2, 5, 11, 17])
    arrays, header = export_slice(store, _INDICES[positions])
    indices, knowledge = import_slice(arrays, header)
    assert knowledge.view_params.shape == (4, 3, 5)
    for view in range(3):
        replayed = apply_views(data.images[torch.from_numpy(indices)], knowledge.view_params[:, view])
        assert torch.equal(replayed, seen[positions * 3 + view]), view
    assert not torch.equal(seen[positions * 3 + 1], seen[positions * 3])  # the views really differ


def test_three_view_store_round_trips_through_export_and_import(tmp_path: Path, data: ImageDataset) -> None:
    store = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=3, codec="topk",
                   params={"k": 2, "temperature": 2.0})
    assert store.header.views == 3 and store.header.view_seed == 0
    wanted = _INDICES[[9, 0, 4]]
    arrays, header = export_slice(store, wanted)
    assert arrays["sample.topk_probs"].shape == (3, 3, 2) and arrays["sample.view_params"].shape == (3, 3, 5)
    indices, knowledge = import_slice(arrays, header)
    np.testing.assert_array_equal(indices, np.sort(wanted))
    decoded = store.decode(np.sort(wanted))
    assert knowledge.probs.shape == (3 * 3, _CLASSES) and knowledge.embeddings is None
    assert torch.equal(knowledge.probs, decoded.probs)
    assert knowledge.view_params.dtype == torch.int16 and knowledge.view_params.shape == (3, 3, 5)
    assert torch.equal(knowledge.view_params, decoded.view_params)
    assert KnowledgeStore.open(store.path, expect={"views": "3"}).header.views == 3


def test_single_view_store_has_no_view_params_and_decodes_one_row_per_sample(
    tmp_path: Path, data: ImageDataset
) -> None:
    store = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=1)
    assert "sample.view_params" not in load_file(str(store.path))
    knowledge = store.decode(_INDICES[:4])
    assert knowledge.view_params is None and knowledge.probs.shape == (4, _CLASSES)


@pytest.mark.parametrize("views", [1, 2, 4])
def test_bytes_per_sample_grows_with_views_as_computed(tmp_path: Path, data: ImageDataset, views: int) -> None:
    store = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=views, codec="topk",
                   params={"k": 2, "temperature": 2.0})
    # Per view: 2 fp16 probabilities + 2 uint8 classes = 6 bytes; K > 1 adds 5 int16 view params per view.
    assert store.bytes_per_sample == 6 * views + (10 * views if views > 1 else 0)


def test_views_give_different_soft_labels_and_view_zero_is_the_single_view_knowledge(
    tmp_path: Path, data: ImageDataset
) -> None:
    single = _build(_RecordingTeacher(), data, tmp_path / "single.safetensors", views=1).decode(_INDICES).probs
    probs = _build(_RecordingTeacher(), data, tmp_path / "views.safetensors", views=3).decode(_INDICES).probs
    probs = probs.view(len(_INDICES), 3, _CLASSES)
    torch.testing.assert_close(probs[:, 0], single, rtol=0, atol=1e-6)  # batches differ, the inputs do not
    for view in (1, 2):
        differs = (probs[:, view] - probs[:, 0]).abs().amax(dim=1) > 0.01
        assert differs.float().mean() >= 0.9, view


def test_store_fidelity_is_measured_over_every_view(tmp_path: Path, data: ImageDataset) -> None:
    teacher = _RecordingTeacher()
    store = _build(teacher, data, tmp_path / "store.safetensors", views=3, codec="pca_embedding", params={"dim": 8})
    with torch.inference_mode():
        outputs = teacher(torch.cat(teacher.inputs))  # all N * K views the build saw
    codec = build_codec("pca_embedding", dim=8)
    shared = codec.fit(outputs)
    expected = codec_fidelity(codec, outputs, codec.encode(outputs, shared), shared, teacher.classify)
    assert set(expected) == {"embedding_relative_error", "kl_to_full", "argmax_agreement"}
    assert store.header.extra["fidelity"] == pytest.approx(expected, rel=1e-6)


class _Killed(RuntimeError):
    pass


def test_resumed_view_build_equals_uninterrupted_and_never_reuses_another_view_seed(
    tmp_path: Path, data: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _build(_RecordingTeacher(), data, tmp_path / "reference.safetensors", views=3)
    path = tmp_path / "store.safetensors"

    def build_killed_after_one_chunk(view_seed: int) -> None:
        real_save = builder_module._save_chunk

        def save_then_die(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
            real_save(*args, **kwargs)
            raise _Killed

        with monkeypatch.context() as patch:
            patch.setattr(builder_module, "_save_chunk", save_then_die)
            with pytest.raises(_Killed):
                _build(_RecordingTeacher(), data, path, views=3, view_seed=view_seed)

    build_killed_after_one_chunk(view_seed=0)
    teacher = _RecordingTeacher()
    _build(teacher, data, path, views=3)
    assert sum(len(batch) for batch in teacher.inputs) == (len(_INDICES) - 8) * 3  # only the missing chunks ran
    for name, array in load_file(str(reference.path)).items():
        np.testing.assert_array_equal(load_file(str(path))[name], array, err_msg=name)

    path.unlink()
    build_killed_after_one_chunk(view_seed=1)
    teacher = _RecordingTeacher()
    _build(teacher, data, path, views=3)
    assert sum(len(batch) for batch in teacher.inputs) == len(_INDICES) * 3


def test_store_written_before_views_existed_opens_as_single_view(tmp_path: Path, data: ImageDataset) -> None:
    path = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=1).path
    rewrite_store(path, {"views": None, "view_seed": None}, {})
    store = KnowledgeStore.open(path)
    assert store.header.views == 1 and store.decode(_INDICES[:2]).probs.shape == (2, _CLASSES)


@pytest.mark.parametrize(
    ("metadata_changes", "tensor_changes", "message"),
    [
        ({}, {"sample.view_params": None}, "'sample.view_params' must be present exactly when views > 1"),
        ({"views": "1"}, {}, "'sample.view_params' must be present exactly when views > 1"),
        ({"views": "2"}, {}, "'sample.probs'.*num_samples=18, views=2"),
        ({}, {"sample.view_params": np.zeros((18, 3, 4), np.int16)}, "expected \\(18, 3, 5\\)"),
        ({}, {"sample.view_params": np.zeros((18, 3, 5), np.int32)}, "must be int16"),
        ({"views": "0"}, {}, "views must be >= 1"),
    ],
)
def test_inconsistent_view_layout_is_a_store_error(
    tmp_path: Path, data: ImageDataset, metadata_changes: dict, tensor_changes: dict, message: str
) -> None:
    path = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=3).path
    rewrite_store(path, metadata_changes, tensor_changes)
    with pytest.raises(KnowledgeStoreError, match=message):
        KnowledgeStore.open(path)


def test_knowledge_inspect_shows_views_and_bytes_per_sample(
    tmp_path: Path, data: ImageDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _build(_RecordingTeacher(), data, tmp_path / "store.safetensors", views=3, view_seed=7)
    assert main(["knowledge", "inspect", str(store.path)]) == 0
    printed = capsys.readouterr().out
    assert "views per sample              3 (view 0 as stored, then crop + flip views drawn with view_seed=7" in printed
    # 3 views x (5 float32 probabilities + 5 int16 view params) = 90 bytes.
    assert store.bytes_per_sample == 90.0 and "bytes per sample              90.0" in printed


def test_views_config_is_validated_and_keys_the_store_cache() -> None:
    assert load_config().knowledge.views == 1
    with pytest.raises(ConfigError, match=r"knowledge\.views"):
        load_config(["knowledge.views=0"])

    def path_for(*overrides: str) -> Path:
        experiment = Experiment(
            load_config(list(overrides)), None, SimpleNamespace(distillation_indices=np.arange(5)), "data"
        )
        return knowledge_path(experiment, SimpleNamespace(teacher_id="teacher"))

    assert path_for() == path_for("knowledge.view_seed=3")  # one view: nothing drawn, the same store
    assert path_for("knowledge.views=3") not in (path_for(), path_for("knowledge.views=3", "knowledge.view_seed=3"))
