"""Specification of the ResNet teacher: trained once through `fedtosc teacher train`, shipped verified.

A tiny synthetic RGB image folder (three colour classes, 16x16 PNGs, lossless) and a ResNet-20
of base width 4 stand in for CIFAR-10 and width 16, so the real command path (Hydra config,
image-folder loading, training, evaluation, checkpoint) runs in seconds. Everything is written
under pytest's temp dirs. The shipped checkpoint is checked only where the checkout has it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.cli.build import get_filtered_fab_paths
from PIL import Image
from safetensors.torch import save_file

from fedtosc.cli import main
from fedtosc.config import load_config
from fedtosc.data import load_dataset
from fedtosc.data.datasets import ImageDataset
from fedtosc.experiment import load_experiment, load_teacher
from fedtosc.models.resnet import (
    ResNetTeacher,
    crop_flip,
    load_resnet_teacher,
    read_checkpoint,
    tensor_fingerprint,
    train_resnet_teacher,
)
from fedtosc.models.teachers import TeacherError, predict

# Its module fixture builds a teacher: under pytest-xdist (`make test`) the module stays on one
# worker, so that happens once.
pytestmark = pytest.mark.xdist_group("test_teacher_train")

_ROOT = Path(__file__).resolve().parents[1]
_SHIPPED = _ROOT / "teachers" / "resnet20-cifar10.safetensors"
_COLOURS = {"blue": (40, 60, 200), "green": (50, 180, 60), "red": (200, 50, 40)}
_EPOCHS = 2
_WIDTH = 4
_CPU = torch.device("cpu")


def _write_folder(root: Path, per_class: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name, colour in _COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def _overrides(folder: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "teacher=resnet_cifar",
        f"teacher.checkpoint={checkpoint}",
        f"teacher.width={_WIDTH}",
        f"teacher.epochs={_EPOCHS}",
        "teacher.batch_size=16",
        "dataset=cifar10_folder",  # the image-folder group; the root below replaces CIFAR-10
        f"dataset.root={folder}",
        f"dataset.cache_dir={folder.parent / 'decoded'}",
        "device=cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, checkpoint) written by the real `fedtosc teacher train` command."""
    base = tmp_path_factory.mktemp("teacher_train")
    folder, checkpoint = base / "colours", base / "out" / "resnet.safetensors"
    _write_folder(folder, {"train": 24, "test": 8}, seed=0)
    assert main(["teacher", "train", *_overrides(folder, checkpoint, "seed=3")]) == 0
    return folder, checkpoint


def _splits(folder: Path):  # noqa: ANN202 - DataSplits
    return load_dataset(load_config(_overrides(folder, folder / "unused.safetensors")).dataset)


def test_teacher_train_writes_a_checkpoint_describing_the_teacher_its_data_and_its_accuracy(trained) -> None:  # noqa: ANN001
    folder, checkpoint = trained
    info, tensors = read_checkpoint(checkpoint)
    splits = _splits(folder)
    assert (info.architecture, info.width, info.epochs, info.seed) == ("resnet20", _WIDTH, _EPOCHS, 3)
    assert (info.in_channels, info.image_size, info.class_names) == (3, [16, 16], ["blue", "green", "red"])
    # The whole of both splits, whatever the seed.
    assert info.dataset_fingerprint == splits.train.fingerprint()
    assert (info.train_samples, info.test_samples) == (72, 24)
    assert info.train_seconds > 0
    assert info.fingerprint == tensor_fingerprint(tensors)
    teacher = load_resnet_teacher(checkpoint, _CPU)
    logits = predict(teacher, splits.test, 7, _CPU).logits
    assert info.test_accuracy == pytest.approx(float((logits.argmax(1) == splits.test.labels).float().mean()))


def test_loaded_teacher_is_identified_by_its_fingerprint_and_normalizes_with_its_training_statistics(trained) -> None:  # noqa: ANN001
    folder, checkpoint = trained
    info, _ = read_checkpoint(checkpoint)
    teacher = load_resnet_teacher(checkpoint, _CPU)
    assert teacher.teacher_id == f"resnet20-{info.fingerprint[:16]}"
    train = _splits(folder).train
    pixels = train.images.float().div(255.0)
    torch.testing.assert_close(teacher.mean.flatten(), pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(teacher.std.flatten(), pixels.transpose(0, 1).reshape(3, -1).std(dim=1))


def test_training_is_deterministic_given_the_seed(trained) -> None:  # noqa: ANN001
    folder, _ = trained
    config = load_config(_overrides(folder, folder / "unused.safetensors", "teacher.epochs=1")).teacher
    train = _splits(folder).train

    def fingerprint(seed: int) -> str:
        return tensor_fingerprint(train_resnet_teacher(config, train, seed, _CPU).state_dict())

    assert fingerprint(5) == fingerprint(5)
    assert fingerprint(5) != fingerprint(6)


def test_a_flipped_byte_in_the_tensor_data_is_refused_naming_the_file_and_the_fix(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    _, checkpoint = trained
    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(checkpoint.read_bytes())
    header_bytes = int.from_bytes(data[:8], "little")
    data[8 + header_bytes + 100] ^= 0x01  # inside the tensor data: still a valid safetensors file
    corrupt.write_bytes(bytes(data))
    with pytest.raises(TeacherError, match="corrupt or was modified") as raised:
        load_resnet_teacher(corrupt, _CPU)
    assert str(corrupt) in str(raised.value) and "fedtosc teacher train" in str(raised.value)
    assert main(["teacher", "inspect", str(corrupt)]) == 1
    assert "corrupt or was modified" in capsys.readouterr().err


def test_a_file_that_is_not_a_teacher_checkpoint_is_refused(tmp_path: Path) -> None:
    garbage, foreign = tmp_path / "garbage.safetensors", tmp_path / "foreign.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(TeacherError, match="not a readable safetensors file"):
        read_checkpoint(garbage)
    with pytest.raises(TeacherError, match="not a fedtosc teacher checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(TeacherError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_inspect_prints_the_metadata_with_the_fingerprint_verified(trained, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    _, checkpoint = trained
    assert main(["teacher", "inspect", "--json", str(checkpoint)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == dataclasses.asdict(read_checkpoint(checkpoint)[0]) | {"fingerprint_verified": True}


def test_teacher_id_depends_on_the_weights(trained, tmp_path: Path) -> None:  # noqa: ANN001
    _, checkpoint = trained
    info, tensors = read_checkpoint(checkpoint)
    tensors["classifier.bias"] = tensors["classifier.bias"] + 0.5
    changed = tmp_path / "changed.safetensors"
    save_file(tensors, str(changed), metadata=dataclasses.replace(info, fingerprint=tensor_fingerprint(tensors)).to_metadata())
    original_id = load_resnet_teacher(checkpoint, _CPU).teacher_id
    assert load_resnet_teacher(checkpoint, _CPU).teacher_id == original_id
    assert load_resnet_teacher(changed, _CPU).teacher_id != original_id


def test_linear_head_reproduces_classify_and_forward() -> None:
    torch.manual_seed(0)
    teacher = ResNetTeacher(3, 10).eval()
    assert 0.26e6 < teacher.num_params() < 0.28e6  # ResNet-20's published 0.27 M
    outputs = teacher(torch.rand(5, 3, 32, 32))
    weight, bias = teacher.linear_head()
    assert (weight.shape, bias.shape, outputs.embeddings.shape) == ((10, 64), (10,), (5, 64))
    torch.testing.assert_close(outputs.embeddings @ weight.T + bias, teacher.classify(outputs.embeddings))
    torch.testing.assert_close(teacher.classify(outputs.embeddings), outputs.logits)
    weight.zero_()  # a copy: the teacher's head is untouched
    assert teacher.classifier.weight.abs().sum() > 0


def test_crop_flip_gives_padded_windows_shifted_at_most_four_pixels_some_mirrored() -> None:
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognizable
    views = crop_flip(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for image, view in zip(padded, views):
        windows = [image[:, top : top + 8, left : left + 8] for top in range(9) for left in range(9)]
        plain = any(torch.equal(view, window) for window in windows)
        mirrored = any(torch.equal(view, window.flip(2)) for window in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 16 < flips < 48  # about half of 64
    assert torch.equal(views, crop_flip(images, torch.Generator().manual_seed(0)))


def test_experiments_select_the_resnet_teacher_by_its_checkpoint_whatever_the_seed(trained) -> None:  # noqa: ANN001
    folder, checkpoint = trained
    expected = load_resnet_teacher(checkpoint, _CPU).teacher_id
    for seed in (0, 1):
        experiment = load_experiment(load_config(_overrides(folder, checkpoint, f"seed={seed}")))
        assert load_teacher(experiment, _CPU).teacher_id == expected


def test_a_checkpoint_for_other_classes_or_images_is_refused(trained) -> None:  # noqa: ANN001
    _, checkpoint = trained
    digits = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4), tuple("0123"))
    with pytest.raises(TeacherError, match="was trained on images"):
        load_resnet_teacher(checkpoint, _CPU, expect=digits)


def test_teacher_train_needs_the_resnet_teacher_selected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["teacher", "train"]) == 2
    assert "teacher=resnet_cifar" in capsys.readouterr().err


def test_a_relative_checkpoint_path_is_resolved_against_the_checkout() -> None:
    # Flower's ServerApp runs from an app copy without teachers/: the run config must name the file absolutely.
    assert load_config(["teacher=resnet_cifar"]).teacher.checkpoint == str(_SHIPPED)


def test_the_shipped_checkpoint_stays_out_of_the_flower_app_bundle_but_not_out_of_git() -> None:
    config = tomllib.loads((_ROOT / "pyproject.toml").read_text())
    shipped = str(_SHIPPED.relative_to(_ROOT))
    code = ["server/server_app.py", "clients/client_app.py", "fedtosc/cli.py", "conf/teacher/resnet_cifar.yaml"]
    bundled = get_filtered_fab_paths({shipped: b"", **{path: b"" for path in code}}, config)
    assert sorted(bundled) == sorted(code)
    if shutil.which("git") is None or not (_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "-C", str(_ROOT), "check-ignore", "-q", shipped], check=False)
    assert ignored.returncode == 1, f"{shipped} is git-ignored: .gitignore needs an exception for it"


@pytest.mark.skipif(not _SHIPPED.is_file(), reason="the shipped teacher checkpoint is not in this checkout")
def test_the_shipped_checkpoint_verifies_and_is_at_most_10_mb() -> None:
    assert _SHIPPED.stat().st_size <= 10 * 1024 * 1024
    info, _ = read_checkpoint(_SHIPPED)  # raises on a fingerprint mismatch
    assert info.architecture == "resnet20" and len(info.class_names) == 10
    # The claim the README makes for it: at least 80% on the whole 10,000-image test split.
    assert info.test_samples == 10_000 and info.test_accuracy >= 0.80
    assert load_resnet_teacher(_SHIPPED, _CPU).teacher_id == f"resnet20-{info.fingerprint[:16]}"
