"""Specification of the baselines (conf/method) and of `fedtosc train`, on the embedded digits.

Every method runs a training step with what it claims to use, checked on the built student and
the loss, not only on the key: teacher knowledge (pre-stored, online or none), the IB rate term,
the channel-use penalty, the SNR gate, the learned rate controller and the receiver's channel
state. `fedtosc train` writes the same run directory as a federated run.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtosc.centralized import pooled_client_data
from fedtosc.channels import client_profiles
from fedtosc.cli import main
from fedtosc.config import load_config
from fedtosc.experiment import embedding_width, ensure_knowledge, experiment_student, load_experiment, load_teacher
from fedtosc.results import RESULTS_KEYS
from fedtosc.training import LocalData, train_student

# Its module fixture builds a teacher: under pytest-xdist (`make test`) the module stays on one
# worker, so that happens once.
pytestmark = pytest.mark.xdist_group("test_baselines")

_TINY = ["student.width=4", "student.feature_dim=16", "train.batch_size=32", "teacher.width=4", "teacher.epochs=1"]
_CPU = torch.device("cpu")


def _config(tmp: Path, method: str):
    return load_config([*_TINY, f"method={method}", f"teacher.cache_dir={tmp}/teachers", f"knowledge.cache_dir={tmp}/knowledge"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one teacher and store shared by every method


# What each method turns off (docs/architecture.md, "Baselines"): a missing entry means "kept".
_OFF: dict[str, set[str]] = {
    "full": set(),
    "labels_only": {"knowledge"},
    "online_kd": {"prestored"},
    "no_adaptive": {"gate", "controller", "receiver_state"},
    "no_ib": {"ib"},
    "fixed_rate": {"controller"},
}


@pytest.mark.parametrize("method", sorted(_OFF))
def test_each_baseline_trains_one_step_with_what_it_claims(method: str, cache: Path) -> None:
    config = _config(cache, method)
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, _CPU)
    store = ensure_knowledge(experiment, teacher, _CPU)
    pooled = pooled_client_data(experiment, store if config.knowledge.mode == "prestored" else None)
    batch = LocalData(**{f.name: None if getattr(pooled, f.name) is None else getattr(pooled, f.name)[:32] for f in fields(LocalData)})
    student = experiment_student(experiment, embedding_width(config, store))
    before = [p.detach().clone() for p in student.parameters()]
    profile = client_profiles(config.channel, config.federation.num_clients)[0]
    metrics = train_student(
        student, batch, profile=profile, channel=profile.make_channel(), config=config, server_round=1,
        generator=torch.Generator().manual_seed(0), device=_CPU,
        online_teacher=teacher if config.knowledge.mode == "online" else None,
    )
    off = _OFF[method]
    assert all(math.isfinite(value) for value in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert (metrics["train_kd"] > 0) == ("knowledge" not in off)
    assert (config.knowledge.mode == "prestored") == ("knowledge" not in off and "prestored" not in off)
    assert (config.loss.beta > 0) == (metrics["train_rate"] > 0) == ("ib" not in off)
    assert config.loss.rate_weight > 0 and metrics["train_channel_uses"] > 0  # the penalty is never off
    assert (student.snr_gate is not None) == ("gate" not in off)
    assert (student.rate is not None) == ("controller" not in off)
    state_inputs = 2 * config.student.channel_uses  # each symbol's SNR and whether it was sent
    expected_inputs = 2 * config.student.channel_uses + (0 if "receiver_state" in off else state_inputs)
    assert student.decoder[0].in_features == expected_inputs


@pytest.mark.slow  # trains a teacher and a student, sweeps SNRs, times the encoder: ~10 s of CPU
def test_fedtosc_train_writes_the_run_directory_of_a_federated_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    code = main([
        "train", *_TINY, "federation.rounds=2", "train.local_epochs=1", "channel.eval_snr_db=[0,10]",
        f"output_dir={run_dir}", f"teacher.cache_dir={tmp_path}/t", f"knowledge.cache_dir={tmp_path}/k",
    ])
    assert code == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert set(RESULTS_KEYS) <= set(results)
    assert results["federation"]["mode"] == "centralized"
    assert set(results["accuracy_vs_snr"]) == {"awgn", "rayleigh"}
    assert set(results["channel_uses"]) == {"0.0", "10.0"}
    assert 0.0 <= results["teacher"]["accuracy"] <= 1.0
    assert results["student"]["params"] > 0 and results["student"]["encoder_latency_ms_batch1"] > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]  # one line per epoch
    for name in ("config.yaml", "accuracy_vs_snr.png", "channel_uses.png", "student.safetensors"):
        assert (run_dir / name).stat().st_size > 0
    assert "teacher accuracy" in capsys.readouterr().out


def test_pooled_data_is_every_client_partition_with_its_knowledge(cache: Path) -> None:
    config = _config(cache, "full")
    experiment = load_experiment(config)
    store = ensure_knowledge(experiment, load_teacher(experiment, _CPU), _CPU)
    pooled = pooled_client_data(experiment, store)
    indices = torch.as_tensor(np.concatenate(experiment.plan.client_indices))
    assert torch.equal(pooled.labels, experiment.splits.train.labels[indices])
    torch.testing.assert_close(pooled.teacher_probs, store.decode(indices.numpy()).probs)
