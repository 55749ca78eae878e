"""Strategy factory: the screened strategy `strategy.name` names, with what every strategy shares.

Every strategy screens client updates first (server/screening.py). With `strategy.snr_aware`,
clients are weighted by examples times a channel-quality factor instead of examples alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flwr.serverapp.strategy import FedAvg

from fedtosc.config import ExperimentConfig
from fedtosc.federation.weighting import AGGREGATION_WEIGHT_KEY
from fedtosc.registries import STRATEGIES
from server.screening import NodeRecords, ScreeningFn

__all__ = ["make_strategy", "min_successes"]


def make_strategy(
    config: ExperimentConfig,
    on_screened: ScreeningFn,
    nodes: dict[int, dict] | None = None,
    round_offset: int = 0,
    node_records: NodeRecords | None = None,
) -> FedAvg:
    """The screened strategy `strategy.name` names (`fedtosc.registries.STRATEGIES`; all are FedAvg
    subclasses). `on_screened` hears each round's usable replies and rejected
    updates; `nodes` (node id -> its `describe` reply) fixes the order nodes are sampled and
    aggregated in (by partition) and names them in errors; `round_offset` is the rounds a resumed
    run already did; `node_records` (node id -> records) is what its train messages carry besides
    the round's own (the run's description, for a node restarted mid-run)."""
    federation = config.federation
    required = min_successes(config)
    common = {
        "fraction_train": federation.fraction_train,
        # The server evaluates the global student centrally over the SNR sweep instead.
        "fraction_evaluate": 0.0,
        # Flower samples max(fraction x connected, min_train_nodes) and waits, with no time limit,
        # for that many connected nodes: keeping both minimums at min_successes lets a run go on
        # after a node dies instead of hanging.
        "min_train_nodes": required,
        "min_available_nodes": required,
        "weighted_by_key": AGGREGATION_WEIGHT_KEY if config.strategy.snr_aware else "num-examples",
        "min_successes": required,
        "on_screened": on_screened,
        "node_order": _partition_order(nodes or {}),
        "node_label": _node_label(nodes or {}),
        "sampling_seed": config.seed,
        "round_offset": round_offset,
        "node_records": node_records,
        "wire_dtype": federation.wire_dtype,
    }
    return STRATEGIES.get(config.strategy.name).from_config(config, **common)


def min_successes(config: ExperimentConfig) -> int:
    """Usable updates a round needs: `federation.min_train_clients` when set, else
    `federation.min_train_fraction` of the sampled clients, rounded up (half by default: 2 of 3,
    2 of 4, 1 of 2), so a lost node costs a round's share, not the run."""
    federation = config.federation
    if federation.min_train_clients is not None:
        return federation.min_train_clients
    sampled = max(1, int(federation.num_clients * federation.fraction_train))
    return max(1, math.ceil(federation.min_train_fraction * sampled))


def _partition_order(nodes: dict[int, dict]) -> Callable[[int], int]:
    # Unknown nodes (none in practice: every node answered `describe`) sort after the known ones.
    return lambda node_id: int(nodes[node_id]["partition-id"]) if node_id in nodes else len(nodes) + node_id


def _node_label(nodes: dict[int, dict]) -> Callable[[int], str]:
    def label(node_id: int) -> str:
        if node_id not in nodes:
            return f"node {node_id}"
        entry = nodes[node_id]
        return f"node {node_id} (partition {entry['partition-id']}, {entry['channel-profile']})"

    return label
