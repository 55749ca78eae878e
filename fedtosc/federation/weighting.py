"""SNR-aware aggregation weights: clients on better links count for more (`strategy.snr_aware`).

Every client reports both its weight (under AGGREGATION_WEIGHT_KEY) and its example count; the
strategy weighs by one of them.
"""

from __future__ import annotations

import math

from fedtosc.channels import ChannelProfile

__all__ = ["AGGREGATION_WEIGHT_KEY", "nominal_snr_db", "snr_aware_weight"]

AGGREGATION_WEIGHT_KEY = "aggregation-weight"


def nominal_snr_db(profile: ChannelProfile) -> float:
    """A client's typical SNR: the fixed value, the uniform range's midpoint, or the Gauss-Markov mean."""
    if profile.snr == "uniform":
        return (profile.snr_low_db + profile.snr_high_db) / 2
    return profile.snr_db


def snr_aware_weight(num_examples: int, profile: ChannelProfile, alpha: float) -> float:
    """num_examples x (1 + alpha * tanh(snr_db / 10)): clients on better links count for more."""
    return num_examples * max(0.05, 1.0 + alpha * math.tanh(nominal_snr_db(profile) / 10.0))
