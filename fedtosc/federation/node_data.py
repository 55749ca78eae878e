"""A node's training data: its own samples, with the decoded knowledge the server sent it.

Two sources of samples, one shape of result (`LocalData`): a partition of the server's dataset
(`local_data`, partition delivery: the quick simulation path, also used by centralized training
and the federation benchmark), or the node's own samples (`OwnSamples`: its data-path, or its
partition) with the shared transfer_set / digest payload (`shared_delivery_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict

from fedtosc.data.local import UNLABELLED, read_node_data, resolve_node_data, sample_digests
from fedtosc.data.views import identity_views
from fedtosc.experiment import Experiment
from fedtosc.federation.payloads import TRANSFER_DIGESTS, TRANSFER_IMAGES, TRANSFER_SAMPLES, read_knowledge_record
from fedtosc.knowledge.codecs import Knowledge
from fedtosc.training import LocalData

__all__ = ["OwnSamples", "local_data", "own_samples", "partition_samples", "shared_delivery_data"]


@dataclass(frozen=True)
class OwnSamples:
    """The samples a node trains on that nobody sent it."""

    images: torch.Tensor  # uint8 [n, C, H, W]
    labels: torch.Tensor  # int64 [n]; 0 where unlabelled (masked out by `labelled`)
    labelled: torch.Tensor  # bool [n]: may the label be used?

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, num_classes: int) -> list[int]:
        """Labelled samples per class: reported to the server only when the node config allows it."""
        return torch.bincount(self.labels[self.labelled], minlength=num_classes).tolist()


def own_samples(
    path: Path, class_names: Sequence[str], image_shape: tuple[int, int, int], label_fraction: float, seed: int
) -> OwnSamples:
    """A node's data-path, checked against the run's classes and input shape; the labels it uses are
    a `label_fraction` share of those it has, drawn from `seed`."""
    samples = read_node_data(path)
    labels = torch.from_numpy(resolve_node_data(samples, class_names, image_shape))
    labelled = labels != UNLABELLED
    if label_fraction < 1.0:
        labelled &= torch.from_numpy(np.random.default_rng(seed).random(len(labels)) < label_fraction)
    return OwnSamples(torch.from_numpy(samples.images), labels.clamp(min=0), labelled)


def partition_samples(experiment: Experiment, partition_id: int) -> OwnSamples:
    """A partition of the server's dataset, as a node's own samples (simulation without node folders)."""
    indices = experiment.plan.client_indices[partition_id]
    index = torch.as_tensor(indices)
    train = experiment.splits.train
    return OwnSamples(train.images[index], train.labels[index], torch.as_tensor(experiment.plan.labelled[indices]))


def local_data(experiment: Experiment, partition_id: int, knowledge: RecordDict | None) -> LocalData:
    """Partition delivery: a node's samples (its private partition, then the shared transfer set if
    there is one) with the decoded soft labels of the rows the knowledge covers."""
    plan = experiment.plan
    private = plan.client_indices[partition_id]
    indices = np.concatenate([private, plan.transfer_indices])
    train = experiment.splits.train
    index = torch.as_tensor(indices)
    rows = OwnSamples(train.images[index], train.labels[index], torch.as_tensor(plan.labelled[indices]))
    if knowledge is None:
        return _attach(rows, None, None, 0.0)
    received_indices, decoded = read_knowledge_record(knowledge)
    expected = plan.knowledge_indices(partition_id)
    if not np.array_equal(received_indices, expected):
        raise ValueError(
            f"knowledge slice covers {len(received_indices)} samples, not the {len(expected)} partition "
            f"{partition_id} expects: server and node disagree on the data plan (same dataset, seed and partitioner?)"
        )
    # Transfer-set mode: private rows carry no teacher knowledge (zeros, masked out of the KD terms).
    source = np.concatenate([np.full(len(private), -1), np.arange(len(plan.transfer_indices))]) if len(plan.transfer_indices) else None
    return _attach(rows, decoded, source, experiment.config.knowledge.temperature)


def shared_delivery_data(own: OwnSamples, payload: RecordDict | None, temperature: float) -> LocalData:
    """transfer_set: the node's own rows (CE only), then the broadcast transfer samples (KD only);
    digest: the node's own rows, with knowledge where a row's sha256 matches one the payload carries;
    no payload (knowledge.mode=none): the node's own rows alone."""
    if payload is None:
        return _attach(own, None, None, 0.0)
    samples = payload.array_records[TRANSFER_SAMPLES]
    _, decoded = read_knowledge_record(payload)
    if TRANSFER_IMAGES in samples:
        transfer = torch.from_numpy(samples[TRANSFER_IMAGES].numpy())
        rows = OwnSamples(
            torch.cat([own.images, transfer]),
            torch.cat([own.labels, own.labels.new_zeros(len(transfer))]),  # unlabelled: the transfer set is never CE'd
            torch.cat([own.labelled, torch.zeros(len(transfer), dtype=torch.bool)]),
        )
        return _attach(rows, decoded, np.concatenate([np.full(len(own), -1), np.arange(len(transfer))]), temperature)
    position = {digest.tobytes(): row for row, digest in enumerate(samples[TRANSFER_DIGESTS].numpy())}
    source = np.array([position.get(digest.tobytes(), -1) for digest in sample_digests(own.images.numpy())], dtype=np.int64)
    return _attach(own, decoded, source, temperature)


def _attach(rows: OwnSamples, decoded: Knowledge | None, source: np.ndarray | None, temperature: float) -> LocalData:
    """`rows` with the knowledge of decoded row `source[i]` on row i (none where -1; all rows, in order, when None)."""
    teacher_probs = teacher_embeddings = view_params = with_knowledge = None
    if decoded is not None:
        # Embedding stores carry the teacher's head: their soft labels come from it, on the node.
        teacher_probs, teacher_embeddings = decoded.soft_labels(temperature), decoded.embeddings
        view_params = decoded.view_params
        if view_params is not None:  # K views: rows become [n, K, ...], row-aligned with the images
            views = view_params.shape[1]
            teacher_probs, teacher_embeddings = (
                None if values is None else values.reshape(len(view_params), views, -1)
                for values in (teacher_probs, teacher_embeddings)
            )
        if source is not None:
            covered = torch.as_tensor(source >= 0)
            picked = torch.as_tensor(np.maximum(source, 0))
            with_knowledge = covered
            teacher_probs, teacher_embeddings = (
                None if values is None else torch.where(_rows_mask(covered, values), values[picked], values.new_zeros(()))
                for values in (teacher_probs, teacher_embeddings)
            )
            if view_params is not None:
                # Rows without knowledge are seen as stored.
                identity = identity_views(len(rows), view_params.shape[1], tuple(rows.images.shape[2:]))
                view_params = torch.where(_rows_mask(covered, identity), view_params[picked], identity)
    return LocalData(
        images=rows.images,
        labels=rows.labels,
        labelled=rows.labelled,
        teacher_probs=teacher_probs,
        teacher_embeddings=teacher_embeddings,
        view_params=view_params,
        with_knowledge=with_knowledge,
    )


def _rows_mask(covered: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return covered.reshape(-1, *([1] * (like.dim() - 1)))
