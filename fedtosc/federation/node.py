"""Who a node is: its partition slot, channel and samples, and the experiment it loads once per process.

A node either holds its own data (`data-path=...` in its node config; in simulation
`dataset.node_root/node<i>`) or a partition of the server's dataset (`partition-id=N`, the quick
simulation path). Its slot (the partition id, or the one the server assigns in `describe`) seeds
its rounds and picks its `channel.clients` entry unless the node names its own `channel=...`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context

from fedtosc.channels import ChannelProfile, client_profiles
from fedtosc.config import ExperimentConfig, config_from_json
from fedtosc.data import DataPlan, DataSplits, ImageDataset
from fedtosc.experiment import Experiment, load_experiment
from fedtosc.federation.messages import CONFIG_JSON, RUN, RUN_CONFIG
from fedtosc.federation.node_data import OwnSamples, own_samples, partition_samples

__all__ = [
    "NodeFacts", "NodeView", "RUN_CLASS_NAMES", "RUN_FINGERPRINT", "RUN_IMAGE_SHAPE", "RUN_SLOT",
    "cached_experiment", "client_profile", "node_facts", "node_view",
]

# Keys of the `run` record the server sends in `describe`: what a node with its own data needs to
# know of the run without holding the server's dataset, its slot, and the shared payload's fingerprint.
RUN_CLASS_NAMES, RUN_IMAGE_SHAPE, RUN_SLOT, RUN_FINGERPRINT = "class-names", "image-shape", "slot", "payload-fingerprint"
_NODE_CACHE_ROOT = Path("~/.cache/fedtosc/node")  # a node's cache-dir when its node config names none


@lru_cache(maxsize=2)
def cached_experiment(config_json: str) -> Experiment:
    """Simulated nodes live in long-lived Ray actors: load the dataset once per actor, not per round."""
    return load_experiment(config_from_json(json.loads(config_json)))


@dataclass(frozen=True)
class NodeFacts:
    partition_id: int
    profile: ChannelProfile


def node_facts(context: Context, config: ExperimentConfig) -> NodeFacts:
    """The node's slot (its partition-id, else the slot the server assigned) and channel
    (the node's own `channel=...`, else that slot's `channel.clients` entry)."""
    node_config = context.node_config
    if "partition-id" in node_config:
        partition_id = int(node_config["partition-id"])
    elif RUN in context.state.config_records:
        partition_id = int(context.state.config_records[RUN][RUN_SLOT])
    else:
        raise ValueError("this SuperNode has no partition-id and the server has not described the run to it yet")
    if not 0 <= partition_id < config.federation.num_clients:
        raise ValueError(f"partition-id={partition_id} is outside 0..{config.federation.num_clients - 1} (federation.num_clients)")
    return NodeFacts(partition_id, client_profile(config, partition_id, node_config.get("channel")))


def client_profile(config: ExperimentConfig, partition_id: int, override: object | None = None) -> ChannelProfile:
    """A partition's channel: the node's own entry (`override`) if it has one, else its `channel.clients` entry."""
    if override:
        return client_profiles(config.channel, 1, seed=config.seed + partition_id, spec=str(override))[0]
    return client_profiles(config.channel, config.federation.num_clients, seed=config.seed)[partition_id]


@dataclass(frozen=True)
class NodeView:
    """One node's view of the run: the experiment (without the server's dataset when the node has
    its own data), its facts, its own samples (None in partition delivery), and its payload cache."""

    experiment: Experiment
    facts: NodeFacts
    own: OwnSamples | None
    cache_dir: Path
    fingerprint: str  # the shared payload's ("" in partition delivery)

    def describe(self, share_class_counts: bool) -> ConfigRecord:
        """What the server learns of this node: counts and its channel profile, class counts only if allowed."""
        plan = self.experiment.plan
        own = self.own
        if own is None:
            labelled = plan.labelled[plan.client_indices[self.facts.partition_id]]
            num_examples, num_labelled = len(labelled), int(labelled.sum())
        else:
            num_examples, num_labelled = len(own), int(own.labelled.sum())
        reply = {
            "partition-id": self.facts.partition_id,
            "channel-profile": self.facts.profile.describe(),
            "num-examples": num_examples,
            "num-labelled": num_labelled,
        }
        if share_class_counts and own is not None:
            reply["class-counts"] = json.dumps(own.class_counts(len(self.experiment.splits.train.class_names)))
        return ConfigRecord(reply)


def node_view(context: Context) -> NodeView:
    """This node's view, from its node config and what the server sent in `describe`."""
    records = context.state.config_records
    config_json = str(records[RUN_CONFIG][CONFIG_JSON])
    run = records[RUN]
    node_config = context.node_config
    data_path = _data_path(node_config, json.loads(config_json)["dataset"]["node_root"])
    if data_path is None:
        experiment = cached_experiment(config_json)
        facts = node_facts(context, experiment.config)
        # Partition delivery trains on the dataset's rows as the knowledge slice indexes them (local_data).
        own = None if experiment.config.knowledge.delivery == "partition" else partition_samples(experiment, facts.partition_id)
    else:
        experiment = _experiment_without_dataset(config_json, str(run[RUN_CLASS_NAMES]), str(run[RUN_IMAGE_SHAPE]))
        _check_own_data_fits(experiment.config, data_path)
        facts = node_facts(context, experiment.config)
        label_fraction = float(node_config.get("label-fraction", 1.0))
        if not 0 < label_fraction <= 1:
            raise ValueError(f"label-fraction={label_fraction} in the node config must be in (0, 1]")
        own = _cached_own_samples(
            str(data_path), str(run[RUN_CLASS_NAMES]), str(run[RUN_IMAGE_SHAPE]), label_fraction, experiment.config.seed
        )
    # The node's own place, not the server's knowledge.cache_dir (a path on another box); one per data
    # folder, so simulated nodes sharing a machine keep separate caches as separate boxes would.
    cache_key = str(data_path) if data_path is not None else f"partition-{facts.partition_id}"
    default_cache = _NODE_CACHE_ROOT / hashlib.sha256(cache_key.encode()).hexdigest()[:16]
    cache_dir = Path(str(node_config.get("cache-dir", default_cache))).expanduser()
    return NodeView(experiment, facts, own, cache_dir, str(run.get(RUN_FINGERPRINT, "")))


def _check_own_data_fits(config: ExperimentConfig, data_path: Path) -> None:
    knowledge = config.knowledge
    if knowledge.mode == "online" or (knowledge.mode == "prestored" and knowledge.delivery == "partition"):
        raise ValueError(
            f"this node holds its own data ({data_path}), which the server cannot index or run its teacher on: "
            "run with knowledge.delivery=transfer_set (or digest), or knowledge.mode=none"
        )


def _data_path(node_config: dict, node_root: str | None) -> Path | None:
    if "data-path" in node_config:
        return Path(str(node_config["data-path"])).expanduser()
    if node_root is not None:
        if "partition-id" not in node_config:
            raise ValueError("dataset.node_root needs a partition-id per node (simulation); a SuperNode names its data-path")
        return Path(node_root).expanduser() / f"node{int(node_config['partition-id'])}"
    return None


@lru_cache(maxsize=2)
def _experiment_without_dataset(config_json: str, class_names_json: str, image_shape_json: str) -> Experiment:
    """The run as a node with its own data sees it: the config, the classes and input shape, no samples."""
    config = config_from_json(json.loads(config_json))
    class_names, image_shape = tuple(json.loads(class_names_json)), tuple(json.loads(image_shape_json))
    none = ImageDataset(torch.zeros((0, *image_shape), dtype=torch.uint8), torch.zeros(0, dtype=torch.long), class_names)
    no_rows = np.zeros(0, dtype=np.int64)
    return Experiment(config, DataSplits(none, none), DataPlan(no_rows, [], np.zeros(0, dtype=bool), no_rows), "")


@lru_cache(maxsize=2)
def _cached_own_samples(
    data_path: str, class_names_json: str, image_shape_json: str, label_fraction: float, seed: int
) -> OwnSamples:
    """Read once per process (a simulated node's Ray actor serves many rounds)."""
    return own_samples(Path(data_path), json.loads(class_names_json), tuple(json.loads(image_shape_json)), label_fraction, seed)
