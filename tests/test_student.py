"""Properties of the student codec in fedtosc.models.student: shapes, power, the learned rate
controller, what the transmitter and the receiver condition on, determinism and bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtosc.channels import (
    SNR_DB_LIMITS,
    AWGNChannel,
    ChannelOutput,
    build_channel,
    complex_to_real,
    normalize_power,
    real_to_complex,
    seed_channels,
)
from fedtosc.registries import CHANNELS
from fedtosc.config import StudentConfig
from fedtosc.evaluation import model_size
from fedtosc.losses import gaussian_kl
from fedtosc.models.student import RateController, StudentCodec, build_student

# open_clip create_model("ViT-B-32", pretrained=None).visual, counted by benchmarks/student_size.py
# (benchmarks/results/student_size.json); instantiating it here would cost seconds per run.
VIT_B_32_VISUAL_PARAMS = 87_849_216
NUM_CLASSES = 10
SMALL = StudentConfig(width=8, feature_dim=32, channel_uses=8, min_channel_uses=2, rate_adaptive=False)
RATE_ADAPTIVE = dataclasses.replace(SMALL, rate_adaptive=True)
IMAGE_SHAPES = [pytest.param((1, 8, 8), id="gray8x8"), pytest.param((3, 32, 32), id="rgb32x32")]


def _student(config: StudentConfig = SMALL, in_channels: int = 3, seed: int = 0) -> StudentCodec:
    torch.manual_seed(seed)
    return build_student(in_channels, NUM_CLASSES, config)


def _images(batch: int, shape: tuple[int, int, int] = (3, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))


class _Noiseless(AWGNChannel):
    """An ideal channel: the receiver sees exactly what was sent (isolates the encoder side)."""

    def transmit(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> ChannelOutput:
        return ChannelOutput(x, torch.ones_like(x), torch.zeros(x.shape[0], 1))


class _Recording(AWGNChannel):
    """An AWGN channel that keeps a copy of what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[torch.Tensor] = []

    def transmit(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> ChannelOutput:
        self.sent.append(x.detach().clone())
        return super().transmit(x, snr_db)


snr_values = st.floats(SNR_DB_LIMITS[0], SNR_DB_LIMITS[1], allow_nan=False)


# Built once per module for the property tests: in eval mode a forward pass changes nothing in them.
@pytest.fixture(scope="module")
def rate_adaptive_student() -> StudentCodec:
    return _student(RATE_ADAPTIVE).eval()


@pytest.fixture(scope="module")
def full_rate_student() -> StudentCodec:
    return _student(SMALL).eval()


@pytest.fixture(scope="module")
def non_adaptive_student() -> StudentCodec:
    return _student(dataclasses.replace(SMALL, adaptive=False)).eval()


# ---------------------------------------------------------------- shapes and size


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("config", [SMALL, RATE_ADAPTIVE, StudentConfig()], ids=["small", "rate", "default"])
def test_output_shapes(shape: tuple[int, int, int], config: StudentConfig) -> None:
    student = _student(config, in_channels=shape[0])
    output = student(_images(5, shape), torch.full((5,), 10.0), build_channel("awgn"))
    n = config.channel_uses
    assert output.logits.shape == (5, NUM_CLASSES)
    assert output.mu.shape == output.logvar.shape == output.received.shape == (5, 2 * n)
    assert output.channel_uses.shape == (5,)
    assert student.encode_symbols(_images(5, shape), 10.0).shape == (5, n)
    assert student.encode_symbols(_images(5, shape), 10.0).dtype == torch.complex64


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_encoder_is_at_most_3_percent_of_vit_b_32_visual_tower(shape: tuple[int, int, int]) -> None:
    config = dataclasses.replace(StudentConfig(), adaptive=True, rate_adaptive=True)
    encoder_params = model_size(_student(config, in_channels=shape[0]))["encoder_params"]
    assert encoder_params / VIT_B_32_VISUAL_PARAMS <= 0.03


def test_encoder_modules_are_what_runs_before_the_channel() -> None:
    student = _student()
    on_device = {id(p) for module in student.encoder_modules() for p in module.parameters()}
    assert {id(p) for p in student.decoder.parameters()}.isdisjoint(on_device)
    assert {id(p) for p in student.encoder.parameters()} <= on_device
    assert {id(p) for p in student.snr_gate.parameters()} <= on_device


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("channel_name", CHANNELS.names())
@pytest.mark.parametrize("config", [SMALL, RATE_ADAPTIVE], ids=["full_rate", "rate_adaptive"])
def test_gradients_reach_the_encoder_through_the_channel(channel_name: str, config: StudentConfig) -> None:
    seed_channels(0)
    student = _student(config).train()
    output = student(_images(16), torch.linspace(-5.0, 25.0, 16), build_channel(channel_name))
    torch.nn.functional.cross_entropy(output.logits, torch.arange(16) % NUM_CLASSES).backward()
    for name, parameter in [*student.encoder.named_parameters(), *student.snr_gate.named_parameters()]:
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    first_conv = student.encoder.layers[0][0].weight.grad
    assert first_conv.abs().sum() > 0


# ---------------------------------------------------------------- rate adaptation


@settings(max_examples=10, deadline=None)
@given(snrs=st.lists(snr_values, min_size=2, max_size=12))
def test_channel_uses_never_rise_with_snr_when_rate_adaptive(
    rate_adaptive_student: StudentCodec, snrs: list[float]
) -> None:
    snr_db = torch.tensor(sorted(snrs))
    seed_channels(0)
    output = rate_adaptive_student(_images(len(snrs)), snr_db, build_channel("awgn"))
    uses = output.channel_uses
    assert (uses[1:] <= uses[:-1]).all()
    assert ((uses >= RATE_ADAPTIVE.min_channel_uses) & (uses <= RATE_ADAPTIVE.channel_uses)).all()
    # Exactly the reported number of complex symbols reach the decoder (AWGN makes each one nonzero).
    received_symbols = (output.received != 0).sum(dim=1)
    assert torch.equal(received_symbols, 2 * uses.long())


@settings(max_examples=10, deadline=None)
@given(snrs=st.lists(snr_values, min_size=1, max_size=8))
def test_channel_uses_are_constant_without_rate_adaptation(full_rate_student: StudentCodec, snrs: list[float]) -> None:
    output = full_rate_student(_images(len(snrs)), torch.tensor(snrs), build_channel("awgn"))
    assert output.channel_uses.tolist() == [float(SMALL.channel_uses)] * len(snrs)
    assert (output.received != 0).all()


@pytest.mark.parametrize("kwargs", [{"max_uses": 8, "min_uses": 0}, {"max_uses": 4, "min_uses": 5}])
def test_rate_controller_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RateController(**kwargs)


def test_rate_controller_is_trainable_and_both_loss_terms_reach_it() -> None:
    student = _student(RATE_ADAPTIVE).train()
    controller = list(student.rate.parameters())
    assert controller and all(p.requires_grad for p in controller)
    output = student(_images(8), torch.linspace(0.0, 20.0, 8), build_channel("awgn"))
    for loss in (output.channel_uses.mean(), torch.nn.functional.cross_entropy(output.logits, torch.arange(8) % 10)):
        student.zero_grad()
        loss.backward(retain_graph=True)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in controller)


def test_an_untrained_controller_sends_almost_everything() -> None:
    uses = _student(RATE_ADAPTIVE).eval().rate.active_uses(torch.linspace(-10.0, 30.0, 9))
    assert ((uses >= RATE_ADAPTIVE.channel_uses - 1) & (uses <= RATE_ADAPTIVE.channel_uses)).all()


def test_controller_mask_keeps_a_prefix_whose_length_is_the_reported_channel_uses() -> None:
    student = _student(RATE_ADAPTIVE)
    with torch.no_grad():  # a controller that sends fewer symbols as the SNR rises
        student.rate.net[0].weight.fill_(1.0)
        student.rate.net[0].bias.zero_()
        student.rate.net[-1].weight.fill_(-1.0)
        student.rate.net[-1].bias.zero_()
    mask = student.eval().symbol_mask(torch.tensor([-20.0, 0.0, 30.0]))
    uses = mask.sum(dim=1)
    assert uses[0] > uses[1] > uses[2]
    for row, count in zip(mask, uses.long()):
        assert row[:count].eq(1).all() and row[count:].eq(0).all()


def test_unsent_coordinates_add_nothing_to_the_rate_term() -> None:
    student = _student(RATE_ADAPTIVE).train()
    with torch.no_grad():  # a controller that sends everything at -10 dB and its floor at 40 dB
        student.rate.net[0].weight.fill_(1.0)
        student.rate.net[0].bias.zero_()
        student.rate.net[-1].weight.fill_(-20.0)
        student.rate.net[-1].bias.zero_()
    output = student(_images(2), torch.tensor([-10.0, 40.0]), build_channel("awgn"))
    n, n_min = RATE_ADAPTIVE.channel_uses, RATE_ADAPTIVE.min_channel_uses
    assert output.channel_uses.tolist() == [n, n_min]
    sent = torch.zeros(n, dtype=torch.bool)
    sent[:n_min] = True
    sent_real = torch.cat([sent, sent])  # real parts, then imaginary parts
    assert (output.mu[1, ~sent_real] == 0).all() and (output.logvar[1, ~sent_real] == 0).all()
    expected = gaussian_kl(output.mu[1:, sent_real], output.logvar[1:, sent_real])
    torch.testing.assert_close(gaussian_kl(output.mu[1:], output.logvar[1:]), expected)
    assert (output.mu[0] != 0).all()


# ---------------------------------------------------------------- power normalization


@settings(max_examples=8, deadline=None)
@given(snrs=st.lists(snr_values, min_size=1, max_size=8), training=st.booleans(), rate=st.booleans())
def test_sent_symbols_have_unit_average_power_over_active_symbols(
    snrs: list[float], training: bool, rate: bool
) -> None:
    student = _student(RATE_ADAPTIVE if rate else SMALL).train(training)
    channel = _Recording()
    output = student(_images(len(snrs)), torch.tensor(snrs), channel)
    power = channel.sent[0].real.square() + channel.sent[0].imag.square()
    active = torch.arange(student.channel_uses).unsqueeze(0) < output.channel_uses.unsqueeze(1)
    assert (power[~active] == 0).all()
    mean_active_power = (power * active).sum(dim=1) / active.sum(dim=1)
    torch.testing.assert_close(mean_active_power, torch.ones(len(snrs)))


# ---------------------------------------------------------------- SNR adaptivity


@settings(max_examples=10, deadline=None)
@given(snr_a=snr_values, snr_b=snr_values)
def test_non_adaptive_encoder_ignores_snr(non_adaptive_student: StudentCodec, snr_a: float, snr_b: float) -> None:
    images = _images(4)
    sent_a = non_adaptive_student.encode_symbols(images, snr_a)
    sent_b = non_adaptive_student.encode_symbols(images, snr_b)
    assert torch.equal(sent_a, sent_b)


def test_adaptive_encoder_depends_on_snr() -> None:
    student = _student(SMALL).eval()
    images = _images(4)
    assert not torch.allclose(student.encode_symbols(images, 0.0), student.encode_symbols(images, 20.0))


class _KnownFade(AWGNChannel):
    """A noiseless link with a known fading gain |h|^2 on every symbol, already equalized."""

    def __init__(self, gain: float, csi: str) -> None:
        super().__init__()
        self.gain, self.csi = gain, csi

    def transmit(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> ChannelOutput:
        coefficients = torch.full_like(x, complex(self.gain**0.5, 0.0))
        return ChannelOutput(x, coefficients, torch.zeros(x.shape[0], 1))


def test_non_adaptive_student_ignores_snr_end_to_end(non_adaptive_student: StudentCodec) -> None:
    low, high = (non_adaptive_student(_images(4), snr_db, _Noiseless()) for snr_db in (0.0, 20.0))
    assert torch.equal(low.logits, high.logits)


def test_receiver_with_perfect_csi_conditions_on_each_symbols_effective_snr() -> None:
    student = _student(SMALL).eval()
    images = _images(4)
    deep_fade, clear = (student(images, 10.0, _KnownFade(gain, "perfect")) for gain in (0.01, 1.0))
    assert torch.equal(deep_fade.received, clear.received)  # same symbols reach the decoder ...
    assert not torch.allclose(deep_fade.logits, clear.logits)  # ... but it knows one link was in a fade


def test_receiver_without_csi_knows_only_the_nominal_snr() -> None:
    student = _student(SMALL).eval()
    images = _images(4)
    deep_fade, clear = (student(images, 10.0, _KnownFade(gain, "none")) for gain in (0.01, 1.0))
    assert torch.equal(deep_fade.logits, clear.logits)
    assert not torch.equal(student(images, 0.0, _KnownFade(1.0, "none")).logits, clear.logits)


def test_non_adaptive_student_has_no_gate_no_controller_and_fewer_parameters() -> None:
    adaptive = _student(RATE_ADAPTIVE)
    baseline = _student(dataclasses.replace(SMALL, adaptive=False))
    assert adaptive.snr_gate is not None and baseline.snr_gate is None
    assert adaptive.rate is not None and baseline.rate is None
    assert model_size(baseline)["params"] < model_size(adaptive)["params"]
    assert model_size(baseline)["encoder_params"] < model_size(adaptive)["encoder_params"]


# ---------------------------------------------------------------- determinism


def test_eval_sends_the_mean_and_is_deterministic() -> None:
    student = _student(RATE_ADAPTIVE).eval()
    images, snr_db = _images(6), torch.linspace(0.0, 20.0, 6)
    first = student(images, snr_db, _Noiseless())
    second = student(images, snr_db, _Noiseless())
    assert torch.equal(first.logits, second.logits)
    sent = (torch.arange(student.channel_uses).unsqueeze(0) < first.channel_uses.unsqueeze(1)).float()
    torch.testing.assert_close(first.received, complex_to_real(normalize_power(real_to_complex(first.mu), sent)))


def test_training_samples_around_the_mean() -> None:
    student = _student(SMALL).train()
    images, snr_db = _images(6), torch.full((6,), 10.0)
    first = student(images, snr_db, _Noiseless())
    second = student(images, snr_db, _Noiseless())
    assert not torch.equal(first.received, second.received)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channel_name", ["awgn", "rayleigh"])
def test_same_seed_gives_identical_outputs(training: bool, channel_name: str) -> None:
    def run(seed: int) -> tuple[torch.Tensor, ...]:
        student = _student(RATE_ADAPTIVE, seed=seed).train(training)
        seed_channels(seed)
        output = student(_images(8, seed=seed), torch.linspace(-5.0, 25.0, 8), build_channel(channel_name))
        return output.logits, output.mu, output.received

    for same_a, same_b, other in zip(run(3), run(3), run(4)):
        assert torch.equal(same_a, same_b)
        assert not torch.equal(same_a, other)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad_snr_db", [math.nan, math.inf, -math.inf, SNR_DB_LIMITS[1] + 1.0, SNR_DB_LIMITS[0] - 1.0])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bad_snr_raises_value_error(bad_snr_db: float, training: bool) -> None:
    student = _student(RATE_ADAPTIVE).train(training)
    snr_db = torch.tensor([10.0, bad_snr_db, 5.0])
    with pytest.raises(ValueError, match="snr_db"):
        student(_images(3), snr_db, build_channel("awgn"))
    with pytest.raises(ValueError, match="snr_db"):
        student.encode_symbols(_images(3), snr_db)


def test_snr_of_the_wrong_shape_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        _student()(_images(3), torch.full((2,), 10.0), build_channel("awgn"))


def test_scalar_snr_applies_to_the_whole_batch() -> None:
    student = _student(RATE_ADAPTIVE).eval()
    images = _images(3)
    scalar = student(images, 12.0, _Noiseless())
    per_sample = student(images, torch.full((3,), 12.0), _Noiseless())
    assert torch.equal(scalar.logits, per_sample.logits)
