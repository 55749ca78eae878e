"""Links and per-client SNR profiles: what a channel is, before any symbol is sent.

An :class:`EvalLink` is a channel type with its Rician K and CSI mode; a :class:`ChannelProfile`
is one client's link plus how its SNR behaves. Building them checks every value against
:mod:`fedtosc.channels.limits` in pure Python, so parsing a config's channel line is fast; torch
is imported only by the methods that draw SNRs or make a channel block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedtosc.channels.limits import SNR_DB_LIMITS, SNR_KINDS, check_csi, check_k_factor, check_snr_db
from fedtosc.registries import CHANNELS

if TYPE_CHECKING:
    import torch

    from fedtosc.channels.blocks import Channel

__all__ = ["ChannelProfile", "EvalLink"]


@dataclass(frozen=True)
class EvalLink:
    """A link without its SNR: channel type, Rician K (linear) and CSI mode.

    What evaluation sweeps over ``channel.eval_snr_db``, and what a client's
    :class:`ChannelProfile` is once its SNR behaviour is set aside. ``k_factor`` matters only for
    ``"rician"`` and ``csi`` for every channel but ``"awgn"`` (nothing to equalize); :meth:`describe` shows only
    what matters, so two links with the same label behave the same.
    """

    channel: str
    k_factor: float = 3.0
    csi: str = "perfect"
    # The channel's own parameters beyond K and CSI, as its registry entry declares them: (name, value)
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        declared = CHANNELS.parameters(self.channel)
        check_csi(self.csi)
        check_k_factor(self.k_factor)
        undeclared = sorted(name for name, _ in self.params if name not in declared)
        if undeclared:
            raise ValueError(f"channel {self.channel!r} takes no parameter {undeclared}; it takes {sorted(declared) or 'none'}")

    def make_channel(self, block_length: int | None = None) -> Channel:
        """The channel block of this link."""
        from fedtosc.channels.blocks import build_channel

        return build_channel(
            self.channel, csi=self.csi, k_factor=self.k_factor, block_length=block_length, **dict(self.params)
        )

    def describe(self) -> str:
        """Short label, e.g. ``awgn``, ``rayleigh[csi=none]``, ``rician(k=5)``: a results key."""
        label = f"rician(k={self.k_factor:g})" if self.channel == "rician" else self.channel
        if self.params:
            label += "(" + ",".join(f"{name}={value:g}" for name, value in self.params) + ")"
        # AWGN has nothing to equalize; every other (registered) channel fades, so CSI matters.
        if self.csi != "perfect" and self.channel != "awgn":
            label += f"[csi={self.csi}]"
        return label


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
    params: tuple[tuple[str, float], ...] = ()  # the channel's own parameters (see EvalLink)

    def __post_init__(self) -> None:
        self.link()  # checks channel, csi, k_factor and params
        if self.snr not in SNR_KINDS:
            raise ValueError(f"unknown snr kind {self.snr!r}; known: {list(SNR_KINDS)}")
        check_snr_db(self.snr_db)
        if self.snr == "uniform":
            check_snr_db(self.snr_low_db)
            check_snr_db(self.snr_high_db)
            if self.snr_low_db > self.snr_high_db:
                raise ValueError(f"uniform SNR range needs low <= high, got {self.snr_low_db:g}~{self.snr_high_db:g}")
        if not (math.isfinite(self.snr_std_db) and self.snr_std_db >= 0):
            raise ValueError(f"snr_std_db must be finite and >= 0, got {self.snr_std_db!r}")
        if not (0.0 <= self.snr_rho <= 1.0):
            raise ValueError(f"snr_rho must be in [0, 1], got {self.snr_rho!r}")

    def link(self) -> EvalLink:
        """This client's link (channel, K, CSI) without its SNR behaviour."""
        return EvalLink(self.channel, self.k_factor, self.csi, self.params)

    def gauss_markov_snr_db(self, server_round: int) -> float:
        """The Gauss-Markov SNR of ``server_round`` (round 0 is the mean), deterministic per seed."""
        if server_round < 0:
            raise ValueError(f"server_round must be >= 0, got {server_round}")
        import torch

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
        import torch

        from fedtosc.channels.blocks import validate_snr_db

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
