"""The `strategy` config group changes what it says: each file selects its Flower strategy with
its own parameters, `strategy.snr_aware` changes the aggregation weights, and FedProx's proximal
term holds a client's update near the global model."""

from __future__ import annotations

import pytest
import torch

from fedtosc.channels import client_profiles
from fedtosc.config import load_config
from fedtosc.experiment import experiment_student, load_experiment
from fedtosc.federation.node_data import local_data
from fedtosc.federation.weighting import AGGREGATION_WEIGHT_KEY
from fedtosc.training import train_student
from server.screening import ScreenedFedAdam, ScreenedFedAvg, ScreenedFedProx
from server.strategies import make_strategy


def _strategy(*overrides: str):  # noqa: ANN202
    return make_strategy(load_config(list(overrides)), lambda rnd, accepted, rejected: None)


@pytest.mark.parametrize(
    ("name", "expected_type"),
    [("fedavg", ScreenedFedAvg), ("fedprox", ScreenedFedProx), ("fedadam", ScreenedFedAdam)],
)
def test_each_strategy_file_selects_its_screened_flower_strategy(name: str, expected_type: type) -> None:
    strategy = _strategy(f"strategy={name}")
    assert type(strategy) is expected_type
    assert strategy.weighted_by_key == "num-examples"


def test_strategy_parameters_reach_the_flower_strategy() -> None:
    assert _strategy("strategy=fedprox", "strategy.proximal_mu=0.5").proximal_mu == 0.5
    fedadam = _strategy("strategy=fedadam", "strategy.server_lr=0.03", "train.lr=0.002")
    assert (fedadam.eta, fedadam.eta_l) == (0.03, 0.002)


def test_snr_aware_aggregation_weighs_by_the_channel_quality_key() -> None:
    assert _strategy("strategy.snr_aware=true").weighted_by_key == AGGREGATION_WEIGHT_KEY


def test_fedprox_term_keeps_a_client_update_nearer_the_global_model(tmp_path) -> None:  # noqa: ANN001
    distances = {}
    for mu in (0.0, 10.0):
        config = load_config([
            "strategy=fedprox", f"strategy.proximal_mu={mu}", "knowledge.mode=none", "loss.kd_weight=0",
            "train.local_epochs=1", f"teacher.cache_dir={tmp_path}/t", f"knowledge.cache_dir={tmp_path}/k",
        ])
        experiment = load_experiment(config)
        torch.manual_seed(0)
        student = experiment_student(experiment, None)
        start = [p.detach().clone() for p in student.parameters()]
        profile = client_profiles(config.channel, config.federation.num_clients)[0]
        train_student(
            student, local_data(experiment, 0, None), profile=profile, channel=profile.make_channel(), config=config,
            server_round=1, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
            proximal_reference=start,
        )
        distances[mu] = sum(float((p - s).pow(2).sum()) for p, s in zip(student.parameters(), start))
    assert distances[10.0] < distances[0.0]
