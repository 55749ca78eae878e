"""Who a node is: its partition and channel, and the experiment it loads once per process.

The partition id comes from the node config; the channel from the node (`channel=...`) or from
the server's `channel.clients` line, so server and node agree without asking each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from flwr.app import Context

from fedtosc.channels import ChannelProfile, client_profiles
from fedtosc.config import ExperimentConfig, config_from_json
from fedtosc.experiment import Experiment, load_experiment

__all__ = ["NodeFacts", "cached_experiment", "client_profile", "node_facts"]


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
    """A partition's channel: the node's own entry (`override`) if it has one, else its `channel.clients` entry."""
    if override:
        return client_profiles(config.channel, 1, seed=config.seed + partition_id, spec=str(override))[0]
    return client_profiles(config.channel, config.federation.num_clients, seed=config.seed)[partition_id]
