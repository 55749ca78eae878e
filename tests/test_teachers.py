"""Specification of the teachers: one interface, open_clip weights through the real loading path.

A tiny open_clip ViT config (3.3 M parameters, 32x32 images) stands in for ViT-B-32 so the
tests run offline in seconds; its random weights go to a local safetensors checkpoint and come
back through `teacher.checkpoint`, exactly as a user's downloaded weights would. Heads are
checked against independent computations: open_clip's text tower for zero-shot, sklearn's own
probabilities for the linear probe.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression

from fedtosc.cache_lock import lock_path
from fedtosc.config import TeacherConfig, load_config
from fedtosc.data.datasets import ImageDataset
from fedtosc.data.prompts import prompt_templates
from fedtosc.digests import DIGESTS_KEY
from fedtosc.models.teachers import (
    ClipTeacher,
    ServerCNNTeacher,
    Teacher,
    TeacherCacheRebuilt,
    TeacherError,
    _train_classifier,
    build_clip_teacher,
    load_or_train_server_teacher,
    predict,
)
from store_files import rewrite_store

# Its module fixture builds a teacher: under pytest-xdist (`make test`) the module stays on one
# worker, so that happens once.
pytestmark = pytest.mark.xdist_group("test_teachers")

_TINY_MODEL = "fedtosc-test-tiny-vit"
_TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
_CLASSES = ("red", "green", "blue")
_DATASET = "image_folder"  # the color classes are a folder dataset: the generic prompt ensemble
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
def zero_shot_teacher(tiny_checkpoint: Path) -> ClipTeacher:
    return _build(_clip_config(checkpoint=str(tiny_checkpoint)))


@pytest.fixture(scope="module")
def probe_teacher(tiny_checkpoint: Path) -> ClipTeacher:
    config = _clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe")
    return _build(config, labelled=_color_images(30, seed=3))


def _clip_config(**overrides) -> TeacherConfig:
    return TeacherConfig(name="clip", model=_TINY_MODEL, batch_size=16, **overrides)


def _build(
    config: TeacherConfig,
    classes: tuple[str, ...] = _CLASSES,
    labelled: ImageDataset | None = None,
    dataset_name: str = _DATASET,
) -> ClipTeacher:
    return build_clip_teacher(config, classes, _CPU, labelled=labelled, dataset_name=dataset_name)


def _color_images(num_per_class: int, seed: int, num_classes: int = len(_CLASSES)) -> ImageDataset:
    """Class c is a noisy image dominated by color channel c: linearly separable in pixels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    images = torch.rand(len(labels), 3, 32, 32, generator=generator) * 0.4
    images[torch.arange(len(labels)), labels] += 0.6
    return ImageDataset((images * 255).to(torch.uint8), labels, _CLASSES[:num_classes])


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


@pytest.mark.parametrize(
    ("dataset_name", "configured", "expected"),
    [
        ("cifar10", None, prompt_templates("cifar10")),  # the dataset's ensemble by default
        ("cifar10", ["a {} thing."], ["a {} thing."]),  # teacher.prompt_templates overrides it
    ],
)
def test_zero_shot_logits_are_the_image_embedding_times_the_mean_prompt_embeddings(
    tiny_checkpoint: Path, dataset_name: str, configured: list[str] | None, expected: tuple[str, ...]
) -> None:
    teacher = _build(_clip_config(checkpoint=str(tiny_checkpoint), prompt_templates=configured), dataset_name=dataset_name)
    model = open_clip.create_model(_TINY_MODEL, pretrained=str(tiny_checkpoint)).eval()
    tokenizer = open_clip.get_tokenizer(_TINY_MODEL)
    images = _color_images(2, seed=6).images.float().div(255.0)  # 32x32: the tiny model's input size
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        prompts = [F.normalize(model.encode_text(tokenizer([t.format(name) for t in expected])), dim=-1) for name in _CLASSES]
        head = F.normalize(torch.stack([p.mean(0) for p in prompts]), dim=-1)
        embeddings = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        logits = teacher(images).logits
    assert torch.allclose(logits, model.logit_scale.exp() * embeddings @ head.T, atol=1e-4)


@pytest.mark.parametrize("templates", [["a photo of a thing."], ["a {} next to a {}."], ["a {name}."], ["a {"], []])
def test_a_prompt_template_without_exactly_one_slot_is_named(tiny_checkpoint: Path, templates: list[str]) -> None:
    with pytest.raises(TeacherError, match=r"teacher\.prompt_templates"):
        _build(_clip_config(checkpoint=str(tiny_checkpoint), prompt_templates=templates))


def test_every_dataset_brings_its_own_prompt_ensemble_and_unknown_ones_a_generic_one() -> None:
    generic = prompt_templates("image_folder")
    assert prompt_templates("some_new_dataset") == generic
    for name in ("digits", "mnist", "svhn", "fashion_mnist", "cifar10", "cifar100"):
        assert len(prompt_templates(name)) > 1 and prompt_templates(name) != generic, name
    assert prompt_templates("digits") != prompt_templates("cifar10")


def test_teacher_id_is_deterministic_and_depends_on_the_head(tiny_checkpoint: Path, zero_shot_teacher) -> None:  # noqa: ANN001
    first = zero_shot_teacher
    again = _build(_clip_config(checkpoint=str(tiny_checkpoint)))
    other_names = _build(_clip_config(checkpoint=str(tiny_checkpoint), class_names=["cat", "dog", "car"]))
    assert first.teacher_id == again.teacher_id
    assert first.teacher_id != other_names.teacher_id


def test_teacher_id_depends_on_the_bias(tiny_checkpoint: Path, zero_shot_teacher: ClipTeacher) -> None:
    model = open_clip.create_model(_TINY_MODEL, pretrained=str(tiny_checkpoint))
    head, scale = zero_shot_teacher.head, zero_shot_teacher.logit_scale
    ids = {
        ClipTeacher(model, head, bias, scale, _TINY_MODEL, "w", "zero_shot").teacher_id
        for bias in (torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    }
    assert len(ids) == 2


def test_batched_predictions_do_not_depend_on_batch_size(zero_shot_teacher) -> None:  # noqa: ANN001
    teacher = zero_shot_teacher
    data = _color_images(3, seed=2)
    one_batch = predict(teacher, data, batch_size=64, device=_CPU)
    small_batches = predict(teacher, data, batch_size=2, device=_CPU)
    assert torch.allclose(one_batch.logits, small_batches.logits, atol=1e-4)


def test_no_weights_offline_says_how_to_supply_them(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match=r"teacher\.pretrained=.*teacher\.checkpoint="):
        _build(_clip_config())


def test_unavailable_pretrained_tag_says_how_to_supply_weights(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match=r"teacher\.checkpoint=/path/to/open_clip_model\.safetensors"):
        _build(_clip_config(pretrained="laion2b_s34b_b79k"))


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TeacherError, match="nope.safetensors does not exist"):
        _build(_clip_config(checkpoint=str(missing)))


def test_unknown_model_name_lists_known_models() -> None:
    with pytest.raises(TeacherError, match=r"unknown open_clip model .*ViT-B-32"):
        _build(TeacherConfig(name="clip", model="ViT-Nonexistent", allow_random_weights=True))


def test_linear_probe_head_beats_chance_on_separable_data(probe_teacher: ClipTeacher) -> None:
    test = _color_images(30, seed=4)
    accuracy = float((predict(probe_teacher, test, 32, _CPU).logits.argmax(1) == test.labels).float().mean())
    assert accuracy > 0.8  # chance is 1/3
    assert "-linear_probe-" in probe_teacher.teacher_id


@pytest.mark.parametrize("num_classes", [2, 3])
def test_linear_probe_keeps_bias_and_matches_sklearn_probabilities(tiny_checkpoint: Path, num_classes: int) -> None:
    labelled = _color_images(30, seed=3, num_classes=num_classes)
    config = _clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe")
    teacher = _build(config, _CLASSES[:num_classes], labelled=labelled)
    # The same probe, fitted here on the same embeddings (which do not depend on the head).
    train = predict(teacher, labelled, 32, _CPU).embeddings
    probe = LogisticRegression(max_iter=1000).fit(train.numpy(), labelled.labels.numpy())
    test = predict(teacher, _color_images(10, seed=7, num_classes=num_classes), 32, _CPU).embeddings
    with torch.no_grad():
        probabilities = teacher.classify(test).softmax(dim=1)
    assert probabilities.shape == (len(test), num_classes)
    assert torch.allclose(probabilities, torch.from_numpy(probe.predict_proba(test.numpy())).float(), atol=1e-5)
    assert teacher.bias.abs().max() > 0  # the intercept made it into the head


def test_linear_probe_needs_labelled_data(tiny_checkpoint: Path) -> None:
    with pytest.raises(TeacherError, match="labelled"):
        _build(_clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe"))


def test_linear_probe_refuses_labelled_data_that_lacks_a_class(tiny_checkpoint: Path) -> None:
    two_colors = _color_images(10, seed=3, num_classes=2)
    lacking_blue = ImageDataset(two_colors.images, two_colors.labels, _CLASSES)
    with pytest.raises(TeacherError, match="no sample of class blue"):
        _build(_clip_config(checkpoint=str(tiny_checkpoint), head="linear_probe"), labelled=lacking_blue)


@pytest.mark.parametrize("kind", ["zero_shot", "linear_probe", "server_cnn"])
def test_linear_head_reproduces_classify(kind: str, request: pytest.FixtureRequest) -> None:
    teachers = {"zero_shot": "zero_shot_teacher", "linear_probe": "probe_teacher"}
    teacher: Teacher = request.getfixturevalue(teachers[kind]) if kind in teachers else ServerCNNTeacher(3, 3, width=4)
    weight, bias = teacher.linear_head()
    embeddings = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(8))
    assert weight.dtype == bias.dtype == torch.float32 and weight.device == bias.device == _CPU
    assert weight.shape == (len(_CLASSES), embeddings.shape[1]) and bias.shape == (len(_CLASSES),)
    with torch.no_grad():
        assert torch.allclose(teacher.classify(embeddings), embeddings @ weight.T + bias, atol=1e-5)


def _count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each training of a server teacher from now on appends its teacher_id to the returned list."""
    trainings: list[str] = []

    def counted(teacher: ServerCNNTeacher, *args) -> None:  # noqa: ANN002
        trainings.append(teacher.teacher_id)
        _train_classifier(teacher, *args)

    monkeypatch.setattr("fedtosc.models.teachers._train_classifier", counted)
    return trainings


def _server_teacher(cache_dir: Path) -> ServerCNNTeacher:
    """The tiny server teacher, from the same initial weights every time: a training is reproducible."""
    torch.manual_seed(0)
    config = TeacherConfig(width=4, epochs=1, batch_size=32, cache_dir=str(cache_dir))
    return load_or_train_server_teacher(config, _color_images(10, seed=5), seed=0, device=_CPU)


def _assert_same_weights(teacher: Teacher, expected: dict[str, torch.Tensor]) -> None:
    state = teacher.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, expected[name]), name


def test_server_teacher_is_trained_once_then_loaded_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainings = _count_trainings(monkeypatch)
    trained = _server_teacher(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TeacherCacheRebuilt)  # a valid entry passes its checks
        cached = _server_teacher(tmp_path)
    assert trainings == [trained.teacher_id]  # the second call trained nothing
    assert list(tmp_path.glob("*.safetensors")) == [tmp_path / f"{trained.teacher_id}.safetensors"]
    assert cached.teacher_id == trained.teacher_id
    _assert_same_weights(cached, trained.state_dict())
    outputs = predict(cached, _color_images(10, seed=5), 8, _CPU)
    assert outputs.logits.shape == (30, len(_CLASSES))


def _flip_a_data_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    data_start = 8 + int.from_bytes(raw[:8], "little")  # after the length and the JSON header
    raw[(data_start + len(raw)) // 2] ^= 0x01  # still a valid safetensors file: only a digest can tell
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _drop_digests(path: Path) -> None:
    rewrite_store(path, {DIGESTS_KEY: None}, {})  # as fedtosc wrote cache entries before they had digests


def _drop_a_tensor(path: Path) -> None:
    rewrite_store(path, {}, {"classifier.bias": None})  # as another version of the teacher might, digests and all


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (_flip_a_data_byte, "tensor '.*' does not match its recorded sha256 digest"),
        (_truncate, "it is not a readable safetensors file"),
        (_drop_digests, "it records no tensor digests"),
        (_drop_a_tensor, r"its tensors do not fit server_cnn\(width=4\)"),
    ],
)
def test_a_damaged_or_stale_server_teacher_cache_entry_is_retrained_with_a_warning_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None], cause: str
) -> None:
    trainings = _count_trainings(monkeypatch)
    fresh = _server_teacher(tmp_path).state_dict()
    (path,) = tmp_path.glob("*.safetensors")
    damage(path)
    if damage is _flip_a_data_byte:  # what a reader without the digests would have loaded
        assert any(not torch.equal(tensor, fresh[name]) for name, tensor in load_file(str(path)).items())

    with pytest.warns(TeacherCacheRebuilt, match=rf"{re.escape(str(path))}: {cause}"):
        rebuilt = _server_teacher(tmp_path)
    assert len(trainings) == 2  # retrained, from the same initial weights as the first training
    _assert_same_weights(rebuilt, fresh)

    with warnings.catch_warnings():
        warnings.simplefilter("error", TeacherCacheRebuilt)  # the rewritten entry passes its checks
        _assert_same_weights(_server_teacher(tmp_path), fresh)
    assert len(trainings) == 2
    # Replaced atomically: no temp file left, only the entry and its lock (fedtosc.cache_lock).
    assert sorted(tmp_path.iterdir()) == sorted([path, lock_path(path)])


def test_a_checkpoint_that_is_not_what_it_claims_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(TeacherError, match="could not load CLIP weights"):
        _build(_clip_config(checkpoint=str(garbage)))
    # Real weights of another architecture: the strict load must refuse them.
    with pytest.raises(TeacherError, match="could not load CLIP weights"):
        _build(TeacherConfig(name="clip", model="RN50", checkpoint=str(tiny_checkpoint)))


def test_a_teacher_that_learns_from_the_server_share_refuses_an_empty_one() -> None:
    from fedtosc.experiment import load_experiment, load_teacher
    from fedtosc.models.teachers import TeacherError

    experiment = load_experiment(load_config(["dataset.server_fraction=0"]))
    assert len(experiment.plan.server_indices) == 0
    with pytest.raises(TeacherError, match="dataset.server_fraction > 0"):
        load_teacher(experiment, torch.device("cpu"))
