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

Feature term: with embedding knowledge e from the teacher, a projection g of the decoded
features is pulled toward it in direction, L_feat = 1 - cos(g(y_hat), e), a von Mises-Fisher
decoder bound on I(y_hat; E). Cosine rather than MSE because the teachers classify by direction
(CLIP's embeddings are unit-norm and its head is a cosine similarity; a server CNN's pooled
features vary in scale from image to image), and because a scale-free loss lets one
`feature_weight` serve every teacher and every embedding codec (int8 or PCA) alike.

Channel-use term: the IB bound above counts nats, not symbols; what a link pays for is complex
symbols. `rate_weight` prices each symbol sent, L_uses = E_x[channel uses], and is what pushes
the learned rate controller to switch unneeded symbols off. It is separate from beta: the
"no IB" baseline (beta = 0) keeps it.

The objective, minimized per batch:

    L = w_kd * L_KD + w_ce * CE(y, p_s)[labelled] + beta * L_rate + w_feat * L_feat + w_uses * L_uses

beta = 0 removes the rate term exactly (the "no IB" baseline); `beta_at_round` anneals beta
linearly over the first rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedtosc.config import LossConfig

__all__ = ["LossTerms", "beta_at_round", "feature_loss", "gaussian_kl", "ib_distillation_loss", "kd_loss"]

_TERMS = ("total", "kd", "ce", "rate", "feature", "uses")


@dataclass
class LossTerms:
    total: torch.Tensor
    kd: torch.Tensor
    ce: torch.Tensor
    rate: torch.Tensor
    feature: torch.Tensor
    uses: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in _TERMS}


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the batch; teacher_probs are already at T."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs, reduction="batchmean")
    return kl * temperature**2


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over features, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def feature_loss(projected: torch.Tensor, teacher_embeddings: torch.Tensor) -> torch.Tensor:
    """1 - cos(projected, teacher embedding), averaged over the batch (see the module docstring)."""
    return (1.0 - F.cosine_similarity(projected, teacher_embeddings, dim=1)).mean()


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
    channel_uses: torch.Tensor | None = None,
    projected: torch.Tensor | None = None,
    teacher_embeddings: torch.Tensor | None = None,
    with_knowledge: torch.Tensor | None = None,
) -> LossTerms:
    """The objective above for one batch. `labelled` [B] bool masks the CE term;
    `with_knowledge` [B] bool (None: all rows) masks the KD and feature terms (transfer-set mode);
    `channel_uses` [B] (the student's, differentiable) feeds the channel-use term."""
    zero = logits.new_zeros(())
    covered = slice(None) if with_knowledge is None else with_knowledge
    any_covered = with_knowledge is None or bool(with_knowledge.any())
    kd = zero
    if teacher_probs is not None and any_covered:
        kd = kd_loss(logits[covered], teacher_probs[covered], temperature)
    feature = zero
    if projected is not None and teacher_embeddings is not None and any_covered:
        feature = feature_loss(projected[covered], teacher_embeddings[covered])
    ce = F.cross_entropy(logits[labelled], labels[labelled]) if bool(labelled.any()) else zero
    rate = gaussian_kl(mu, logvar) if beta > 0 else zero
    uses = channel_uses.mean() if channel_uses is not None else zero
    total = (
        config.kd_weight * kd
        + config.ce_weight * ce
        + beta * rate
        + config.feature_weight * feature
        + config.rate_weight * uses
    )
    return LossTerms(total=total, kd=kd, ce=ce, rate=rate, feature=feature, uses=uses)
