"""A node's own data: an image folder or a .npz of arrays that only this node holds.

An edge box names it in its node config (`data-path=/srv/images`); the server never sees or
indexes it. `read_node_data` checks what the node can check alone (readable, not empty, one
image size) when the SuperNode starts; `resolve_node_data` adds what needs the run (its class
names and the student's input shape) when the server first describes the run. Every refusal is
a NodeDataError naming the file and the fix.

Layouts: `<path>/<class>/*.png|jpg` (every image labelled); `<path>/*.png|jpg` plus an optional
`<path>/labels.csv` (`file,label` rows; files it does not list are unlabelled); a `.npz` with
`images` uint8 [N, H, W] or [N, H, W, C] and optional `labels` [N] (class names, "" unlabelled;
or class indices, -1 unlabelled), read with allow_pickle=False.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedtosc.data.catalog import DatasetError

__all__ = [
    "IMAGE_SUFFIXES", "LABELS_CSV", "UNLABELLED", "NodeDataError", "NodeSamples", "decode_image",
    "read_node_data", "resolve_node_data", "sample_digests", "write_node_folder",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LABELS_CSV = "labels.csv"
UNLABELLED = -1


class NodeDataError(DatasetError):
    """A node's own data cannot be used; the message names the file and how to fix it."""


@dataclass(frozen=True)
class NodeSamples:
    """A node's samples as read from disk, before the run's class list is known.

    `labels` [N]: class names (str, "" unlabelled) or class indices (int, -1 unlabelled);
    `sources` [N]: the file each sample came from (a .npz names itself with the row), for errors.
    """

    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def decode_image(path: Path) -> np.ndarray:
    """One image file as uint8 [C, H, W]: grayscale stays 1 channel, anything else becomes RGB."""
    try:
        with Image.open(path) as image:
            image = image if image.mode == "L" else image.convert("RGB")
            pixels = np.asarray(image)
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise NodeDataError(f"cannot read image {path} ({error}): replace or remove the file") from error
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_node_data(path: Path) -> NodeSamples:
    """Read and check a node's data on its own: NodeDataError for a missing path, an empty folder,
    an unreadable file, mixed image sizes, a labels.csv naming a missing file."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return _read_npz(path)
    if not path.is_dir():
        raise NodeDataError(f"data-path {path} is neither a folder of images nor a .npz file: fix data-path in the node config")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat_files = _image_files(path)
    if class_dirs and flat_files:
        raise NodeDataError(
            f"{path} holds both class folders ({class_dirs[0].name}/, ...) and images ({flat_files[0].name}, ...): "
            "put every image in a class folder, or use a flat folder with labels.csv"
        )
    if class_dirs:
        files = [(file, class_dir.name) for class_dir in class_dirs for file in _image_files(class_dir)]
    else:
        files = _flat_labels(path, flat_files)
    if not files:
        raise NodeDataError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}): copy this node's images there")
    images = [decode_image(file) for file, _ in files]
    for (file, _), pixels in zip(files, images):
        if pixels.shape != images[0].shape:
            raise NodeDataError(
                f"{file} is {_shape_text(pixels.shape)} but {files[0][0]} is {_shape_text(images[0].shape)}: "
                "every image of a node must have one size and channel count"
            )
    return NodeSamples(np.stack(images), np.array([label for _, label in files], dtype=str), tuple(str(f) for f, _ in files))


def resolve_node_data(
    samples: NodeSamples, class_names: Sequence[str], image_shape: tuple[int, int, int]
) -> np.ndarray:
    """int64 labels [N] (UNLABELLED where none) once the run's classes and input shape are known;
    NodeDataError naming the file of the first sample of the wrong shape or with an unknown class."""
    if tuple(samples.images.shape[1:]) != tuple(image_shape):
        raise NodeDataError(
            f"{samples.sources[0]} is {_shape_text(samples.images.shape[1:])}, but this run's student takes "
            f"{_shape_text(image_shape)} images: convert this node's images to that size and channel count"
        )
    if samples.labels.dtype.kind in "iu":
        labels = samples.labels.astype(np.int64)
        bad = np.flatnonzero((labels < UNLABELLED) | (labels >= len(class_names)))
        if len(bad):
            raise NodeDataError(
                f"{samples.sources[bad[0]]}: label {labels[bad[0]]} is not a class index 0..{len(class_names) - 1} "
                f"(or {UNLABELLED} for unlabelled): the run's classes are {list(class_names)}"
            )
        return labels
    index = {name: label for label, name in enumerate(class_names)} | {"": UNLABELLED}
    names = samples.labels.tolist()
    unknown = [row for row, name in enumerate(names) if name not in index]
    if unknown:
        raise NodeDataError(
            f"{samples.sources[unknown[0]]}: class {names[unknown[0]]!r} is not one of this run's classes "
            f"{list(class_names)}: rename the class folder or label, or leave the sample unlabelled"
        )
    return np.array([index[name] for name in names], dtype=np.int64)


def sample_digests(images: np.ndarray) -> np.ndarray:
    """sha256 of each sample's uint8 [C, H, W] bytes: uint8 [N, 32], the key digest delivery looks up."""
    contiguous = np.ascontiguousarray(images, dtype=np.uint8)
    return np.array([np.frombuffer(hashlib.sha256(row.tobytes()).digest(), np.uint8) for row in contiguous]).reshape(-1, 32)


def write_node_folder(folder: Path, images: np.ndarray, labels: Sequence[str]) -> int:
    """Write uint8 [N, C, H, W] samples as a flat folder of PNGs (lossless: read back byte for byte,
    so sample digests match) plus a labels.csv of the labelled ones ("" = unlabelled); returns N."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row, (pixels, label) in enumerate(zip(images, labels)):
        name = f"{row:06d}.png"
        Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(folder / name)
        if label:
            rows.append((name, label))
    with (folder / LABELS_CSV).open("w", newline="") as stream:
        csv.writer(stream).writerows([("file", "label"), *rows])
    return len(images)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _flat_labels(folder: Path, files: list[Path]) -> list[tuple[Path, str]]:
    """(file, class name or "") for a flat folder, from its labels.csv when there is one."""
    labels_csv = folder / LABELS_CSV
    if not labels_csv.is_file():
        return [(file, "") for file in files]
    names = {file.name for file in files}
    labels: dict[str, str] = {}
    with labels_csv.open(newline="") as stream:
        for line, row in enumerate(csv.reader(stream), start=1):
            if line == 1 and row == ["file", "label"] or not row:
                continue
            if len(row) != 2 or row[0] not in names:
                raise NodeDataError(
                    f"{labels_csv} line {line}: {row!r} is not `file,label` naming an image in {folder}: "
                    "fix the row or add the image"
                )
            labels[row[0]] = row[1]
    return [(file, labels.get(file.name, "")) for file in files]


def _read_npz(path: Path) -> NodeSamples:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError) as error:  # a pickled object array is a ValueError with allow_pickle=False
        raise NodeDataError(f"cannot read {path} ({error}): write it with np.savez(images=..., labels=...)") from error
    images = contents.get("images")
    if images is None or images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
        found = "no `images` array" if images is None else f"images {images.dtype} {list(images.shape)}"
        raise NodeDataError(f"{path}: {found}; expected a non-empty uint8 `images` array [N, H, W] or [N, H, W, C]")
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    labels = contents.get("labels", np.full(len(images), "", dtype=str))
    if labels.shape != (len(images),) or labels.dtype.kind not in "iuU":
        raise NodeDataError(
            f"{path}: labels {labels.dtype} {list(labels.shape)} must be [N={len(images)}] class names or class indices"
        )
    return NodeSamples(np.ascontiguousarray(images), labels, tuple(f"{path} row {row}" for row in range(len(images))))


def _shape_text(shape: Sequence[int]) -> str:
    channels, height, width = shape
    return f"{channels}x{height}x{width} (channels x height x width)"
