"""Strategy factory: FedAvg, FedProx, FedAdam from flwr.serverapp.strategy, chosen by `strategy.name`."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fedtosc.config import ExperimentConfig

__all__ = ["make_strategy"]

TrainMetricsFn = Callable[[list[RecordDict], str], MetricRecord]


def make_strategy(config: ExperimentConfig, train_metrics_fn: TrainMetricsFn) -> FedAvg:
    federation = config.federation
    sampled = max(1, int(federation.num_clients * federation.fraction_train))
    common = {
        "fraction_train": federation.fraction_train,
        # The server evaluates the global student centrally over the SNR sweep instead.
        "fraction_evaluate": 0.0,
        "min_train_nodes": federation.min_train_clients or sampled,
        "min_available_nodes": federation.num_clients,
        "train_metrics_aggr_fn": train_metrics_fn,
    }
    name = config.strategy.name
    if name == "fedprox":
        return FedProx(proximal_mu=config.strategy.proximal_mu, **common)
    if name == "fedadam":
        return FedAdam(eta=config.strategy.server_lr, eta_l=config.train.lr, **common)
    return FedAvg(**common)
