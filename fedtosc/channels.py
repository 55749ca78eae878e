"""Differentiable wireless channels and per-client SNR profiles (the "channel" box of design.md).

The student's encoder output is packed into complex symbols, normalized, and sent through one of
these channels; each federated client draws its SNR from its own :class:`ChannelProfile`. Noise and
Rayleigh coefficients come from Sionna (``sionna.phy.channel``); this module adds only what Sionna
lacks: per-sample power normalization, real<->complex packing, flat Rician fading, SNR profiles.

Conventions (they hold for every block here):

- ``snr_db``: average transmitted symbol power / noise power per complex symbol, in dB.
- Symbols are normalized to unit average power per sample (:func:`normalize_power`) before the
  channel, so the noise power per complex symbol is ``noise_power = 10**(-snr_db/10)`` and the
  AWGN is ``CN(0, noise_power)``.
- Fading is flat, with ``E|h|^2 = 1``. ``csi="perfect"``: the receiver knows ``h`` and applies
  zero-forcing ``y * conj(h) / |h|^2``; ``csi="none"``: the receiver gets ``y = h x + n`` as is.
- ``channel uses`` = complex symbols per sample = ``n`` in ``x: [B, n] complex64``.
- Randomness of the channels comes from Sionna's generators: seed them with :func:`seed_channels`
  (``torch.manual_seed`` does not reach them). SNR profiles take an explicit ``torch.Generator``.
- A link's CSI and Rician K: an entry's own ``:csi=``/``:k=`` options win; an entry that does not
  say takes the defaults ``channel.csi`` / ``channel.k_factor`` (:func:`client_profiles`,
  :func:`eval_links` apply them). Client and eval entries share that option syntax.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from sionna.phy import config as sionna_config
from sionna.phy.channel import AWGN, RayleighBlockFading

if TYPE_CHECKING:  # annotations only: the config module (and Hydra) stays out of this one's imports
    from fedtosc.config import ChannelConfig

__all__ = [
    "SNR_DB_LIMITS",
    "CSI_MODES",
    "CHANNEL_NAMES",
    "SNR_KINDS",
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
    "build_channel",
    "EvalLink",
    "ChannelProfile",
    "parse_channel_profiles",
    "parse_eval_link",
    "client_profiles",
    "eval_links",
]

SNR_DB_LIMITS: tuple[float, float] = (-30.0, 50.0)
CSI_MODES: tuple[str, ...] = ("perfect", "none")
CHANNEL_NAMES: tuple[str, ...] = ("awgn", "rayleigh", "rician")
SNR_KINDS: tuple[str, ...] = ("fixed", "uniform", "gauss_markov")

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
    states the allowed range.
    """
    snr = torch.as_tensor(snr_db).to(torch.float32)
    allowed = f"allowed range is [{low:g}, {high:g}] dB"
    flat = snr.detach().reshape(-1)
    bad_finite = ~torch.isfinite(flat)
    if bool(bad_finite.any()):
        bad_value = flat[bad_finite][0].item()
        raise ValueError(f"snr_db must be finite, got {bad_value}; {allowed}")
    bad_range = (flat < low) | (flat > high)
    if bool(bad_range.any()):
        bad_value = flat[bad_range][0].item()
        raise ValueError(f"snr_db={bad_value:g} is out of range; {allowed}")
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
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        sionna_config.seed = int(seed)


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


def _check_csi(csi: str) -> str:
    if csi not in CSI_MODES:
        raise ValueError(f"unknown csi {csi!r}; known: {sorted(CSI_MODES)}")
    return csi


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
        device = str(x.device)
        coefficients = self._draw_coefficients(x.shape[0], x.shape[1], device)
        # Sionna's AWGN draws CN(0, noise_power) with the device's own (seedable) generator.
        noisy = AWGN(precision="single", device=device)(coefficients * x, noise_power)
        if self.csi == "perfect":
            gain = (coefficients.real.square() + coefficients.imag.square()).clamp_min(_ZF_GAIN_FLOOR)
            received = noisy * coefficients.conj() / gain
        else:
            received = noisy
        return ChannelOutput(received, coefficients, noise_power)

    @abstractmethod
    def _draw_coefficients(self, batch_size: int, channel_uses: int, device: str) -> torch.Tensor:
        """Fading coefficients [B, n] complex64 with E|h|^2 = 1."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, csi={self.csi!r}"


class AWGNChannel(Channel):
    """Additive white Gaussian noise: ``y = x + n``, ``n ~ CN(0, 10**(-snr_db/10))``."""

    name = "awgn"

    def _draw_coefficients(self, batch_size: int, channel_uses: int, device: str) -> torch.Tensor:
        return torch.ones(batch_size, channel_uses, dtype=torch.complex64, device=device)


def _rayleigh_coefficients(
    batch_size: int, channel_uses: int, block_length: int | None, device: str
) -> torch.Tensor:
    """CN(0, 1) coefficients [B, n], constant over blocks of ``block_length`` symbols."""
    block_length = channel_uses if block_length is None else block_length
    num_blocks = max(1, math.ceil(channel_uses / block_length))
    # One Sionna draw per (sample, block); Sionna's own block fading spans a whole draw.
    fading = RayleighBlockFading(1, 1, 1, 1, precision="single", device=device)
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
        self.csi = _check_csi(csi)
        self.block_length = _check_block_length(block_length)

    def _draw_coefficients(self, batch_size: int, channel_uses: int, device: str) -> torch.Tensor:
        return _rayleigh_coefficients(batch_size, channel_uses, self.block_length, device)

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
        if not math.isfinite(k_factor) or k_factor < 0:
            raise ValueError(f"k_factor must be a finite number >= 0, got {k_factor!r}")
        self.k_factor = float(k_factor)
        self.csi = _check_csi(csi)
        self.block_length = _check_block_length(block_length)

    def _draw_coefficients(self, batch_size: int, channel_uses: int, device: str) -> torch.Tensor:
        scattered = _rayleigh_coefficients(batch_size, channel_uses, self.block_length, device)
        line_of_sight = math.sqrt(self.k_factor / (self.k_factor + 1.0))
        return line_of_sight + math.sqrt(1.0 / (self.k_factor + 1.0)) * scattered

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k_factor={self.k_factor:g}, block_length={self.block_length}"


def build_channel(
    name: str, *, csi: str = "perfect", k_factor: float = 3.0, block_length: int | None = None
) -> Channel:
    """Make a channel by name: ``"awgn"``, ``"rayleigh"`` or ``"rician"``.

    ``csi`` is checked for every name (AWGN has nothing to equalize, so it ignores the value).
    """
    _check_csi(csi)
    _check_block_length(block_length)
    if name == "awgn":
        return AWGNChannel()
    if name == "rayleigh":
        return RayleighChannel(csi=csi, block_length=block_length)
    if name == "rician":
        return RicianChannel(k_factor=k_factor, csi=csi, block_length=block_length)
    raise ValueError(f"unknown channel {name!r}; known: {list(CHANNEL_NAMES)}")


# --------------------------------------------------------------------------------------------
# Links (channel, K, CSI) and per-client SNR profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalLink:
    """A link without its SNR: channel type, Rician K (linear) and CSI mode.

    What evaluation sweeps over ``channel.eval_snr_db``, and what a client's
    :class:`ChannelProfile` is once its SNR behaviour is set aside. ``k_factor`` matters only for
    ``"rician"`` and ``csi`` not for ``"awgn"`` (nothing to equalize); :meth:`describe` shows only
    what matters, so two links with the same label behave the same.
    """

    channel: str
    k_factor: float = 3.0
    csi: str = "perfect"

    def __post_init__(self) -> None:
        if self.channel not in CHANNEL_NAMES:
            raise ValueError(f"unknown channel {self.channel!r}; known: {list(CHANNEL_NAMES)}")
        _check_csi(self.csi)
        if not math.isfinite(self.k_factor) or self.k_factor < 0:
            raise ValueError(f"k_factor must be a finite number >= 0, got {self.k_factor!r}")

    def make_channel(self, block_length: int | None = None) -> Channel:
        """The channel block of this link."""
        return build_channel(self.channel, csi=self.csi, k_factor=self.k_factor, block_length=block_length)

    def describe(self) -> str:
        """Short label, e.g. ``awgn``, ``rayleigh[csi=none]``, ``rician(k=5)``: a results key."""
        if self.channel == "rician":
            return f"rician(k={self.k_factor:g})" + ("" if self.csi == "perfect" else f"[csi={self.csi}]")
        if self.channel == "rayleigh" and self.csi != "perfect":
            return f"rayleigh[csi={self.csi}]"
        return self.channel


@dataclass(frozen=True)
class ChannelProfile:
    """One client's channel: its type and how its SNR behaves.

    snr == "fixed": every sample at ``snr_db``.
    snr == "uniform": each sample's SNR ~ U[snr_low_db, snr_high_db].
    snr == "gauss_markov": one SNR per round, ``s_r = mean + rho (s_{r-1} - mean)
        + sqrt(1 - rho^2) std N(0, 1)`` with ``mean = snr_db``, ``s_0 = mean``, clipped to
        SNR_DB_LIMITS; the sequence is a pure function of ``seed`` (not of the caller's generator).
    """

    channel: str
    snr: str
    snr_db: float
    snr_low_db: float = 0.0
    snr_high_db: float = 20.0
    snr_std_db: float = 3.0
    snr_rho: float = 0.9
    k_factor: float = 3.0
    csi: str = "perfect"
    seed: int = 0

    def __post_init__(self) -> None:
        self.link()  # checks channel, csi and k_factor
        if self.snr not in SNR_KINDS:
            raise ValueError(f"unknown snr kind {self.snr!r}; known: {list(SNR_KINDS)}")
        validate_snr_db(self.snr_db)
        if self.snr == "uniform":
            validate_snr_db([self.snr_low_db, self.snr_high_db])
            if self.snr_low_db > self.snr_high_db:
                raise ValueError(f"uniform SNR range needs low <= high, got {self.snr_low_db:g}~{self.snr_high_db:g}")
        if not (math.isfinite(self.snr_std_db) and self.snr_std_db >= 0):
            raise ValueError(f"snr_std_db must be finite and >= 0, got {self.snr_std_db!r}")
        if not (0.0 <= self.snr_rho <= 1.0):
            raise ValueError(f"snr_rho must be in [0, 1], got {self.snr_rho!r}")

    def link(self) -> EvalLink:
        """This client's link (channel, K, CSI) without its SNR behaviour."""
        return EvalLink(self.channel, self.k_factor, self.csi)

    def gauss_markov_snr_db(self, server_round: int) -> float:
        """The Gauss-Markov SNR of ``server_round`` (round 0 is the mean), deterministic per seed."""
        if server_round < 0:
            raise ValueError(f"server_round must be >= 0, got {server_round}")
        generator = torch.Generator().manual_seed(self.seed)
        # Draw the whole innovation sequence at once: round r always sees the same r draws.
        innovations = torch.randn(server_round, generator=generator, dtype=torch.float64).tolist()
        low, high = SNR_DB_LIMITS
        innovation_scale = math.sqrt(1.0 - self.snr_rho**2) * self.snr_std_db
        snr = self.snr_db
        for innovation in innovations:
            snr = self.snr_db + self.snr_rho * (snr - self.snr_db) + innovation_scale * innovation
            snr = min(max(snr, low), high)
        return snr

    def sample_snr_db(self, batch_size: int, server_round: int, generator: torch.Generator) -> torch.Tensor:
        """SNRs for one training batch: ``[batch_size]`` float32 (CPU), validated."""
        if self.snr == "uniform":
            unit = torch.rand(batch_size, generator=generator, dtype=torch.float32)
            snr = self.snr_low_db + (self.snr_high_db - self.snr_low_db) * unit
        elif self.snr == "gauss_markov":
            snr = torch.full((batch_size,), self.gauss_markov_snr_db(server_round), dtype=torch.float32)
        else:
            snr = torch.full((batch_size,), self.snr_db, dtype=torch.float32)
        return validate_snr_db(snr)

    def make_channel(self, block_length: int | None = None) -> Channel:
        """The channel block this profile describes."""
        return self.link().make_channel(block_length)

    def describe(self) -> str:
        """Short label, e.g. ``rayleigh@uniform(0,10)dB`` or ``rician(k=5)@gm(10,3,0.9)dB``."""
        if self.snr == "uniform":
            snr = f"uniform({self.snr_low_db:g},{self.snr_high_db:g})"
        elif self.snr == "gauss_markov":
            snr = f"gm({self.snr_db:g},{self.snr_std_db:g},{self.snr_rho:g})"
        else:
            snr = f"{self.snr_db:g}"
        return f"{self.link().describe()}@{snr}dB"


_OPTION_FORMS = "[:k=<K>][:csi=perfect|none]"
_PROFILE_FORMS = (
    f"accepted forms: '<channel>:<snr>{_OPTION_FORMS}' with <channel> in "
    f"{list(CHANNEL_NAMES)} and <snr> one of '10' (fixed), '0~20' (uniform per sample), "
    "'gm(10,3,0.9)' (Gauss-Markov mean,std,rho per round); k only for rician; an option left out "
    "takes channel.k_factor / channel.csi; e.g. 'awgn:0,rayleigh:0~20,rician:10:k=5'"
)
_EVAL_FORMS = (
    f"accepted forms: '<channel>{_OPTION_FORMS}' with <channel> in {list(CHANNEL_NAMES)}, no SNR "
    "(channel.eval_snr_db gives it); k only for rician; an option left out takes channel.k_factor / "
    "channel.csi; e.g. 'awgn', 'rayleigh:csi=none', 'rician:k=5'"
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_UNIFORM_RE = re.compile(rf"^({_NUMBER})~({_NUMBER})$")
_GAUSS_MARKOV_RE = re.compile(rf"^gm\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)$")
_FIXED_RE = re.compile(rf"^{_NUMBER}$")
# Split on commas that are not inside gm(...).
_ENTRY_SPLIT_RE = re.compile(r",(?![^()]*\))")


def _parse_link(entry: str, channel: str, options: list[str], csi: str, k_factor: float, forms: str) -> EvalLink:
    """The link of one entry: its ``k=``/``csi=`` options over the defaults ``csi``/``k_factor``."""
    if channel not in CHANNEL_NAMES:
        raise ValueError(f"unknown channel {channel!r} in entry {entry!r}; {forms}")
    for option in options:
        key, sep, value = option.partition("=")
        if key == "k" and sep and channel == "rician":
            try:
                k_factor = float(value)
            except ValueError:
                raise ValueError(f"malformed k in entry {entry!r}; {forms}") from None
        elif key == "csi" and sep:
            csi = value
        else:
            raise ValueError(f"unexpected option {option!r} in entry {entry!r}; {forms}")
    try:
        return EvalLink(channel, k_factor, csi)
    except ValueError as error:
        raise ValueError(f"invalid entry {entry!r}: {error}; {forms}") from None


def _parse_profile_entry(entry: str, seed: int, csi: str, k_factor: float) -> ChannelProfile:
    parts = [part.strip() for part in entry.split(":")]
    if len(parts) < 2:
        raise ValueError(f"malformed channel entry {entry!r}; {_PROFILE_FORMS}")
    snr_text = parts[1].replace(" ", "")
    link = _parse_link(entry, parts[0].lower(), parts[2:], csi, k_factor, _PROFILE_FORMS)
    fields: dict[str, object] = {"channel": link.channel, "k_factor": link.k_factor, "csi": link.csi, "seed": seed}
    if (match := _UNIFORM_RE.match(snr_text)) is not None:
        fields.update(snr="uniform", snr_low_db=float(match[1]), snr_high_db=float(match[2]))
        fields["snr_db"] = (float(match[1]) + float(match[2])) / 2
    elif (match := _GAUSS_MARKOV_RE.match(snr_text)) is not None:
        fields.update(snr="gauss_markov", snr_db=float(match[1]), snr_std_db=float(match[2]), snr_rho=float(match[3]))
    elif _FIXED_RE.match(snr_text) is not None:
        fields.update(snr="fixed", snr_db=float(snr_text))
    else:
        raise ValueError(f"malformed SNR {snr_text!r} in entry {entry!r}; {_PROFILE_FORMS}")
    try:
        return ChannelProfile(**fields)  # type: ignore[arg-type]
    except ValueError as error:
        raise ValueError(f"invalid entry {entry!r}: {error}; {_PROFILE_FORMS}") from None


def parse_channel_profiles(
    spec: str, num_clients: int, seed: int = 0, *, csi: str = "perfect", k_factor: float = 3.0
) -> list[ChannelProfile]:
    """Per-client profiles from one config line, e.g. ``"awgn:0,awgn:5,rayleigh:10,rician:20:k=5"``.

    Give one entry per client, or a single entry for all clients. Client ``i`` gets
    ``seed + i`` for its Gauss-Markov sequence, so clients with the same entry still differ.
    ``csi`` and ``k_factor`` are the defaults for entries without ``:csi=`` / ``:k=`` (a config's
    are ``channel.csi`` / ``channel.k_factor``: use :func:`client_profiles`).
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    entries = [entry.strip() for entry in _ENTRY_SPLIT_RE.split(spec.strip())]
    if any(not entry for entry in entries):
        raise ValueError(f"empty channel entry in {spec!r}; {_PROFILE_FORMS}")
    if len(entries) == 1:
        entries = entries * num_clients
    elif len(entries) != num_clients:
        raise ValueError(
            f"channel spec {spec!r} has {len(entries)} entries but there are {num_clients} clients; "
            f"give 1 entry or {num_clients}; {_PROFILE_FORMS}"
        )
    return [_parse_profile_entry(entry, seed + index, csi, k_factor) for index, entry in enumerate(entries)]


def parse_eval_link(entry: str, *, csi: str = "perfect", k_factor: float = 3.0) -> EvalLink:
    """One ``channel.eval_channels`` entry, e.g. ``"awgn"``, ``"rayleigh:csi=none"``, ``"rician:k=5"``.

    The options are those of a client entry, without its SNR part; ``csi`` and ``k_factor`` are the
    defaults for an entry that does not set them. A malformed entry raises ``ValueError`` naming
    it and listing the accepted forms.
    """
    channel, *options = [part.strip() for part in entry.split(":")]
    return _parse_link(entry, channel.lower(), options, csi, k_factor, _EVAL_FORMS)


def client_profiles(config: ChannelConfig, num_clients: int, seed: int = 0, spec: str | None = None) -> list[ChannelProfile]:
    """The clients' profiles from ``config.clients`` (or ``spec``, e.g. a node's own ``channel=``
    entry), with ``config.csi`` / ``config.k_factor`` as the defaults entries may override."""
    line = config.clients if spec is None else spec
    return parse_channel_profiles(line, num_clients, seed, csi=config.csi, k_factor=config.k_factor)


def eval_links(config: ChannelConfig, num_clients: int) -> list[EvalLink]:
    """The links the final SNR sweep evaluates, in order, each with a distinct label.

    ``config.eval_channels`` as given (entries parsed by :func:`parse_eval_link`), or, when it is
    ``None``, the training links: the distinct links of the clients, in client order, so every
    client's channel is evaluated with the K and CSI it trained with. Two links with the same
    :meth:`EvalLink.describe` label behave the same; a list that names one twice raises ``ValueError``.
    """
    if config.eval_channels is None:
        links: dict[str, EvalLink] = {}
        for profile in client_profiles(config, num_clients):
            links.setdefault(profile.link().describe(), profile.link())
        return list(links.values())
    parsed = [parse_eval_link(entry, csi=config.csi, k_factor=config.k_factor) for entry in config.eval_channels]
    labels = [link.describe() for link in parsed]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"eval channels {list(config.eval_channels)} name the same link more than once: {repeated}")
    return parsed
