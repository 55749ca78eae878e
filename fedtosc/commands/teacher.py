"""`fedtosc teacher train [key=value ...]` and `fedtosc teacher inspect PATH`.

`train` fits the ResNet teacher (`teacher=resnet_cifar`) once on the whole training split, a
stand-in for a teacher pre-trained on far more data than any client holds, evaluates it on the
whole test split and writes `teacher.checkpoint`. Neither split depends on the experiment's
seed; `seed` only picks the initialization, batch order and augmentation. `inspect` prints a
checkpoint's metadata after re-verifying its tensors against the recorded fingerprint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fedtosc.config import ConfigError, load_config

__all__ = ["register"]

# The whole training split: capping (dataset.max_*_samples) and the digits' own split draw from this
# seed, never the experiment's, so every experiment seed distils the same teacher.
_DATA_SEED = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("teacher", help="train or inspect the shipped ResNet teacher checkpoint")
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train the ResNet teacher on the whole training split; write teacher.checkpoint")
    train.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. teacher=resnet_cifar dataset=cifar10_folder teacher.epochs=30"
    )
    train.set_defaults(func=_train)
    inspect = actions.add_parser("inspect", help="print a teacher checkpoint's metadata and verify its fingerprint")
    inspect.add_argument("path", type=Path, help="a teacher .safetensors checkpoint")
    inspect.add_argument("--json", action="store_true", help="print the metadata as JSON")
    inspect.set_defaults(func=_inspect)


def _train(args: argparse.Namespace) -> int:
    from fedtosc.data import load_dataset
    from fedtosc.experiment import resolve_device
    from fedtosc.models.resnet import train_checkpoint

    config = load_config(args.overrides)
    if config.teacher.name != "resnet" or not config.teacher.checkpoint:
        raise ConfigError(
            f"fedtosc teacher train trains the ResNet teacher; got teacher.name={config.teacher.name}, "
            f"teacher.checkpoint={config.teacher.checkpoint}: add teacher=resnet_cifar (or teacher.name=resnet "
            "teacher.checkpoint=<output file>)"
        )
    path = Path(config.teacher.checkpoint)
    splits = load_dataset(config.dataset, _DATA_SEED)
    device = resolve_device(config.device)
    print(f"training {config.teacher.epochs} epochs on {len(splits.train):,} images ({config.dataset.name}), on {device}")
    info = train_checkpoint(config.teacher, splits, config.dataset.name, config.seed, device, path)
    print(f"wrote {path}")
    _print_info(path, dataclasses.asdict(info))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from fedtosc.models.resnet import read_checkpoint
    from fedtosc.models.teachers import TeacherError

    try:
        info, _ = read_checkpoint(args.path)
    except TeacherError as error:
        print(f"fedtosc: {error}", file=sys.stderr)
        return 1
    description = dataclasses.asdict(info) | {"fingerprint_verified": True}
    if args.json:
        print(json.dumps(description, indent=2, sort_keys=True))
    else:
        _print_info(args.path, description)
    return 0


def _print_info(path: Path, info: dict) -> None:
    rows = [
        ("checkpoint", f"{path} ({path.stat().st_size:,} bytes)"),
        ("architecture", f"{info['architecture']} (width {info['width']})"),
        ("classes", f"{len(info['class_names'])}: {', '.join(info['class_names'])}"),
        ("images", f"{info['in_channels']} x {info['image_size'][0]} x {info['image_size'][1]}"),
        ("training", f"{info['epochs']} epochs, batch {info['batch_size']}, lr {info['lr']}, seed {info['seed']}"),
        ("dataset", f"{info['dataset']} (fingerprint {info['dataset_fingerprint']}), {info['train_samples']:,} train / {info['test_samples']:,} test"),
        ("test accuracy", f"{info['test_accuracy']:.4f}"),
        ("train seconds", f"{info['train_seconds']:.1f}"),
        ("fingerprint", f"{info['fingerprint']} (sha256 of the tensors, verified)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
