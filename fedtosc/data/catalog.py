"""What is knowable about a dataset without loading it: its class count and an image folder's layout.

Pure Python (no torch, no image decoding): config validation asks these questions before any
work, and the loaders (fedtosc.data.datasets) ask the same ones, through the same functions.
"""

from __future__ import annotations

from pathlib import Path

from fedtosc.config import DatasetConfig

__all__ = ["DIGITS_CLASSES", "TORCHVISION_DATASETS", "DatasetError", "image_folder_classes", "num_classes", "require_root"]

DIGITS_CLASSES = 10
# dataset.name -> (torchvision.datasets class, number of classes)
TORCHVISION_DATASETS: dict[str, tuple[str, int]] = {
    "cifar10": ("CIFAR10", 10),
    "cifar100": ("CIFAR100", 100),
    "mnist": ("MNIST", 10),
    "fashion_mnist": ("FashionMNIST", 10),
    "svhn": ("SVHN", 10),
}


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says which path or setting and how to fix it."""


def require_root(config: DatasetConfig) -> Path:
    """`dataset.root`, expanded; DatasetError when the chosen dataset needs one and it is unset."""
    if not config.root:
        raise DatasetError(f"dataset.name={config.name} needs dataset.root=<folder>")
    return Path(config.root).expanduser()


def image_folder_classes(root: Path) -> tuple[str, ...]:
    """The class names of `root/train/<class>/`, sorted; DatasetError naming what the layout lacks."""
    if not root.is_dir():
        raise DatasetError(f"dataset.root={root} does not exist: set dataset.root to a folder holding train/ and test/")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"dataset.root={root} has no '{split}/' subfolder: expected {root}/{split}/<class>/<image>.jpg"
            )
    class_names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not class_names:
        raise DatasetError(f"dataset.root={root}: {root}/train has no class folders")
    return class_names


def num_classes(config: DatasetConfig) -> int | None:
    """The configured dataset's class count, from its layout or the known sets (None for a dataset
    registered elsewhere: only its loader knows); DatasetError when an image folder's layout is
    wrong. A torchvision set's root is checked only when it must hold the files already
    (`dataset.download=false`)."""
    if config.name == "digits":
        return DIGITS_CLASSES
    if config.name != "image_folder" and config.name not in TORCHVISION_DATASETS:
        return None
    root = require_root(config)
    if config.name == "image_folder":
        return len(image_folder_classes(root))
    if not config.download and not root.is_dir():
        raise DatasetError(f"dataset.root={root} does not exist; set dataset.download=true to fetch {config.name} there")
    return TORCHVISION_DATASETS[config.name][1]
