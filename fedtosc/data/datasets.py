"""Datasets as in-memory image tensors: the embedded digits, image folders, torchvision sets.

Every dataset becomes `ImageDataset` (uint8 images [N, C, H, W], int64 labels) with a
content fingerprint, so teachers and knowledge stores can be keyed by exactly the data
they saw. Nothing is downloaded unless `dataset.download=true`. Decoded image folders are
cached as `.npy` arrays (read with allow_pickle=False) keyed by the folder's file list, sizes
and mtimes, so the JPEGs are decoded once, and again only after a file changes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fedtosc.atomic_write import atomic_path
from fedtosc.config import DatasetConfig
from fedtosc.data.catalog import TORCHVISION_DATASETS, DatasetError, image_folder_classes, require_root
from fedtosc.registries import DATASETS

__all__ = ["DataSplits", "DatasetError", "ImageDataset", "load_dataset", "load_digits", "load_image_folder", "load_torchvision"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

@dataclass(frozen=True)
class ImageDataset:
    """Images as uint8 [N, C, H, W] with int64 labels [N]; index i is the sample's identity.

    `source_index`: int64 [N], each image's index in the split it was loaded from (the digits
    set, a folder's sorted listing, a torchvision split); None means 0..N-1. Subsets keep it, so
    per-image results name the same images whatever caps and splits chose them.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    source_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """sha256 of the pixels, labels and class names: identical data, identical key."""
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.numpy().astype(np.int64).tobytes())
        digest.update("\n".join(self.class_names).encode())
        return digest.hexdigest()[:16]

    @property
    def dataset_indices(self) -> torch.Tensor:
        """int64 [N]: each image's index in the split it was loaded from."""
        return torch.arange(len(self)) if self.source_index is None else self.source_index

    def subset(self, indices: np.ndarray) -> "ImageDataset":
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[index], self.labels[index], self.class_names, self.dataset_indices[index])


@dataclass(frozen=True)
class DataSplits:
    train: ImageDataset
    test: ImageDataset


_TRAIN_CAP_SEED, _TEST_CAP_SEED = 0, 1  # see load_dataset: the caps are part of the dataset


def load_dataset(config: DatasetConfig, seed: int = 0) -> DataSplits:
    """Load the dataset `dataset.name` names (`fedtosc.registries.DATASETS`) as train/test splits,
    capped by max_*_samples.

    The caps are drawn from fixed seeds, not the experiment's: they decide which images the
    dataset has, so every seed shares one teacher store and one test set (paired comparisons
    pool the same images over seeds); the experiment seed decides who holds what.
    """
    splits = DATASETS.get(config.name)(config, seed)
    return DataSplits(
        train=_cap(splits.train, config.max_train_samples, _TRAIN_CAP_SEED),
        test=_cap(splits.test, config.max_test_samples, _TEST_CAP_SEED),
    )


def _cap(dataset: ImageDataset, max_samples: int | None, seed: int) -> ImageDataset:
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    chosen = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:max_samples])
    return dataset.subset(chosen)


def load_digits(config: DatasetConfig, seed: int) -> DataSplits:
    """scikit-learn's 8x8 digits (ships with it: offline); `dataset.test_fraction` held out by `seed`."""
    pixels, targets = digits_arrays()
    # Pixel values are 0..16; scale them to the 0..255 range every other dataset uses.
    images = torch.from_numpy((pixels * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(targets.astype(np.int64))
    order = np.random.default_rng(seed).permutation(len(labels))
    num_test = int(round(len(labels) * config.test_fraction))
    test_index, train_index = np.sort(order[:num_test]), np.sort(order[num_test:])
    full = ImageDataset(images, labels, tuple(str(d) for d in range(10)))
    return DataSplits(train=full.subset(train_index), test=full.subset(test_index))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64, targets [1797] int) as `sklearn.datasets.load_digits` returns them.

    Read from the gzipped CSV scikit-learn ships, as load_digits reads it, without importing
    scikit-learn: that import took 2 s here, in every process that builds an experiment (each
    deployed ClientApp message is one). Where the file is not where scikit-learn 1.x keeps it,
    load_digits itself.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_load_digits

        digits = sklearn_load_digits()
        return digits.images, digits.target
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def load_image_folder(config: DatasetConfig, seed: int) -> DataSplits:
    """`root/train/<class>/*.jpg` and `root/test/<class>/*.jpg`, classes sorted by name."""
    root = require_root(config)
    class_names = image_folder_classes(root)
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else None
    return DataSplits(
        train=_read_split(root / "train", class_names, cache),
        test=_read_split(root / "test", class_names, cache),
    )


def _read_split(split_dir: Path, class_names: tuple[str, ...], cache_dir: Path | None) -> ImageDataset:
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(class_names):
        if not (split_dir / name).is_dir():
            raise DatasetError(f"{split_dir} has no class folder '{name}' (train/ has it): every split needs every class")
        class_files = sorted(p for p in (split_dir / name).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not class_files:
            raise DatasetError(f"class folder {split_dir / name} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        files.extend((path, label) for path in class_files)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    paths = [path for path, _ in files]
    cache_path = cache_dir / f"image_folder-{_listing_key(paths)}.npy" if cache_dir else None
    images = _read_cached(cache_path, len(paths)) if cache_path else None
    if images is None:
        images = _decode_images(paths, split_dir)
        if cache_path:
            _save_atomic(cache_path, images)
    return ImageDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, class_names)


def _listing_key(paths: list[Path]) -> str:
    """sha256 of every file's absolute path, size and mtime: any added, removed or edited file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.absolute()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _read_cached(path: Path, num_images: int) -> np.ndarray | None:
    """The cached uint8 [N, H, W, C] array, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != num_images:
        return None
    return images


def _save_atomic(path: Path, images: np.ndarray) -> None:
    with atomic_path(path) as temp, temp.open("wb") as stream:  # readers see the whole array or none
        np.save(stream, images, allow_pickle=False)


def _decode_images(paths: list[Path], split_dir: Path) -> np.ndarray:
    """Decode every file to RGB uint8 [N, H, W, C]; all images must share one size."""
    with Image.open(paths[0]) as image:
        first_shape = np.asarray(image.convert("RGB")).shape
    images = np.empty((len(paths), *first_shape), dtype=np.uint8)
    for row, path in enumerate(tqdm(paths, desc=f"reading {split_dir}", unit="img", leave=False)):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != first_shape:
            raise DatasetError(f"{path} is {pixels.shape}, but the folder's images are {first_shape}")
        images[row] = pixels
    return images


def load_torchvision(config: DatasetConfig, seed: int) -> DataSplits:
    """A torchvision dataset under `dataset.root` (downloaded only with `dataset.download=true`)."""
    import torchvision

    root = require_root(config)
    dataset_class = getattr(torchvision.datasets, TORCHVISION_DATASETS[config.name][0])
    splits = []
    for train in (True, False):
        kwargs = {"split": "train" if train else "test"} if config.name == "svhn" else {"train": train}
        try:
            raw = dataset_class(str(root), download=config.download, **kwargs)
        except (RuntimeError, OSError) as error:  # missing files; with download=true, also network errors
            fix = (
                "offline? copy the dataset files there, or use dataset.name=image_folder"
                if config.download
                else "set dataset.download=true to fetch it"
            )
            raise DatasetError(f"{config.name} not found under {root} ({error}); {fix}") from error
        splits.append(_from_torchvision(raw))
    return DataSplits(train=splits[0], test=splits[1])


def _from_torchvision(raw) -> ImageDataset:  # noqa: ANN001 - torchvision's dataset classes share no base type
    data = np.asarray(raw.data)
    labels = np.asarray(getattr(raw, "targets", getattr(raw, "labels", None)), dtype=np.int64)
    if data.ndim == 3:  # MNIST-like: [N, H, W]
        data = data[:, None]
    elif data.shape[-1] in (1, 3):  # CIFAR: [N, H, W, C]
        data = data.transpose(0, 3, 1, 2)
    class_names = tuple(getattr(raw, "classes", [str(c) for c in sorted(set(labels.tolist()))]))
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels), class_names)
