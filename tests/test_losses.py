"""Specification of the IB distillation loss: hand-computed values, the beta = 0 baseline, temperature."""

from __future__ import annotations

import math

import pytest
import torch

from fedtosc.config import LossConfig
from fedtosc.losses import beta_at_round, gaussian_kl, ib_distillation_loss, kd_loss


def _loss(config: LossConfig, beta: float, mu: torch.Tensor, logvar: torch.Tensor, temperature: float = 2.0):
    return ib_distillation_loss(
        config,
        logits=torch.tensor([[1.0, 0.0]]),
        mu=mu,
        logvar=logvar,
        labels=torch.tensor([0]),
        labelled=torch.tensor([True]),
        teacher_probs=torch.tensor([[0.75, 0.25]]),
        temperature=temperature,
        beta=beta,
    )


def test_loss_equals_hand_computed_value() -> None:
    # One sample, two classes, logits (1, 0), label 0, teacher (0.75, 0.25) at T = 2.
    # Student at T = 2: softmax(0.5, 0) = (e^0.5, 1) / (e^0.5 + 1).
    p0 = math.exp(0.5) / (math.exp(0.5) + 1.0)
    p1 = 1.0 / (math.exp(0.5) + 1.0)
    kd = 4.0 * (0.75 * math.log(0.75 / p0) + 0.25 * math.log(0.25 / p1))  # T^2 * KL(t || s_T)
    ce = math.log(1.0 + math.exp(-1.0))  # -log softmax(1, 0)[0]
    # KL(N((0.5, -1), diag(1, 2)) || N(0, I)) = 0.5 * [(0.25 + 1 - 1 - 0) + (1 + 2 - 1 - ln 2)]
    rate = 0.5 * ((0.25 + 1.0 - 1.0 - 0.0) + (1.0 + 2.0 - 1.0 - math.log(2.0)))
    config = LossConfig(kd_weight=1.0, ce_weight=0.5, beta=0.1)
    terms = _loss(config, 0.1, torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, math.log(2.0)]]))
    assert float(terms.kd) == pytest.approx(kd, rel=1e-5)
    assert float(terms.ce) == pytest.approx(ce, rel=1e-5)
    assert float(terms.rate) == pytest.approx(rate, rel=1e-5)
    assert float(terms.total) == pytest.approx(kd + 0.5 * ce + 0.1 * rate, rel=1e-5)


def test_gaussian_kl_is_zero_at_the_prior_and_averages_over_the_batch() -> None:
    assert float(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # per-sample KL 0.5 and 0
    assert float(gaussian_kl(mu, torch.zeros(2, 2))) == pytest.approx(0.25)


def test_beta_zero_removes_the_rate_term() -> None:
    config = LossConfig(kd_weight=1.0, ce_weight=1.0, beta=0.0)
    near_prior = _loss(config, 0.0, torch.zeros(1, 2), torch.zeros(1, 2))
    far_from_prior = _loss(config, 0.0, torch.tensor([[30.0, -20.0]]), torch.tensor([[5.0, -7.0]]))
    assert float(far_from_prior.total) == float(near_prior.total)
    assert float(far_from_prior.rate) == 0.0


def test_kd_scales_by_temperature_squared() -> None:
    # The same distributions at T = 1 and T = 3: the T = 3 loss is 9 times the plain KL.
    student = torch.tensor([[0.3, -0.2, 1.1]])
    teacher_probs = torch.tensor([[0.2, 0.3, 0.5]])
    plain = kd_loss(student, teacher_probs, 1.0)
    softened = kd_loss(3.0 * student, teacher_probs, 3.0)  # student_T identical to the T = 1 case
    assert float(softened) == pytest.approx(9.0 * float(plain), rel=1e-5)


def test_kd_gradient_magnitude_does_not_vanish_with_temperature() -> None:
    # Hinton et al.: with the T^2 factor, d L / d s -> (s - t - mean(s - t)) / C as T grows.
    student = torch.tensor([[0.5, -0.3, 0.1, 0.0]], requires_grad=True)
    teacher_logits = torch.tensor([[0.2, 0.4, -0.1, 0.3]])
    temperature = 50.0
    kd_loss(student, torch.softmax(teacher_logits / temperature, dim=1), temperature).backward()
    difference = (student.detach() - teacher_logits)[0]
    expected = (difference - difference.mean()) / 4
    torch.testing.assert_close(student.grad[0], expected, rtol=2e-2, atol=1e-4)


def test_ce_counts_only_labelled_samples_and_is_zero_without_labels() -> None:
    config = LossConfig(kd_weight=0.0, ce_weight=1.0, beta=0.0)
    common = dict(mu=torch.zeros(2, 2), logvar=torch.zeros(2, 2), teacher_probs=None, temperature=1.0, beta=0.0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    only_first = ib_distillation_loss(config, logits=logits, labels=torch.tensor([0, 0]), labelled=torch.tensor([True, False]), **common)
    assert float(only_first.ce) == pytest.approx(math.log(1.0 + math.exp(-2.0)), rel=1e-5)
    none = ib_distillation_loss(config, logits=logits, labels=torch.tensor([0, 0]), labelled=torch.tensor([False, False]), **common)
    assert float(none.total) == 0.0


def test_beta_anneals_linearly_over_warmup_rounds() -> None:
    config = LossConfig(beta=0.01, beta_warmup_rounds=4)
    assert [beta_at_round(config, r) for r in (1, 2, 4, 9)] == pytest.approx([0.0025, 0.005, 0.01, 0.01])
