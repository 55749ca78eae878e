"""What both Flower roles share: message types, payload (de)serialization, the local data a node holds.

The server owns the resolved config and sends it to every node in the `describe` query;
a node's own facts (partition id, optional channel override) come from its node config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from fedtosc.channels import ChannelProfile, client_profiles
from fedtosc.config import ExperimentConfig, config_from_json
from fedtosc.experiment import Experiment, load_experiment
from fedtosc.knowledge.store import export_slice, import_slice
from fedtosc.data.views import identity_views
from fedtosc.training import LocalData

__all__ = [
    "AGGREGATION_WEIGHT_KEY",
    "DESCRIBE",
    "KNOWLEDGE",
    "NodeFacts",
    "client_profile",
    "config_record",
    "cached_experiment",
    "knowledge_record",
    "local_data",
    "node_facts",
    "nominal_snr_db",
    "payload_bytes",
    "snr_aware_weight",
]

DESCRIBE = "query.describe"
KNOWLEDGE = "query.knowledge"
# Clients report both this and num-examples; the strategy weighs by one of them (strategy.snr_aware).
AGGREGATION_WEIGHT_KEY = "aggregation-weight"


def nominal_snr_db(profile: ChannelProfile) -> float:
    """A client's typical SNR: the fixed value, the uniform range's midpoint, or the Gauss-Markov mean."""
    if profile.snr == "uniform":
        return (profile.snr_low_db + profile.snr_high_db) / 2
    return profile.snr_db


def snr_aware_weight(num_examples: int, profile: ChannelProfile, alpha: float) -> float:
    """num_examples x (1 + alpha * tanh(snr_db / 10)): clients on better links count for more."""
    return num_examples * max(0.05, 1.0 + alpha * math.tanh(nominal_snr_db(profile) / 10.0))


def config_record(config: ExperimentConfig) -> ConfigRecord:
    from fedtosc.config import config_to_json

    return ConfigRecord({"config-json": json.dumps(config_to_json(config))})


@lru_cache(maxsize=2)
def cached_experiment(config_json: str) -> Experiment:
    """Simulated nodes live in long-lived Ray actors: load the dataset once per actor, not per round."""
    return load_experiment(config_from_json(json.loads(config_json)))


@dataclass(frozen=True)
class NodeFacts:
    partition_id: int
    profile: ChannelProfile


def node_facts(context: Context, config: ExperimentConfig) -> NodeFacts:
    """Partition id from the node config; the channel from the node (`channel=...`) or the server's line."""
    node_config = context.node_config
    if "partition-id" not in node_config:
        raise ValueError("this SuperNode has no partition-id: start it with --node-config 'partition-id=N num-partitions=M'")
    partition_id = int(node_config["partition-id"])
    if not 0 <= partition_id < config.federation.num_clients:
        raise ValueError(f"partition-id={partition_id} is outside 0..{config.federation.num_clients - 1} (federation.num_clients)")
    return NodeFacts(partition_id, client_profile(config, partition_id, node_config.get("channel")))


def client_profile(config: ExperimentConfig, partition_id: int, override: object | None = None) -> ChannelProfile:
    if override:
        return client_profiles(config.channel, 1, seed=config.seed + partition_id, spec=str(override))[0]
    return client_profiles(config.channel, config.federation.num_clients, seed=config.seed)[partition_id]


def knowledge_record(store, indices: np.ndarray) -> RecordDict:  # noqa: ANN001 - KnowledgeStore
    arrays, header = export_slice(store, indices)
    return RecordDict(
        {
            "knowledge": ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}),
            "knowledge-header": ConfigRecord(dict(header)),
        }
    )


def payload_bytes(record: RecordDict) -> int:
    """Bytes of array payload in a message (what a link would carry, headers aside)."""
    return sum(len(array.data) for item in record.array_records.values() for array in item.values())


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
        arrays = {name: array.numpy() for name, array in knowledge.array_records["knowledge"].items()}
        header = {name: str(value) for name, value in knowledge.config_records["knowledge-header"].items()}
        received_indices, decoded = import_slice(arrays, header)
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
