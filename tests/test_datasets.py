"""Specification of dataset loading: image folders (labels, shapes, the decoded-array cache) and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedtosc.config import DatasetConfig
from fedtosc.data import datasets
from fedtosc.data.datasets import DatasetError, load_dataset

_CLASSES = ("cat", "dog")


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 6, 3), value, dtype=np.uint8)).save(path)


def _folder(root: Path) -> Path:
    """train: 3 images per class, test: 2; pixel value = 10 * class + image number."""
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(_CLASSES):
            for number in range(count):
                _write_png(root / split / name / f"{number}.png", 10 * label + number)
    return root


def _config(root: Path, cache: Path) -> DatasetConfig:
    return DatasetConfig(name="image_folder", root=str(root), cache_dir=str(cache))


def test_image_folder_loads_labels_and_shapes(tmp_path: Path) -> None:
    splits = load_dataset(_config(_folder(tmp_path / "data"), tmp_path / "cache"))
    assert splits.train.class_names == _CLASSES
    assert splits.train.images.shape == (6, 3, 8, 6) and splits.train.images.dtype == torch.uint8
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert splits.test.labels.tolist() == [0, 0, 1, 1]
    assert splits.train.images[:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12]


def test_image_folder_cache_is_reused_then_invalidated_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    first = load_dataset(_config(root, cache))
    assert len(list(cache.glob("*.npy"))) == 2  # one array per split

    def no_decoding(*_: object) -> np.ndarray:
        raise AssertionError("decoded again although the folder did not change")

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "_decode_images", no_decoding)
        second = load_dataset(_config(root, cache))
    assert torch.equal(first.train.images, second.train.images)

    changed = root / "train" / "dog" / "2.png"
    _write_png(changed, 99)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    third = load_dataset(_config(root, cache))
    assert third.train.images[5, 0, 0, 0] == 99


def test_image_folder_without_cache_dir_decodes_every_time(tmp_path: Path) -> None:
    config = DatasetConfig(name="image_folder", root=str(_folder(tmp_path / "data")), cache_dir=None)
    assert load_dataset(config).train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_missing_image_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(_config(tmp_path / "nowhere", tmp_path / "cache"))


def test_empty_class_folder_is_a_clear_error(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    for image in (root / "test" / "dog").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(_config(root, tmp_path / "cache"))


def test_torchvision_dataset_missing_without_download_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset.download=true"):
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), download=False))


def test_capped_splits_do_not_depend_on_the_experiment_seed(tmp_path: Path) -> None:
    # One teacher store and one test set serve every seed: the cap is part of the dataset.
    config = _config(_folder(tmp_path / "data"), tmp_path / "cache")
    config.max_train_samples, config.max_test_samples = 4, 3
    splits = [load_dataset(config, seed) for seed in range(4)]
    assert len(splits[0].train) == 4 and len(splits[0].test) == 3
    assert len({s.train.fingerprint() for s in splits}) == 1
    assert len({tuple(s.test.images[:, 0, 0, 0].tolist()) for s in splits}) == 1
