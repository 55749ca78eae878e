"""Wireless links for the student: limits, SNR profiles, the config's entry strings, channel blocks.

- :mod:`~fedtosc.channels.limits`: CSI modes and the one SNR range (pure Python); channel names
  are `fedtosc.registries.CHANNELS`';
- :mod:`~fedtosc.channels.profiles`: :class:`EvalLink` and a client's :class:`ChannelProfile`;
- :mod:`~fedtosc.channels.entries`: the ``channel.clients`` / ``channel.eval_channels`` parser;
- :mod:`~fedtosc.channels.blocks`: the differentiable torch/Sionna channels, power normalization,
  packing and seeding.

The first three are light and imported here; the blocks' names load torch on first use, and
Sionna on the first seeding or draw (``from fedtosc.channels import AWGNChannel`` works as
before), so validating a config never waits for them. A name that is in neither raises
AttributeError (after importing the blocks).
"""

from __future__ import annotations

import importlib
from typing import Any

from fedtosc.channels.entries import client_profiles, eval_links, parse_channel_profiles, parse_eval_link
from fedtosc.channels.limits import CSI_MODES, SNR_DB_LIMITS, SNR_KINDS
from fedtosc.channels.profiles import ChannelProfile, EvalLink

__all__ = [
    "SNR_DB_LIMITS",
    "CSI_MODES",
    "SNR_KINDS",
    "EvalLink",
    "ChannelProfile",
    "parse_channel_profiles",
    "parse_eval_link",
    "client_profiles",
    "eval_links",
]  # and, loaded on first use, every name in fedtosc.channels.blocks.__all__


def __getattr__(name: str) -> Any:
    """A channel block's name (``AWGNChannel``, ``validate_snr_db``...), imported with torch and
    Sionna when first asked for."""
    if not name.startswith("__"):
        blocks = importlib.import_module("fedtosc.channels.blocks")
        if name in blocks.__all__:
            return getattr(blocks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
