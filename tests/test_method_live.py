"""Every part of the method does real work, on the embedded digits: each knowledge codec sends
gradient into the student, embedding stores carry the teacher's head, the learned rate
controller answers to its penalty, and distillation beats labels alone at 10% labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fedtosc.centralized import pooled_client_data
from fedtosc.channels import build_channel, client_profiles, seed_channels
from fedtosc.config import ConfigError, ExperimentConfig, load_config
from fedtosc.data.views import apply_views
from fedtosc.evaluation import accuracy_at_snr
from fedtosc.experiment import embedding_width, ensure_knowledge, experiment_student, load_experiment, load_teacher
from fedtosc.losses import ib_distillation_loss
from fedtosc.training import LocalData, train_student

# Its tests build stores of several codecs into the session's knowledge cache: under pytest-xdist
# (`make test`) the module stays on one worker, so each is built once.
pytestmark = pytest.mark.xdist_group("test_method_live")

_CPU = torch.device("cpu")
_EVAL_SNR_DB = (-5.0, 0.0, 5.0, 10.0, 20.0)


def _config(teacher: list[str], *overrides: str) -> ExperimentConfig:
    """`teacher`: the session's teacher and knowledge cache (conftest.py), shared with the Flower runs."""
    return load_config([*teacher, *overrides])


def _prepared(config: ExperimentConfig):  # noqa: ANN202
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, _CPU)
    store = ensure_knowledge(experiment, teacher, _CPU)
    data = pooled_client_data(experiment, store if config.knowledge.mode == "prestored" else None)
    return experiment, teacher, store, data


def _knowledge_gradient(config: ExperimentConfig, experiment, store, data: LocalData) -> torch.Tensor:  # noqa: ANN001
    """Gradient of the knowledge terms alone (KD and feature) on the encoder's first layer."""
    torch.manual_seed(0)
    seed_channels(0)
    student = experiment_student(experiment, embedding_width(config, store)).train()
    rows = torch.arange(64)
    images = data.images[rows].float().div(255.0)
    output = student(images, 10.0, build_channel("awgn"))
    terms = ib_distillation_loss(
        dataclasses.replace(config.loss, ce_weight=0.0, beta=0.0, rate_weight=0.0),
        logits=output.logits, mu=output.mu, logvar=output.logvar, labels=data.labels[rows],
        labelled=torch.zeros(64, dtype=torch.bool), teacher_probs=data.teacher_probs[rows],
        temperature=config.knowledge.temperature, beta=0.0, channel_uses=output.channel_uses,
        projected=output.projected,
        teacher_embeddings=None if data.teacher_embeddings is None else data.teacher_embeddings[rows],
    )
    terms.total.backward()
    return student.encoder.layers[0][0].weight.grad.clone(), terms


@pytest.mark.parametrize("codec", ["topk", "full", "int8_embedding", "pca_embedding"])
def test_each_codec_sends_gradient_from_its_knowledge_into_the_student(digits_teacher: list[str], codec: str) -> None:
    config = _config(digits_teacher, f"knowledge={codec}")
    experiment, _, store, data = _prepared(config)
    gradient, terms = _knowledge_gradient(config, experiment, store, data)
    assert gradient.abs().sum() > 0 and float(terms.kd.detach()) > 0
    # The gradient comes from the knowledge itself: other (shuffled) knowledge gives another one.
    shuffle = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    shuffled = dataclasses.replace(
        data,
        teacher_probs=data.teacher_probs[shuffle],
        teacher_embeddings=None if data.teacher_embeddings is None else data.teacher_embeddings[shuffle],
    )
    other, _ = _knowledge_gradient(config, experiment, store, shuffled)
    assert not torch.allclose(gradient, other)
    is_embedding = codec.endswith("embedding")
    assert (data.teacher_embeddings is not None) == is_embedding
    assert (float(terms.feature.detach()) > 0) == is_embedding


def test_embedding_store_soft_labels_are_the_teacher_heads_on_decoded_embeddings(digits_teacher: list[str]) -> None:
    config = _config(digits_teacher, "knowledge=int8_embedding")
    experiment, teacher, store, data = _prepared(config)
    weight, bias = teacher.linear_head()
    expected = torch.softmax((data.teacher_embeddings @ weight.T + bias) / config.knowledge.temperature, dim=1)
    torch.testing.assert_close(data.teacher_probs, expected)
    head_bytes = weight.numel() * 4 + bias.numel() * 4
    assert sum(array.nbytes for name, array in store.shared().items() if name.startswith("teacher_head")) == head_bytes


def test_pca_dim_beyond_the_teacher_embedding_width_is_named_before_the_build(digits_teacher: list[str], tmp_path: Path) -> None:
    config = _config(digits_teacher, "knowledge=pca_embedding", "knowledge.pca_dim=4096", f"knowledge.cache_dir={tmp_path}")
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, _CPU)
    width = teacher.linear_head()[0].shape[1]
    assert width < 4096
    with pytest.raises(ConfigError, match=rf"knowledge.pca_dim=4096 exceeds the teacher's embedding width {width}\b"):
        ensure_knowledge(experiment, teacher, _CPU)
    assert not list(tmp_path.iterdir())


def _train_centralized(config: ExperimentConfig, epochs: int):  # noqa: ANN202
    """A student trained on the pooled client data through every client's link, as `fedtosc train`."""
    experiment, teacher, store, data = _prepared(config)
    profiles = client_profiles(config.channel, config.federation.num_clients, seed=config.seed)
    torch.manual_seed(config.seed)
    student = experiment_student(experiment, embedding_width(config, store))
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, epochs + 1):
        seed_channels(epoch)
        train_student(
            student, data, profile=profiles, channel=[p.make_channel() for p in profiles], config=config,
            server_round=epoch, generator=generator, device=_CPU,
        )
    return experiment, student.eval()


def test_raising_the_rate_penalty_lowers_the_symbols_sent_and_the_schedule_is_learned(digits_teacher: list[str]) -> None:
    schedules = {}
    for weight in (0.0, 0.5):
        config = _config(digits_teacher, f"loss.rate_weight={weight}", "train.local_epochs=1")
        _, student = _train_centralized(config, epochs=4)
        schedules[weight] = student.rate.active_uses(torch.tensor(_EVAL_SNR_DB))
    assert _mean_uses_of(schedules[0.5]) < _mean_uses_of(schedules[0.0])
    # Not the old hard-coded ramp (all symbols at <= 0 dB, linearly down to the floor at >= 20 dB).
    n, floor = config.student.channel_uses, config.student.min_channel_uses
    ramp = [round(n - min(max(snr / 20.0, 0.0), 1.0) * (n - floor)) for snr in _EVAL_SNR_DB]
    assert schedules[0.5].tolist() != ramp


def _mean_uses_of(schedule: torch.Tensor) -> float:
    return float(schedule.float().mean())


def _accuracy(experiment, student, snr_db: float) -> float:  # noqa: ANN001
    seed_channels(0)
    accuracy, _ = accuracy_at_snr(student, experiment.splits.test, build_channel("awgn"), snr_db, 512, _CPU)
    return accuracy


def test_with_ten_percent_labels_distillation_beats_labels_only_by_ten_points(digits_teacher: list[str]) -> None:
    accuracy = {}
    for method in ("full", "labels_only"):
        config = _config(digits_teacher, f"method={method}", "dataset.label_fraction=0.1", "train.local_epochs=1")
        experiment, student = _train_centralized(config, epochs=4)
        accuracy[method] = _accuracy(experiment, student, 20.0)
    assert accuracy["full"] >= accuracy["labels_only"] + 0.10, accuracy


def test_a_client_replays_the_views_the_teacher_labelled(digits_teacher: list[str]) -> None:
    config = _config(digits_teacher, "knowledge=full", "knowledge.views=3")
    experiment, teacher, _, data = _prepared(config)
    assert data.view_params.shape == (len(data), 3, 5) and data.teacher_probs.shape[:2] == (len(data), 3)
    rows, view = torch.arange(16), torch.arange(16) % 3
    images = apply_views(data.images[rows], data.view_params[rows, view])
    with torch.inference_mode():
        expected = torch.softmax(teacher(images).logits / config.knowledge.temperature, dim=1)
    torch.testing.assert_close(data.teacher_probs[rows, view], expected, atol=2e-3, rtol=0)
    assert not torch.allclose(data.teacher_probs[:, 1], data.teacher_probs[:, 2])  # the views differ
