"""Strategy factory: FedAvg, FedProx, FedAdam from flwr.serverapp.strategy, chosen by `strategy.name`.

Every strategy screens client updates first (server/screening.py). With `strategy.snr_aware`,
clients are weighted by examples times a channel-quality factor instead of examples alone.
"""

from __future__ import annotations

from fedtosc.config import ExperimentConfig
from fedtosc.federation.weighting import AGGREGATION_WEIGHT_KEY
from server.screening import ScreenedFedAdam, ScreenedFedAvg, ScreenedFedProx, ScreeningFn

__all__ = ["make_strategy"]


def make_strategy(config: ExperimentConfig, on_screened: ScreeningFn) -> ScreenedFedAvg:
    """The configured strategy; `on_screened` hears each round's usable replies and rejected updates."""
    federation = config.federation
    min_successes = federation.min_train_clients or max(1, int(federation.num_clients * federation.fraction_train))
    common = {
        "fraction_train": federation.fraction_train,
        # The server evaluates the global student centrally over the SNR sweep instead.
        "fraction_evaluate": 0.0,
        # Flower samples max(fraction x connected, min_train_nodes) and waits, with no time limit,
        # for that many connected nodes: keeping both minimums at min_successes lets a run go on
        # after a node dies instead of hanging.
        "min_train_nodes": min_successes,
        "min_available_nodes": min_successes,
        "weighted_by_key": AGGREGATION_WEIGHT_KEY if config.strategy.snr_aware else "num-examples",
        "min_successes": min_successes,
        "on_screened": on_screened,
    }
    name = config.strategy.name
    if name == "fedprox":
        return ScreenedFedProx(proximal_mu=config.strategy.proximal_mu, **common)
    if name == "fedadam":
        return ScreenedFedAdam(eta=config.strategy.server_lr, eta_l=config.train.lr, **common)
    return ScreenedFedAvg(**common)
