r"""The information-bottleneck distillation objective.

Let x be the input, z ~ q(z|x) the transmitted features (the variational head's Gaussian
with mean mu and variance exp(logvar)), y_hat the received, equalized version of z, and t the
teacher's soft labels. The IB Lagrangian asks the received features to carry the task while
the encoder sends as little about x as possible:

    max  I(y_hat; T, Y)  -  beta * I(X; Z)

Task term. For any decoder p_s(. | y_hat) (the student classifier),
I(y_hat; Y) >= H(Y) + E[log p_s(y | y_hat)], so minimizing cross-entropy on labels (where
they exist) maximizes a lower bound. With the teacher's distribution t(.|x) standing in for
the label (distillation), the same bound gives the cross-entropy H(t, p_s), which equals
KL(t || p_s) up to the constant H(t). Softening both with temperature T and scaling by T^2
keeps gradient magnitudes independent of T (Hinton et al., 2015):

    L_KD = T^2 * KL( t_T || softmax(s / T) )

Rate term. I(X; Z) <= E_x KL(q(z|x) || r(z)) for any prior r; with r = N(0, I):

    L_rate = E_x KL( N(mu, diag(exp(logvar))) || N(0, I) )
           = 0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)

Optional feature term: with embedding knowledge e from the teacher, a projection of y_hat
is pulled toward it, L_feat = || g(y_hat) - e ||^2 (a Gaussian decoder bound on I(y_hat; E)).

The objective, minimized per batch:

    L = w_kd * L_KD + w_ce * CE(y, p_s)[labelled samples] + beta * L_rate + w_feat * L_feat

beta = 0 removes the rate term exactly (the "no IB" baseline); `beta_at_round` anneals beta
linearly over the first rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedtosc.config import LossConfig

__all__ = ["LossTerms", "beta_at_round", "gaussian_kl", "ib_distillation_loss", "kd_loss"]


@dataclass
class LossTerms:
    total: torch.Tensor
    kd: torch.Tensor
    ce: torch.Tensor
    rate: torch.Tensor
    feature: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in ("total", "kd", "ce", "rate", "feature")}


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the batch; teacher_probs are already at T."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs, reduction="batchmean")
    return kl * temperature**2


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over features, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def beta_at_round(config: LossConfig, server_round: int) -> float:
    if config.beta_warmup_rounds <= 0:
        return config.beta
    return config.beta * min(1.0, server_round / config.beta_warmup_rounds)


def ib_distillation_loss(
    config: LossConfig,
    *,
    logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    labels: torch.Tensor,
    labelled: torch.Tensor,
    teacher_probs: torch.Tensor | None,
    temperature: float,
    beta: float,
    projected: torch.Tensor | None = None,
    teacher_embeddings: torch.Tensor | None = None,
    with_knowledge: torch.Tensor | None = None,
) -> LossTerms:
    """The objective above for one batch. `labelled` [B] bool masks the CE term;
    `with_knowledge` [B] bool (None: all rows) masks the KD term (transfer-set mode)."""
    zero = logits.new_zeros(())
    kd = zero
    if teacher_probs is not None:
        if with_knowledge is None:
            kd = kd_loss(logits, teacher_probs, temperature)
        elif bool(with_knowledge.any()):
            kd = kd_loss(logits[with_knowledge], teacher_probs[with_knowledge], temperature)
    ce = F.cross_entropy(logits[labelled], labels[labelled]) if bool(labelled.any()) else zero
    rate = gaussian_kl(mu, logvar) if beta > 0 else zero
    feature = (
        F.mse_loss(projected, teacher_embeddings)
        if projected is not None and teacher_embeddings is not None
        else zero
    )
    total = config.kd_weight * kd + config.ce_weight * ce + beta * rate + config.feature_weight * feature
    return LossTerms(total=total, kd=kd, ce=ce, rate=rate, feature=feature)
