"""The differentiable channel blocks (the "channel" box of docs/architecture.md): torch and Sionna live here.

The student's encoder output is packed into complex symbols, normalized, and sent through one of
these channels. Noise and Rayleigh coefficients come from Sionna (``sionna.phy.channel``); this
module adds only what Sionna lacks: per-sample power normalization, real<->complex packing and
flat Rician fading.

Conventions (they hold for every block here):

- ``snr_db``: average transmitted symbol power / noise power per complex symbol, in dB, within
  ``SNR_DB_LIMITS`` (:mod:`fedtosc.channels.limits`).
- Symbols are normalized to unit average power per sample (:func:`normalize_power`) before the
  channel, so the noise power per complex symbol is ``noise_power = 10**(-snr_db/10)`` and the
  AWGN is ``CN(0, noise_power)``.
- Fading is flat, with ``E|h|^2 = 1``. ``csi="perfect"``: the receiver knows ``h`` and applies
  zero-forcing ``y * conj(h) / |h|^2``; ``csi="none"``: the receiver gets ``y = h x + n`` as is.
- ``channel uses`` = complex symbols per sample = ``n`` in ``x: [B, n] complex64``.
- Randomness of the channels comes from Sionna's generators: seed them with :func:`seed_channels`
  (``torch.manual_seed`` does not reach them).

Sionna is imported where a channel is seeded or drawn (:func:`_sionna`), not with this module:
``sionna.phy`` loads all of its subpackages and ``torch._dynamo`` (about 3 s of CPU), and a deployed
ClientApp is a new process for every message, most of which (describe, knowledge) never draw a channel.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch

from fedtosc.channels.limits import SNR_DB_LIMITS, check_csi, check_k_factor, check_snr_db
from fedtosc.registries import CHANNELS

__all__ = [
    "validate_snr_db",
    "real_to_complex",
    "complex_to_real",
    "normalize_power",
    "seed_channels",
    "ChannelOutput",
    "Channel",
    "AWGNChannel",
    "RayleighChannel",
    "RicianChannel",
    "FixedDrawWidth",
    "build_channel",
]

# Guards the per-sample power normalization against an all-zero (or fully masked) sample.
_POWER_EPS = 1e-12
# Floor on |h|^2 in zero-forcing: keeps y/h finite in a (probability ~1e-9) exact deep fade
# without changing the statistics of any realistic fade.
_ZF_GAIN_FLOOR = 1e-9


# --------------------------------------------------------------------------------------------
# SNR validation, packing, normalization, seeding
# --------------------------------------------------------------------------------------------


def validate_snr_db(
    snr_db: torch.Tensor | float,
    low: float = SNR_DB_LIMITS[0],
    high: float = SNR_DB_LIMITS[1],
) -> torch.Tensor:
    """Return ``snr_db`` as a float32 tensor (same device), or raise ``ValueError``.

    Every value must be finite and in ``[low, high]`` dB; the error names the first bad value and
    states the allowed range (the message of :func:`~fedtosc.channels.limits.check_snr_db`).
    """
    snr = torch.as_tensor(snr_db).to(torch.float32)
    flat = snr.detach().reshape(-1)
    bad = ~torch.isfinite(flat) | (flat < low) | (flat > high)
    if bool(bad.any()):
        check_snr_db(flat[bad][0].item(), low, high)
    return snr


def real_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Pack ``x: [B, 2n]`` real into ``[B, n] complex64``: first half = real, second half = imag."""
    if x.dim() != 2 or x.shape[1] % 2 != 0:
        raise ValueError(f"real_to_complex expects [B, 2n] with an even last dim, got {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError("real_to_complex expects a real tensor, got a complex one")
    real_part, imag_part = x.to(torch.float32).chunk(2, dim=1)
    return torch.complex(real_part, imag_part)


def complex_to_real(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`real_to_complex`: ``[B, n] complex`` -> ``[B, 2n] float32`` (real | imag)."""
    if z.dim() != 2 or not z.is_complex():
        raise ValueError(f"complex_to_real expects a [B, n] complex tensor, got {tuple(z.shape)} {z.dtype}")
    z = z.to(torch.complex64)
    return torch.cat([z.real, z.imag], dim=1)


def normalize_power(z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each sample of ``z: [B, n] complex`` to unit average power per active symbol.

    ``mask: [B, n]`` float in {0, 1} marks the active symbols (e.g. a channel-adaptive module that
    switches symbols off); masked symbols are set to 0 and the power is averaged over active ones
    only, so the transmitted energy per sample equals its number of active symbols.
    """
    if z.dim() != 2 or not z.is_complex():
        raise ValueError(f"normalize_power expects a [B, n] complex tensor, got {tuple(z.shape)} {z.dtype}")
    power = z.real.square() + z.imag.square()
    if mask is None:
        mean_power = power.mean(dim=1, keepdim=True)
    else:
        if mask.shape != z.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal z shape {tuple(z.shape)}")
        mask = mask.to(power.dtype)
        z = z * mask
        active = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        mean_power = (power * mask).sum(dim=1, keepdim=True) / active
    return z * torch.rsqrt(mean_power + _POWER_EPS)


def seed_channels(seed: int) -> None:
    """Seed Sionna's generators, which draw all channel noise and fading here.

    Setting ``sionna.phy.config.seed`` also reseeds torch's global generators as a side effect;
    we restore those so that seeding the channels never changes model initialization or data order.
    """
    sionna_config = _sionna("sionna.phy").config
    with torch.random.fork_rng(devices=_cuda_devices()):
        sionna_config.seed = int(seed)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _sionna(module: str):  # noqa: ANN202 - a Sionna module
    """A Sionna module, imported on first use. Importing Sionna moves torch's global generators, so
    a first import mid-run would change every later draw: it runs with those generators restored."""
    if module not in sys.modules:
        with torch.random.fork_rng(devices=_cuda_devices()):
            importlib.import_module(module)
    return sys.modules[module]


# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


class ChannelOutput(NamedTuple):
    """What a channel use produced, for receivers and measurements.

    received: [B, n] complex64 symbols the receiver sees (equalized when csi == "perfect").
    coefficients: [B, n] complex64 fading coefficient applied to each symbol (ones for AWGN).
    noise_power: [B, 1] float32 noise power per complex symbol, 10**(-snr_db/10).
    """

    received: torch.Tensor
    coefficients: torch.Tensor
    noise_power: torch.Tensor


def _check_symbols(x: torch.Tensor) -> None:
    if x.dim() != 2 or not x.is_complex():
        raise TypeError(
            f"channel input must be [B, n] complex (use real_to_complex), got {tuple(x.shape)} {x.dtype}"
        )


def _noise_power(snr_db: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
    """Per-sample noise power [B, 1] from a scalar or [B] SNR in dB (unit signal power)."""
    snr = validate_snr_db(snr_db).to(device)
    if snr.dim() == 0:
        snr = snr.expand(batch_size)
    elif snr.dim() == 2 and snr.shape[1] == 1:
        snr = snr[:, 0]
    if snr.shape != (batch_size,):
        raise ValueError(f"snr_db must be a scalar or shape [{batch_size}], got {tuple(snr.shape)}")
    return torch.pow(10.0, -snr / 10.0).unsqueeze(1)


def _check_block_length(block_length: int | None) -> int | None:
    is_positive_int = isinstance(block_length, int) and not isinstance(block_length, bool) and block_length >= 1
    if block_length is not None and not is_positive_int:
        raise ValueError(f"block_length must be a positive int or None, got {block_length!r}")
    return block_length


class Channel(torch.nn.Module, ABC):
    """A flat channel ``x: [B, n] complex64 (unit power) -> y: [B, n] complex64``.

    ``snr_db``: scalar or ``[B]`` float, in dB (one SNR per sample). Gradients flow to ``x``.
    """

    name: str = "channel"
    csi: str = "perfect"

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> torch.Tensor:
        return self.transmit(x, snr_db).received

    def transmit(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> ChannelOutput:
        """Send ``x`` and return what was received together with the channel state."""
        _check_symbols(x)
        x = x.to(torch.complex64)
        noise_power = _noise_power(snr_db, x.shape[0], x.device)
        # Fading and noise are drawn on the CPU, by Sionna's seedable CPU generators, whatever device
        # x is on: one seed gives the same channel on a GPU as on the CPU (benchmarks/gpu.py), so
        # runs on different machines stay paired. A batch is a few thousand symbols: the copies are cheap.
        coefficients = self._draw_coefficients(x.shape[0], x.shape[1]).to(x.device)
        awgn = _sionna("sionna.phy.channel").AWGN(precision="single", device="cpu")
        noisy = awgn((coefficients * x).cpu(), noise_power.cpu()).to(x.device)
        if self.csi == "perfect":
            gain = (coefficients.real.square() + coefficients.imag.square()).clamp_min(_ZF_GAIN_FLOOR)
            received = noisy * coefficients.conj() / gain
        else:
            received = noisy
        return ChannelOutput(received, coefficients, noise_power)

    @abstractmethod
    def _draw_coefficients(self, batch_size: int, channel_uses: int) -> torch.Tensor:
        """Fading coefficients [B, n] complex64 on the CPU, with E|h|^2 = 1."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, csi={self.csi!r}"


class AWGNChannel(Channel):
    """Additive white Gaussian noise: ``y = x + n``, ``n ~ CN(0, 10**(-snr_db/10))``."""

    name = "awgn"

    def _draw_coefficients(self, batch_size: int, channel_uses: int) -> torch.Tensor:
        return torch.ones(batch_size, channel_uses, dtype=torch.complex64)


def _rayleigh_coefficients(batch_size: int, channel_uses: int, block_length: int | None) -> torch.Tensor:
    """CN(0, 1) coefficients [B, n], constant over blocks of ``block_length`` symbols."""
    block_length = channel_uses if block_length is None else block_length
    num_blocks = max(1, math.ceil(channel_uses / block_length))
    # One Sionna draw per (sample, block); Sionna's own block fading spans a whole draw.
    fading = _sionna("sionna.phy.channel").RayleighBlockFading(1, 1, 1, 1, precision="single", device="cpu")
    h, _ = fading(batch_size * num_blocks, 1)
    per_block = h.reshape(batch_size, num_blocks)
    return per_block.repeat_interleave(block_length, dim=1)[:, :channel_uses]


class RayleighChannel(Channel):
    """Flat Rayleigh fading ``y = h x + n``, ``h ~ CN(0, 1)`` (Sionna ``RayleighBlockFading``).

    ``h`` is drawn per sample and per block of ``block_length`` consecutive symbols
    (``None``: one ``h`` for the whole sample, i.e. block fading). ``csi="perfect"`` equalizes by
    zero-forcing ``y * conj(h) / |h|^2``; ``csi="none"`` returns ``y``.
    """

    name = "rayleigh"

    def __init__(self, csi: str = "perfect", block_length: int | None = None) -> None:
        super().__init__()
        self.csi = check_csi(csi)
        self.block_length = _check_block_length(block_length)

    def _draw_coefficients(self, batch_size: int, channel_uses: int) -> torch.Tensor:
        return _rayleigh_coefficients(batch_size, channel_uses, self.block_length)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_length={self.block_length}"


class RicianChannel(Channel):
    """Flat Rician fading ``h = sqrt(K/(K+1)) + sqrt(1/(K+1)) * CN(0, 1)``, so ``E|h|^2 = 1``.

    ``k_factor`` (linear, >= 0) is the LOS-to-scattered power ratio; ``K = 0`` is Rayleigh. The LOS
    phase is 0 (the receiver is assumed locked to it). The scattered part comes from Sionna's
    ``RayleighBlockFading``; ``csi`` and ``block_length`` are as in :class:`RayleighChannel`.
    """

    name = "rician"

    def __init__(self, k_factor: float = 3.0, csi: str = "perfect", block_length: int | None = None) -> None:
        super().__init__()
        self.k_factor = check_k_factor(k_factor)
        self.csi = check_csi(csi)
        self.block_length = _check_block_length(block_length)

    def _draw_coefficients(self, batch_size: int, channel_uses: int) -> torch.Tensor:
        scattered = _rayleigh_coefficients(batch_size, channel_uses, self.block_length)
        line_of_sight = math.sqrt(self.k_factor / (self.k_factor + 1.0))
        return line_of_sight + math.sqrt(1.0 / (self.k_factor + 1.0)) * scattered

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k_factor={self.k_factor:g}, block_length={self.block_length}"


class FixedDrawWidth(Channel):
    """``channel`` with its noise and fading always drawn for ``draw_width`` symbols per sample.

    A sample of ``n <= draw_width`` symbols is zero-padded to ``draw_width``, sent, and the first
    ``n`` received symbols (and coefficients) are kept. So, from the same seed and batch, students
    of any width up to ``draw_width`` see the same noise and fading on the symbols they share, and a
    symbol a rate controller switches off (sent as 0) consumes its draw like a sent one: the draws
    do not depend on how many symbols a student sends. Evaluation uses it; training does not.
    Power conventions are the wrapped channel's: padding happens after power normalization.
    """

    def __init__(self, channel: Channel, draw_width: int) -> None:
        super().__init__()
        if draw_width < 1:
            raise ValueError(f"draw_width must be >= 1, got {draw_width}")
        self.channel, self.draw_width = channel, draw_width
        self.name, self.csi = channel.name, channel.csi

    def transmit(self, x: torch.Tensor, snr_db: torch.Tensor | float) -> ChannelOutput:
        _check_symbols(x)
        batch_size, channel_uses = x.shape
        if channel_uses > self.draw_width:
            raise ValueError(f"{channel_uses} symbols per sample exceed draw_width={self.draw_width}")
        padding = torch.zeros(batch_size, self.draw_width - channel_uses, dtype=torch.complex64, device=x.device)
        sent = self.channel.transmit(torch.cat([x.to(torch.complex64), padding], dim=1), snr_db)
        return ChannelOutput(sent.received[:, :channel_uses], sent.coefficients[:, :channel_uses], sent.noise_power)

    def _draw_coefficients(self, batch_size: int, channel_uses: int) -> torch.Tensor:
        return self.channel._draw_coefficients(batch_size, channel_uses)

    def extra_repr(self) -> str:
        return f"draw_width={self.draw_width}"


def build_channel(
    name: str, *, csi: str = "perfect", k_factor: float = 3.0, block_length: int | None = None, **params: float
) -> Channel:
    """The channel registered as ``name`` (``fedtosc.registries.CHANNELS``), given the link
    settings its constructor accepts (AWGN takes none, Rayleigh ``csi`` and ``block_length``,
    Rician ``k_factor`` too) and its own ``params`` as its registry entry declares them.
    ``csi`` is checked for every name."""
    check_csi(csi)
    _check_block_length(block_length)
    channel_class = CHANNELS.get(name)
    undeclared = sorted(set(params) - set(CHANNELS.parameters(name)))
    if undeclared:
        raise ValueError(f"channel {name!r} takes no parameter {undeclared}")
    settings = {"csi": csi, "k_factor": k_factor, "block_length": block_length}
    accepted = inspect.signature(channel_class).parameters
    return channel_class(**{key: value for key, value in settings.items() if key in accepted}, **params)
