"""Evaluation of a (global) student: accuracy against SNR per link, channel uses, size, latency.

Evaluation is deterministic and paired: the channel noise and fading are seeded per (link, SNR)
with the run's seed, and drawn for `EVAL_DRAW_WIDTH` symbols per sample whatever the student
sends (`fedtosc.channels.FixedDrawWidth`). So two students evaluated with the same seed, test set
and eval batch size see the same realizations on every symbol they both send: a rate-adaptive
and a fixed-rate student, or students of different widths up to `EVAL_DRAW_WIDTH`. (Their
training draws are not paired: training is left as it was.) `StudentEvaluator` is what a run
measures: one test accuracy per round (or epoch), and the final sweep with per-image outcomes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from fedtosc.channels import EvalLink, FixedDrawWidth, build_channel, eval_links, seed_channels
from fedtosc.config import ChannelConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.experiment import Experiment
from fedtosc.models.student import StudentCodec
from fedtosc.outcomes import outcome_key

__all__ = [
    "EVAL_DRAW_WIDTH",
    "Sweep",
    "StudentEvaluator",
    "accuracy_at_snr",
    "encoder_latency_ms",
    "median_ms_per_item",
    "model_size",
    "predictions_at_snr",
    "snr_sweep",
]

# Symbols per sample the evaluation channels draw for: wider than any student the studies train
# (student.channel_uses <= 16), so their draws coincide; a wider student draws for its own width.
EVAL_DRAW_WIDTH = 64


@torch.inference_mode()
def predictions_at_snr(
    student: StudentCodec, data: ImageDataset, channel, snr_db: float, batch_size: int, device: torch.device  # noqa: ANN001
) -> tuple[torch.Tensor, float]:
    """(correct: bool [N], one per test image in order; mean channel uses per sample) at one SNR.

    The channel's draws are those of `EVAL_DRAW_WIDTH` symbols (or the student's width, if wider).
    """
    student.to(device).eval()
    width = max(EVAL_DRAW_WIDTH, getattr(student, "channel_uses", 0))
    padded = FixedDrawWidth(channel, width)
    correct, uses = [], 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device).float().div(255.0)
        labels = data.labels[start : start + batch_size].to(device)
        snr = torch.full((len(labels),), float(snr_db), device=device)
        output = student(images, snr, padded)
        correct.append((output.logits.argmax(1) == labels).cpu())
        uses += float(output.channel_uses.sum())
    return torch.cat(correct), uses / len(data)


def accuracy_at_snr(
    student: StudentCodec, data: ImageDataset, channel, snr_db: float, batch_size: int, device: torch.device  # noqa: ANN001
) -> tuple[float, float]:
    """(accuracy, mean channel uses per sample) of the student over `data` at one SNR."""
    correct, uses = predictions_at_snr(student, data, channel, snr_db, batch_size, device)
    return float(correct.float().mean()), uses


class Sweep(NamedTuple):
    """The final sweep. `accuracy`: {link label: {snr: accuracy}}; `channel_uses`: {snr: mean
    symbols sent}; `correct`: {`fedtosc.outcomes.outcome_key`: bool [N] per test image}."""

    links: list[EvalLink]
    accuracy: dict[str, dict[str, float]]
    channel_uses: dict[str, float]
    correct: dict[str, torch.Tensor]


def snr_sweep(
    student: StudentCodec,
    data: ImageDataset,
    links: Sequence[EvalLink],
    config: ChannelConfig,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> Sweep:
    """Accuracy for each link (e.g. from `fedtosc.channels.eval_links`) at each of
    `config.eval_snr_db`, channel uses at each SNR, and which test images were right at each point.

    Keys are strings, the link's `describe()` label (`"awgn"`, `"rician(k=5)"`) and the SNR
    (`"10.0"`), so accuracy and channel uses are JSON as they stand. The channels are reseeded
    with `seed` before each (link, SNR).
    """
    accuracy: dict[str, dict[str, float]] = {}
    channel_uses: dict[str, float] = {}
    correct: dict[str, torch.Tensor] = {}
    for link in links:
        channel = link.make_channel(config.block_length)
        curve = accuracy[link.describe()] = {}
        for snr_db in config.eval_snr_db:
            seed_channels(seed)
            right, uses = predictions_at_snr(student, data, channel, snr_db, batch_size, device)
            curve[str(float(snr_db))] = float(right.float().mean())
            channel_uses[str(float(snr_db))] = uses
            correct[outcome_key(link.describe(), snr_db)] = right
    return Sweep(list(links), accuracy, channel_uses, correct)


class StudentEvaluator:
    """An experiment's test figures for a (global) student, on the same channel draws every time."""

    def __init__(self, experiment: Experiment, device: torch.device) -> None:
        self.experiment, self.device = experiment, device
        # The per-round figure: AWGN at the median evaluation SNR.
        self.reference_snr_db = float(statistics.median(experiment.config.channel.eval_snr_db))

    def reference_accuracy(self, student: StudentCodec) -> float:
        """Test accuracy on AWGN at the median eval SNR."""
        config = self.experiment.config
        seed_channels(config.seed)
        accuracy, _ = accuracy_at_snr(
            student, self.experiment.splits.test, build_channel("awgn"), self.reference_snr_db,
            config.train.eval_batch_size, self.device,
        )
        return accuracy

    def sweep(self, student: StudentCodec) -> Sweep:
        """The final figures: every eval link at every eval SNR, with per-image outcomes."""
        config = self.experiment.config
        links = eval_links(config.channel, config.federation.num_clients)
        return snr_sweep(
            student, self.experiment.splits.test, links, config.channel, config.train.eval_batch_size, self.device,
            config.seed,
        )


def model_size(student: StudentCodec) -> dict[str, int]:
    encoder = sum(p.numel() for module in student.encoder_modules() for p in module.parameters())
    return {"params": sum(p.numel() for p in student.parameters()), "encoder_params": encoder}


def median_ms_per_item(run: Callable[[], object], batch_size: int, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time of `run()` over `repeats` calls, in ms per item of its batch."""
    timings = []
    for call in range(warmup + repeats):
        started = time.perf_counter()
        run()
        if call >= warmup:  # the first calls warm up allocators and kernels
            timings.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(timings) / batch_size


@torch.inference_mode()
def encoder_latency_ms(
    student: StudentCodec, image_shape: tuple[int, int, int], batch_size: int, repeats: int = 20
) -> float:
    """Median wall time per image of the on-device part (images to channel symbols), on the CPU."""
    student.to("cpu").eval()
    images = torch.rand(batch_size, *image_shape)
    snr_db = torch.full((batch_size,), 10.0)
    return median_ms_per_item(lambda: student.encode_symbols(images, snr_db), batch_size, repeats)
