"""Local training of the student on one client: KD from knowledge + CE + the IB rate term.

A client's samples, labels, labelled mask and decoded knowledge are row-aligned in
`LocalData`; each batch draws per-sample SNRs from the client's channel profile, so the
channel-adaptive module sees the SNRs it will face. Used by the ClientApp and by centralized
training alike; centralized training passes every client's link, and each batch goes through
one of them drawn at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedtosc.channels import Channel, ChannelProfile
from fedtosc.config import ExperimentConfig
from fedtosc.data.views import apply_views
from fedtosc.losses import beta_at_round, ib_distillation_loss
from fedtosc.models.student import StudentCodec
from fedtosc.models.teachers import Teacher

__all__ = ["LocalData", "NonFiniteLossError", "train_student"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the update must not be aggregated."""


@dataclass(frozen=True)
class LocalData:
    images: torch.Tensor  # uint8 [n, C, H, W]
    labels: torch.Tensor  # int64 [n]
    labelled: torch.Tensor  # bool [n]: may the label be used?
    # Knowledge, decoded: soft labels at the knowledge temperature [n, classes] and embeddings [n, D];
    # with K augmented views (knowledge.views) [n, K, classes] / [n, K, D], one row per view.
    teacher_probs: torch.Tensor | None = None
    teacher_embeddings: torch.Tensor | None = None
    view_params: torch.Tensor | None = None  # int16 [n, K, 5]: the views the teacher saw (data/views.py)
    with_knowledge: torch.Tensor | None = None  # bool [n]: rows the knowledge covers (None: all)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def embedding_width(self) -> int | None:
        """Width D of the teacher embeddings these rows carry (None without embeddings)."""
        return None if self.teacher_embeddings is None else int(self.teacher_embeddings.shape[-1])


def train_student(
    student: StudentCodec,
    data: LocalData,
    *,
    profile: ChannelProfile | Sequence[ChannelProfile],
    channel: Channel | Sequence[Channel],
    config: ExperimentConfig,
    server_round: int,
    generator: torch.Generator,
    device: torch.device,
    online_teacher: Teacher | None = None,
    proximal_reference: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Train in place for `config.train.local_epochs`; return mean loss terms, the accuracy on the
    labelled rows (`train_accuracy`) and how many labelled rows it is over (`train_labelled`).

    `profile` and `channel` may be equal-length sequences (one link per client): each batch
    then draws one link uniformly at random from `generator`.
    """
    profiles = list(profile) if isinstance(profile, Sequence) else [profile]
    channels = list(channel) if isinstance(channel, Sequence) else [channel]
    if len(profiles) != len(channels):
        raise ValueError(f"{len(profiles)} channel profiles but {len(channels)} channels")
    student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    beta = beta_at_round(config.loss, server_round)
    temperature = config.knowledge.temperature
    totals: dict[str, float] = {}
    correct, seen, steps = 0, 0, 0
    for _ in range(config.train.local_epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), config.train.batch_size):
            rows = order[start : start + config.train.batch_size]
            view = _draw_views(data, rows, generator)
            images = _batch_images(data, rows, view).to(device)
            labels = data.labels[rows].to(device)
            labelled = data.labelled[rows].to(device)
            # A single link draws nothing here, so a client's random stream is as before.
            link = int(torch.randint(len(profiles), (1,), generator=generator)) if len(profiles) > 1 else 0
            snr_db = profiles[link].sample_snr_db(len(rows), server_round, generator).to(device)
            output = student(images, snr_db, channels[link])
            teacher_probs = _teacher_probs(data, rows, view, images, online_teacher, temperature, device)
            teacher_embeddings = _knowledge_rows(data.teacher_embeddings, rows, view, device)
            terms = ib_distillation_loss(
                config.loss,
                logits=output.logits,
                mu=output.mu,
                logvar=output.logvar,
                labels=labels,
                labelled=labelled,
                teacher_probs=teacher_probs,
                temperature=temperature,
                beta=beta,
                channel_uses=output.channel_uses,
                projected=output.projected,
                teacher_embeddings=teacher_embeddings,
                with_knowledge=None if data.with_knowledge is None or online_teacher else data.with_knowledge[rows].to(device),
            )
            loss = terms.total
            if proximal_reference is not None:
                loss = loss + _proximal_term(student, proximal_reference, config.strategy.proximal_mu)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {float(loss)} at round {server_round}, step {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in terms.as_floats().items():
                totals[name] = totals.get(name, 0.0) + value
            # Accuracy over the rows whose label may be used: an unlabelled or transfer-set row's label is a placeholder.
            correct += int((output.logits.argmax(1) == labels)[labelled].sum())
            seen += int(labelled.sum())
            steps += 1
    metrics = {f"train_{name}": value / max(steps, 1) for name, value in totals.items()}
    # Flower aggregates only replies with the same metric keys, so both are always there: a node
    # without labels reports 0.0 over train_labelled = 0 rows, which the round's mean leaves out.
    metrics["train_accuracy"] = correct / seen if seen else 0.0
    metrics["train_labelled"] = seen
    metrics["train_channel_uses"] = metrics.pop("train_uses", 0.0)
    return metrics


def _draw_views(data: LocalData, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """One of the stored views per sample (FKD: the student sees exactly what the teacher saw)."""
    if data.view_params is None:
        return None
    return torch.randint(data.view_params.shape[1], (len(rows),), generator=generator)


def _batch_images(data: LocalData, rows: torch.Tensor, view: torch.Tensor | None) -> torch.Tensor:
    if view is None:
        return data.images[rows].float().div(255.0)
    return apply_views(data.images[rows], data.view_params[rows, view])


def _knowledge_rows(
    values: torch.Tensor | None, rows: torch.Tensor, view: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    if values is None:
        return None
    return (values[rows] if view is None else values[rows, view]).to(device)


def _teacher_probs(
    data: LocalData,
    rows: torch.Tensor,
    view: torch.Tensor | None,
    images: torch.Tensor,
    online_teacher: Teacher | None,
    temperature: float,
    device: torch.device,
) -> torch.Tensor | None:
    if online_teacher is not None:
        # Online KD: the teacher runs on every batch; this is the cost pre-storing removes.
        with torch.inference_mode():
            logits = online_teacher(images).logits
        return F.softmax(logits.float() / temperature, dim=1).clone()
    return _knowledge_rows(data.teacher_probs, rows, view, device)


def _proximal_term(student: StudentCodec, reference: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: (mu / 2) * ||w - w_global||^2 keeps local models near the global one."""
    squared = sum((p - r.to(p.device)).pow(2).sum() for p, r in zip(student.parameters(), reference))
    return 0.5 * mu * squared
