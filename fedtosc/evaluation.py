"""Evaluation of a (global) student: accuracy against SNR per link, channel uses, size, latency.

Evaluation is deterministic: the channel noise and fading are seeded per (link, SNR), so
two students are compared on the same channel realizations. `StudentEvaluator` is what a run
measures: one test accuracy per round (or epoch), and the final sweep.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from fedtosc.channels import EvalLink, build_channel, eval_links, seed_channels
from fedtosc.config import ChannelConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.experiment import Experiment
from fedtosc.models.student import StudentCodec

__all__ = ["StudentEvaluator", "accuracy_at_snr", "encoder_latency_ms", "median_ms_per_item", "model_size", "snr_sweep"]


@torch.inference_mode()
def accuracy_at_snr(
    student: StudentCodec, data: ImageDataset, channel, snr_db: float, batch_size: int, device: torch.device  # noqa: ANN001
) -> tuple[float, float]:
    """(accuracy, mean channel uses per sample) of the student over `data` at one SNR."""
    student.to(device).eval()
    correct, uses = 0, 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device).float().div(255.0)
        labels = data.labels[start : start + batch_size].to(device)
        snr = torch.full((len(labels),), float(snr_db), device=device)
        output = student(images, snr, channel)
        correct += int((output.logits.argmax(1) == labels).sum())
        uses += float(output.channel_uses.sum())
    return correct / len(data), uses / len(data)


def snr_sweep(
    student: StudentCodec,
    data: ImageDataset,
    links: Sequence[EvalLink],
    config: ChannelConfig,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Accuracy for each link (e.g. from `fedtosc.channels.eval_links`) at each of
    `config.eval_snr_db`, and channel uses at each SNR.

    Keys are strings, the link's `describe()` label (`"awgn"`, `"rician(k=5)"`) and the SNR
    (`"10.0"`), so the result is JSON as it stands.
    """
    accuracy: dict[str, dict[str, float]] = {}
    channel_uses: dict[str, float] = {}
    for link in links:
        channel = link.make_channel(config.block_length)
        curve = accuracy[link.describe()] = {}
        for snr_db in config.eval_snr_db:
            seed_channels(seed)
            acc, uses = accuracy_at_snr(student, data, channel, snr_db, batch_size, device)
            curve[str(float(snr_db))] = acc
            channel_uses[str(float(snr_db))] = uses
    return accuracy, channel_uses


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

    def sweep(self, student: StudentCodec) -> tuple[list[EvalLink], dict[str, dict[str, float]], dict[str, float]]:
        """(the evaluation links, accuracy per link and SNR, channel uses per SNR): the final figures."""
        config = self.experiment.config
        links = eval_links(config.channel, config.federation.num_clients)
        accuracy, channel_uses = snr_sweep(
            student, self.experiment.splits.test, links, config.channel, config.train.eval_batch_size, self.device,
            config.seed,
        )
        return links, accuracy, channel_uses


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
