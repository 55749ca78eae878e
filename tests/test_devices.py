"""What holds across devices: training and channel draws come from CPU generators, and the
teacher pass runs in float32 (fedtosc/precision.py). The GPU test runs where torch sees one
(benchmarks/gpu.py measures the same on a whole client round and knowledge build)."""

from __future__ import annotations

import pytest
import torch

from fedtosc.channels import seed_channels
from fedtosc.channels.blocks import AWGNChannel, RayleighChannel, RicianChannel
from fedtosc.config import StudentConfig
from fedtosc.models.student import build_student
from fedtosc.precision import tf32

_CHANNELS = [AWGNChannel(), RayleighChannel(block_length=4), RicianChannel(k_factor=3.0, csi="none")]


def _training_forward(device: torch.device, channel: torch.nn.Module, channel_seed: int = 1) -> torch.Tensor:
    """A training-mode forward pass (z sampled, channel drawn) from fixed seeds, logits on the CPU."""
    torch.manual_seed(0)
    student = build_student(3, 10, StudentConfig(), None).train()
    images = torch.rand(16, 3, 32, 32)
    seed_channels(channel_seed)
    torch.manual_seed(2)
    return student.to(device)(images.to(device), torch.linspace(-5, 20, 16, device=device), channel).logits.cpu()


@pytest.mark.parametrize("allowed", [True, False])
def test_tf32_sets_both_flags_in_the_block_and_restores_them(allowed: bool) -> None:
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with tf32(allowed):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (allowed, allowed)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.parametrize("channel", _CHANNELS, ids=lambda c: c.name)
def test_channel_state_is_drawn_on_the_cpu(channel: torch.nn.Module) -> None:
    assert channel._draw_coefficients(4, 8).device.type == "cpu"


@pytest.mark.parametrize("channel", _CHANNELS, ids=lambda c: c.name)
def test_the_same_seeds_give_the_same_training_forward(channel: torch.nn.Module) -> None:
    # Equal bit for bit from the same seeds, and not from another channel seed: the seeds do the work.
    first = _training_forward(torch.device("cpu"), channel)
    assert torch.equal(first, _training_forward(torch.device("cpu"), channel))
    assert not torch.equal(first, _training_forward(torch.device("cpu"), channel, channel_seed=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channel", _CHANNELS, ids=lambda c: c.name)
def test_a_student_on_the_gpu_sees_the_draws_of_the_cpu(channel: torch.nn.Module) -> None:
    on_cpu = _training_forward(torch.device("cpu"), channel)
    with tf32(False):
        on_gpu = _training_forward(torch.device("cuda"), channel)
    # Same z samples, fading and noise: only float rounding apart (different draws differ by O(1)).
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-4)
