"""Specification of the teachers: one interface, open_clip weights through the real loading path.

A tiny open_clip ViT config (3.3 M parameters, 32x32 images) stands in for ViT-B-32 so the
tests run offline in seconds; its random weights go to a local safetensors checkpoint and come
back through `teacher.checkpoint`, exactly as a user's downloaded weights would.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from fedtosc.config import TeacherConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.models.teachers import TeacherError, build_clip_teacher, load_or_train_server_teacher, predict

_TINY_MODEL = "fedtosc-test-tiny-vit"
_TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
_CLASSES = ("red", "green", "blue")
_CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Registers the tiny architecture with open_clip and saves random weights as safetensors."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    config_path = folder / f"{_TINY_MODEL}.json"
    config_path.write_text(json.dumps(_TINY_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model(_TINY_MODEL, pretrained=None)
    checkpoint = folder / "open_clip_model.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(checkpoint))
    return checkpoint


@pytest.fixture(scope="module")
def zero_shot_teacher(tiny_checkpoint: Path):  # noqa: ANN201 - a ClipTeacher
    return build_clip_teacher(_clip_config(checkpoint=str(tiny_checkpoint)), _CLASSES, _CPU)


def _clip_config(**overrides) -> TeacherConfig:
    return TeacherConfig(name="clip", model=_TINY_MODEL, batch_size=16, **overrides)


def _color_images(num_per_class: int, seed: int) -> ImageDataset:
    """Class c is a noisy image dominated by color channel c: linearly separable in pixels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(_CLASSES)).repeat_interleave(num_per_class)
    images = torch.rand(len(labels), 3, 32, 32, generator=generator) * 0.4
    images[torch.arange(len(labels)), labels] += 0.6
    return ImageDataset((images * 255).to(torch.uint8), labels, _CLASSES)


def test_checkpoint_weights_load_through_teacher_checkpoint(tiny_checkpoint: Path, zero_shot_teacher) -> None:  # noqa: ANN001
    teacher = zero_shot_teacher  # built with teacher.checkpoint=<the saved file>
    saved = load_file(str(tiny_checkpoint))
    loaded = teacher.visual.state_dict()
    assert loaded, "the teacher keeps the visual tower"
    for name, tensor in loaded.items():
        assert torch.equal(tensor, saved[f"visual.{name}"]), name


def test_zero_shot_teacher_outputs_logits_and_unit_embeddings(zero_shot_teacher) -> None:  # noqa: ANN001
    teacher = zero_shot_teacher
    outputs = predict(teacher, _color_images(4, seed=1), batch_size=5, device=_CPU)
    assert outputs.logits.shape == (12, len(_CLASSES))
    assert outputs.embeddings.shape == (12, _TINY_CONFIG["embed_dim"])
    assert torch.allclose(outputs.embeddings.norm(dim=1), torch.ones(12), atol=1e-5)
    assert torch.allclose(teacher.head.norm(dim=1), torch.ones(len(_CLASSES)), atol=1e-5)
    assert _TINY_MODEL in teacher.teacher_id


def test_zero_shot_head_is_the_mean_prompt_embedding(tiny_checkpoint: Path) -> None:
    templates = ["a photo of a {}.", "a {} thing."]
    teacher = build_clip_teacher(
        _clip_config(checkpoint=str(tiny_checkpoint), prompt_templates=templates), _CLASSES, _CPU
    )
    model = open_clip.create_model(_TINY_MODEL, pretrained=str(tiny_checkpoint))
    tokens = open_clip.get_tokenizer(_TINY_MODEL)([template.format("green") for template in templates])
    with torch.no_grad():
        expected = F.normalize(F.normalize(model.encode_text(tokens), dim=-1).mean(0), dim=0)
    assert torch.allclose(teacher.head[1], expected, atol=1e-5)


def test_teacher_id_is_deterministic_and_depends_on_the_head(tiny_checkpoint: Path, zero_shot_teacher) -> None:  # noqa: ANN001
    first = zero_shot_teacher
    again = build_clip_teacher(_clip_config(checkpoint=str(tiny_checkpoint)), _CLASSES, _CPU)
    other_names = build_clip_teacher(
        _clip_config(checkpoint=str(tiny_checkpoint), class_names=["cat", "dog", "car"]), _CLASSES, _CPU
    )
    assert first.teacher_id == again.teacher_id
    assert first.teacher_id != other_names.teacher_id


def test_batched_predictions_do_not_depend_on_batch_size(zero_shot_teacher) -> None:  # noqa: ANN001
    teacher = zero_shot_teacher
    data = _color_images(3, seed=2)
    one_batch = predict(teacher, data, batch_size=64, device=_CPU)
    small_batches = predict(teacher, data, batch_size=2, device=_CPU)
    assert torch.allclose(one_batch.logits, small_batches.logits, atol=1e-4)


def test_no_weights_offline_says_how_to_supply_them(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match=r"teacher\.pretrained=.*teacher\.checkpoint="):
        build_clip_teacher(_clip_config(), _CLASSES, _CPU)


def test_unavailable_pretrained_tag_says_how_to_supply_weights(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match=r"teacher\.checkpoint=/path/to/open_clip_model\.safetensors"):
        build_clip_teacher(_clip_config(pretrained="laion2b_s34b_b79k"), _CLASSES, _CPU)


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TeacherError, match="nope.safetensors does not exist"):
        build_clip_teacher(_clip_config(checkpoint=str(missing)), _CLASSES, _CPU)


def test_unknown_model_name_lists_known_models() -> None:
    with pytest.raises(TeacherError, match=r"unknown open_clip model .*ViT-B-32"):
        build_clip_teacher(TeacherConfig(name="clip", model="ViT-Nonexistent", allow_random_weights=True), _CLASSES, _CPU)


def test_linear_probe_head_beats_chance_on_separable_data(tiny_checkpoint: Path) -> None:
    config = _clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe")
    teacher = build_clip_teacher(config, _CLASSES, _CPU, labelled=_color_images(30, seed=3))
    test = _color_images(30, seed=4)
    accuracy = float((predict(teacher, test, 32, _CPU).logits.argmax(1) == test.labels).float().mean())
    assert accuracy > 0.8  # chance is 1/3
    assert "-probe-" in teacher.teacher_id


def test_linear_probe_needs_labelled_data(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match="labelled"):
        build_clip_teacher(_clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe"), _CLASSES, _CPU)


def test_server_teacher_is_trained_once_then_loaded_from_cache(tmp_path: Path) -> None:
    config = TeacherConfig(width=4, epochs=1, batch_size=32, cache_dir=str(tmp_path))
    data = _color_images(10, seed=5)
    trained = load_or_train_server_teacher(config, data, seed=0, device=_CPU)
    cached = load_or_train_server_teacher(config, data, seed=0, device=_CPU)
    assert list(tmp_path.glob("*.safetensors")) == [tmp_path / f"{trained.teacher_id}.safetensors"]
    assert cached.teacher_id == trained.teacher_id
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, cached.state_dict()[name]), name
    outputs = predict(cached, data, 8, _CPU)
    assert outputs.logits.shape == (len(data), len(_CLASSES))


def test_a_checkpoint_that_is_not_what_it_claims_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(TeacherError, match="could not load CLIP weights"):
        build_clip_teacher(_clip_config(checkpoint=str(garbage)), _CLASSES, _CPU)
    # Real weights of another architecture: the strict load must refuse them.
    with pytest.raises(TeacherError, match="could not load CLIP weights"):
        build_clip_teacher(TeacherConfig(name="clip", model="RN50", checkpoint=str(tiny_checkpoint)), _CLASSES, _CPU)
