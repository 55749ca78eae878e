"""Everything knowable about a config before any work, checked in one place.

`load_config` checks keys, types and ranges; this module checks the config against the machine
and against itself, the things that would otherwise fail only after the teacher has trained:
the dataset's root and layout, the simulated nodes' folders, `knowledge.k` and `teacher.class_names` against the dataset's
class count, the teacher checkpoint, keys that have no effect for the chosen entry, and that the
output and cache folders can be written. Every command that takes a config calls
:func:`load_checked_config` (or :func:`check_before_work` on a config it already holds).

Pure Python and the file system only: no torch, no dataset loading, nothing left on disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fedtosc.config import ConfigError, ExperimentConfig, config_value, load_config
from fedtosc.data.catalog import TORCHVISION_DATASETS, DatasetError, num_classes

__all__ = ["check_before_work", "check_writable", "load_checked_config"]

# Keys that only one kind of entry reads: set to anything but their default elsewhere, they would
# be silently ignored (e.g. dataset.root for digits), so they are refused, naming the key.
# key -> (the config's choice that decides, the choices that read the key)
_ONLY_FOR: dict[str, tuple[str, tuple[str, ...]]] = {
    "dataset.root": ("dataset.name", ("image_folder", *TORCHVISION_DATASETS)),
    "dataset.download": ("dataset.name", tuple(TORCHVISION_DATASETS)),
    "teacher.checkpoint": ("teacher.name", ("clip", "resnet")),
    "teacher.pretrained": ("teacher.name", ("clip",)),
    "knowledge.pca_dim": ("knowledge.codec", ("pca_embedding",)),
}

# How to supply a missing teacher checkpoint, by teacher.
_CHECKPOINT_FIX = {
    "clip": "point it at an open_clip weights file",
    "resnet": "train one with `fedtosc teacher train teacher=resnet_cifar dataset=cifar10_folder`",
}


def load_checked_config(overrides: list[str] | None = None, output: Path | None = None) -> ExperimentConfig:
    """`load_config(overrides)`, then :func:`check_before_work` with `output` (a run directory)."""
    config = load_config(overrides)
    check_before_work(config, output)
    return config


def check_before_work(config: ExperimentConfig, output: Path | None = None) -> None:
    """Raise ConfigError naming the key, its value and the fix for the first problem found.

    `output`: the folder the command will write (a run or study directory), checked writable
    together with the teacher, knowledge and dataset caches.
    """
    _check_no_effect_keys(config)
    try:
        classes = num_classes(config.dataset)
    except DatasetError as error:
        raise ConfigError(str(error)) from error
    dataset = f"dataset.name={config.dataset.name}"
    if classes is not None and config.knowledge.codec == "topk" and config.knowledge.k > classes:
        raise ConfigError(f"knowledge.k={config.knowledge.k} exceeds the {classes} classes of {dataset}; set knowledge.k<={classes}")
    names = config.teacher.class_names
    if classes is not None and names is not None and len(names) != classes:
        raise ConfigError(f"teacher.class_names has {len(names)} names but {dataset} has {classes} classes; give {classes} or null")
    if config.teacher.checkpoint and config.teacher.name in _CHECKPOINT_FIX:
        checkpoint = Path(config.teacher.checkpoint).expanduser()
        if not checkpoint.is_file():
            raise ConfigError(f"teacher.checkpoint={checkpoint} is not a file; {_CHECKPOINT_FIX[config.teacher.name]}")
    if config.dataset.node_root is not None:
        missing = [f"node{i}" for i in range(config.federation.num_clients) if not (Path(config.dataset.node_root) / f"node{i}").is_dir()]
        if missing:
            raise ConfigError(
                f"dataset.node_root={config.dataset.node_root} has no {', '.join(missing)}/: write them with "
                f"`fedtosc data split --out {config.dataset.node_root} federation.num_clients={config.federation.num_clients}`"
            )
    folders = {"teacher.cache_dir": config.teacher.cache_dir, "knowledge.cache_dir": config.knowledge.cache_dir}
    if config.dataset.cache_dir and config.dataset.name == "image_folder":
        folders["dataset.cache_dir"] = config.dataset.cache_dir
    for key, folder in folders.items():
        check_writable(Path(folder).expanduser(), key)
    if output is not None:
        check_writable(output, "output_dir")


def check_writable(folder: Path, key: str) -> None:
    """ConfigError naming `key` unless `folder` exists and is writable or can be created.

    Probes by creating and removing a file in the folder or, when it does not exist yet, in its
    nearest existing ancestor (where creating it would happen); nothing is left behind.
    """
    folder = folder.expanduser().absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}={folder}: {existing} is not a folder; choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".fedtosc-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"{key}={folder} cannot be written ({error.strerror} in {existing}); choose a writable path") from error


def _check_no_effect_keys(config: ExperimentConfig) -> None:
    defaults = ExperimentConfig()
    for key, (chooser, readers) in _ONLY_FOR.items():
        value, choice = config_value(config, key), config_value(config, chooser)
        if value != config_value(defaults, key) and choice not in readers:
            raise ConfigError(f"{key}={value} has no effect with {chooser}={choice} (only with {', '.join(readers)}); remove it")

