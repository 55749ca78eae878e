"""The teachers an experiment can name (`teacher.name`, `fedtosc.registries.TEACHERS`), each built
from the experiment it serves: `(experiment, device) -> Teacher`.

A teacher that learns from labels sees the server's labelled share only (`plan.server_indices`),
never a client's data; a shipped checkpoint sees nothing of the experiment but its class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedtosc.models.resnet import load_resnet_teacher
from fedtosc.models.teachers import Teacher, TeacherError, build_clip_teacher, load_or_train_server_teacher

if TYPE_CHECKING:  # the experiment module imports this one's registry entries by name
    from fedtosc.experiment import Experiment

__all__ = ["clip_teacher", "resnet_teacher", "server_cnn_teacher"]


def server_cnn_teacher(experiment: Experiment, device: torch.device) -> Teacher:
    """A CNN trained on the server's labelled share, cached by a fingerprint of its data and config."""
    config = experiment.config
    return load_or_train_server_teacher(config.teacher, _server_data(experiment), config.seed, device)


def clip_teacher(experiment: Experiment, device: torch.device) -> Teacher:
    """open_clip with a zero-shot head from the dataset's prompts, or a linear probe on the server's share."""
    config = experiment.config
    train = experiment.splits.train
    labelled = _server_data(experiment) if config.teacher.head == "linear_probe" else None  # zero-shot reads no labels
    return build_clip_teacher(
        config.teacher, train.class_names, device, labelled=labelled, dataset_name=config.dataset.name
    )


def resnet_teacher(experiment: Experiment, device: torch.device) -> Teacher:
    """A ResNet trained once by `fedtosc teacher train` and shipped: nothing seed-dependent."""
    checkpoint = experiment.config.teacher.checkpoint
    if not checkpoint:
        raise TeacherError("teacher.name=resnet needs teacher.checkpoint=<file> (`fedtosc teacher train` writes one)")
    return load_resnet_teacher(Path(checkpoint), device, expect=experiment.splits.train)


def _server_data(experiment: Experiment):  # noqa: ANN202 - an ImageDataset
    if not len(experiment.plan.server_indices):
        raise TeacherError(
            f"teacher.name={experiment.config.teacher.name} learns from the server's labelled share, which "
            "dataset.server_fraction=0 leaves empty: set dataset.server_fraction > 0 (e.g. 0.3)"
        )
    return experiment.splits.train.subset(experiment.plan.server_indices)
