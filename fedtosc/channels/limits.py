"""What a link may be: CSI modes, SNR kinds and the one SNR range, in pure Python (channel names
are the registry's: `fedtosc.registries.CHANNELS`).

These are the only limits: the channel blocks, the SNR profiles and the config check all use
them, so a value the config accepts is one the channels accept. Pure Python on purpose: config
validation imports this module, and must stay fast (no torch, no Sionna).
"""

from __future__ import annotations

import math

__all__ = ["CSI_MODES", "SNR_DB_LIMITS", "SNR_KINDS", "check_csi", "check_k_factor", "check_snr_db"]

SNR_DB_LIMITS: tuple[float, float] = (-30.0, 50.0)
CSI_MODES: tuple[str, ...] = ("perfect", "none")
SNR_KINDS: tuple[str, ...] = ("fixed", "uniform", "gauss_markov")


def check_snr_db(snr_db: float, low: float = SNR_DB_LIMITS[0], high: float = SNR_DB_LIMITS[1]) -> float:
    """Return ``snr_db`` as a float, or raise ``ValueError`` naming it and the allowed range."""
    value = float(snr_db)
    allowed = f"allowed range is [{low:g}, {high:g}] dB"
    if not math.isfinite(value):
        raise ValueError(f"snr_db must be finite, got {value}; {allowed}")
    if not low <= value <= high:
        raise ValueError(f"snr_db={value:g} is out of range; {allowed}")
    return value


def check_csi(csi: str) -> str:
    """Return ``csi``, or raise ``ValueError`` listing the known modes."""
    if csi not in CSI_MODES:
        raise ValueError(f"unknown csi {csi!r}; known: {sorted(CSI_MODES)}")
    return csi


def check_k_factor(k_factor: float) -> float:
    """Return the Rician K (linear) as a float, or raise ``ValueError``: it must be finite and >= 0."""
    if not math.isfinite(k_factor) or k_factor < 0:
        raise ValueError(f"k_factor must be a finite number >= 0, got {k_factor!r}")
    return float(k_factor)
