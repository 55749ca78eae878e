"""A node's training data: its samples, with the decoded knowledge of the slice the server sent it.

Used by the ClientApp, by centralized training (pooling every node's data) and by the
federation benchmark's plain loop, so all three train on exactly the same rows and soft labels.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import RecordDict

from fedtosc.data.views import identity_views
from fedtosc.experiment import Experiment
from fedtosc.federation.payloads import read_knowledge_record
from fedtosc.training import LocalData

__all__ = ["local_data"]


def local_data(experiment: Experiment, partition_id: int, knowledge: RecordDict | None) -> LocalData:
    """A node's samples (its private partition, then the shared transfer set if there is one) with
    the decoded soft labels of the rows the knowledge covers."""
    plan = experiment.plan
    private = plan.client_indices[partition_id]
    indices = np.concatenate([private, plan.transfer_indices])
    train = experiment.splits.train
    index = torch.as_tensor(indices)
    teacher_probs = teacher_embeddings = view_params = with_knowledge = None
    if knowledge is not None:
        received_indices, decoded = read_knowledge_record(knowledge)
        expected = plan.knowledge_indices(partition_id)
        if not np.array_equal(received_indices, expected):
            raise ValueError(
                f"knowledge slice covers {len(received_indices)} samples, not the {len(expected)} partition "
                f"{partition_id} expects: server and node disagree on the data plan (same dataset, seed and partitioner?)"
            )
        # Embedding stores carry the teacher's head: their soft labels come from it, on the node.
        teacher_probs = decoded.soft_labels(experiment.config.knowledge.temperature)
        teacher_embeddings = decoded.embeddings
        view_params = decoded.view_params
        if view_params is not None:  # K views: rows become [n, K, ...], row-aligned with the images
            views = view_params.shape[1]
            teacher_probs, teacher_embeddings = (
                None if values is None else values.reshape(len(received_indices), views, -1)
                for values in (teacher_probs, teacher_embeddings)
            )
        if len(plan.transfer_indices):
            # Transfer-set mode: private rows carry no teacher knowledge (zeros, masked out of the KD terms)
            # and are seen as stored.
            with_knowledge = torch.arange(len(indices)) >= len(private)
            teacher_probs, teacher_embeddings = (
                _pad_front(values, len(private)) for values in (teacher_probs, teacher_embeddings)
            )
            if view_params is not None:
                image_size = tuple(train.image_shape[1:])
                view_params = torch.cat([identity_views(len(private), view_params.shape[1], image_size), view_params])
    return LocalData(
        images=train.images[index],
        labels=train.labels[index],
        labelled=torch.as_tensor(plan.labelled[indices]),
        teacher_probs=teacher_probs,
        teacher_embeddings=teacher_embeddings,
        view_params=view_params,
        with_knowledge=with_knowledge,
    )


def _pad_front(values: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    return None if values is None else torch.cat([values.new_zeros(rows, *values.shape[1:]), values])
