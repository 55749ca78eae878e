"""Wireless links for the student: limits, SNR profiles, the config's entry strings, channel blocks.

- :mod:`~fedtosc.channels.limits`: channel names, CSI modes and the one SNR range (pure Python);
- :mod:`~fedtosc.channels.profiles`: :class:`EvalLink` and a client's :class:`ChannelProfile`;
- :mod:`~fedtosc.channels.entries`: the ``channel.clients`` / ``channel.eval_channels`` parser;
- :mod:`~fedtosc.channels.blocks`: the differentiable torch/Sionna channels, power normalization,
  packing and seeding.

The first three are light and imported here; the blocks' names load torch and Sionna on first
use (``from fedtosc.channels import AWGNChannel`` works as before), so validating a config never
waits for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedtosc.channels.entries import client_profiles, eval_links, parse_channel_profiles, parse_eval_link
from fedtosc.channels.limits import CHANNEL_NAMES, CSI_MODES, SNR_DB_LIMITS, SNR_KINDS
from fedtosc.channels.profiles import ChannelProfile, EvalLink

_BLOCKS = (
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
)

__all__ = [
    "SNR_DB_LIMITS",
    "CSI_MODES",
    "CHANNEL_NAMES",
    "SNR_KINDS",
    "EvalLink",
    "ChannelProfile",
    "parse_channel_profiles",
    "parse_eval_link",
    "client_profiles",
    "eval_links",
    *_BLOCKS,
]


def __getattr__(name: str) -> Any:
    """The channel blocks' names, imported (with torch and Sionna) when first asked for."""
    if name in _BLOCKS:
        return getattr(importlib.import_module("fedtosc.channels.blocks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
