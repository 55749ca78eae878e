"""The snr-mismatch study's summary: one wide-range student against fixed-SNR specialists.

Per eval link and SNR: every arm's accuracy over seeds, and for `full` the paired difference to
the best specialist at that point (the one with the highest mean accuracy there). `full`
"matches" where that difference's 95% interval contains 0 or lies above it.

Two more pairs, on the rows of the arm named first (difference = that arm − its partner):
`no_adaptive` against `fixed_rate`, full's SNR conditioning at the same bandwidth (all symbols),
which isolates the channel-adaptive module; and `fixed_rate` against `full`, what full's learned
rate costs or saves. Every row says how many symbols its arm sent at that SNR (`channel_uses`).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedtosc.study_catalog import SPECIALIST_PREFIX
from fedtosc.studies.tables import Cell, accuracy_at, cells_by_arm, paired_columns, save_figure, spread

__all__ = ["plot_snr_mismatch", "snr_mismatch_claims", "snr_mismatch_rows"]

_FULL = "full"
_NO_ADAPTIVE = "no_adaptive"
_FIXED_RATE = "fixed_rate"
# arm: the partner its rows are paired with (this arm − partner), and what the partner's lead means.
_PAIRS = {
    _NO_ADAPTIVE: (_FIXED_RATE, "the channel-adaptive module at equal bandwidth (fixed_rate − no_adaptive)"),
    _FIXED_RATE: (_FULL, "the learned rate (full − fixed_rate)"),
}


def snr_mismatch_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per eval link, SNR and arm; `full`'s rows carry the paired difference to the best specialist."""
    arms = cells_by_arm(cells)
    curves = {arm: members[0].results["accuracy_vs_snr"] for arm, members in arms.items()}
    channels = list(dict.fromkeys(channel for curve in curves.values() for channel in curve))
    rows = []
    for channel in channels:
        present = {arm: members for arm, members in arms.items() if channel in curves[arm]}
        for snr_db in sorted({float(snr) for arm in present for snr in curves[arm][channel]}):
            means = {arm: float(np.mean([accuracy_at(c, channel, snr_db) for c in members])) for arm, members in present.items()}
            specialists = [arm for arm in present if arm.startswith(SPECIALIST_PREFIX)]
            best = max(specialists, key=means.__getitem__) if specialists else None
            for arm, members in present.items():
                row = {"arm": arm, "channel": channel, "snr_db": snr_db,
                       "channel_uses": float(np.mean([c.results["channel_uses"][str(snr_db)] for c in members])),
                       **spread([accuracy_at(c, channel, snr_db) for c in members], members)}
                if arm == _FULL and best is not None:
                    row.update(paired_columns(members, present[best], best, channel, snr_db))
                    row["matches"] = bool(row["difference_high"] >= 0.0)
                partner = _PAIRS.get(arm, ("",))[0]
                if partner in present:
                    row.update(paired_columns(members, present[partner], partner, channel, snr_db))
                rows.append(row)
    return rows


def snr_mismatch_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per eval link: at how many SNRs `full` matches the best specialist, and where it does not;
    then, per pair in _PAIRS, where the partner's lead is above or below 0."""
    return _specialist_claims(rows) + [claim for arm in _PAIRS for claim in _pair_claims(rows, arm)]


def _pair_claims(rows: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    """Per eval link: the partner's mean lead over `arm` (the rows hold arm − partner, so the lead is
    their negation) and the SNRs where its paired 95% interval lies above or below 0."""
    what = _PAIRS[arm][1]
    claims = []
    for channel in dict.fromkeys(row["channel"] for row in rows if row["arm"] == arm and "difference" in row):
        points = [row for row in rows if row["channel"] == channel and row["arm"] == arm and "difference" in row]
        helps = [row["snr_db"] for row in points if row["difference_high"] < 0.0]
        hurts = [row["snr_db"] for row in points if row["difference_low"] > 0.0]
        gain = -float(np.mean([row["difference"] for row in points]))
        claims.append({
            "claim": f"{channel}: {what} averages {100 * gain:+.1f} points over {len(points)} SNRs; "
                     f"paired 95% interval above 0 at {_listed(helps)}, below 0 at {_listed(hurts)}",
            "channel": channel,
            "pair": f"{_PAIRS[arm][0]} - {arm}",
            "mean_gain": gain,
            "helps_at_snr_db": helps,
            "hurts_at_snr_db": hurts,
            "points": len(points),
        })
    return claims


def _listed(snrs: list[float]) -> str:
    return f"{len(snrs)} ({', '.join(f'{snr:g}' for snr in snrs)} dB)" if snrs else "none"


def _specialist_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    claims = []
    for channel in dict.fromkeys(row["channel"] for row in rows if "matches" in row):
        points = [row for row in rows if row["channel"] == channel and "matches" in row]
        behind = [row["snr_db"] for row in points if not row["matches"]]
        tail = f"; behind at {', '.join(f'{snr:g}' for snr in behind)} dB" if behind else ""
        claims.append({
            "claim": f"{channel}: full matches the best fixed-SNR specialist (paired 95% interval contains 0 or "
                     f"is above) at {len(points) - len(behind)} of {len(points)} SNRs{tail}",
            "channel": channel,
            "matched": len(points) - len(behind),
            "points": len(points),
            "behind_at_snr_db": behind,
        })
    return claims


def plot_snr_mismatch(rows: list[dict[str, Any]], path: Any) -> None:
    """One panel per eval link: accuracy vs SNR; full and no_adaptive solid, specialists dashed."""
    channels = list(dict.fromkeys(row["channel"] for row in rows)) or ["awgn"]
    figure, panels = plt.subplots(1, len(channels), figsize=(4.2 * len(channels), 4), sharey=True, squeeze=False)
    for panel, channel in zip(panels[0], channels, strict=True):
        for arm in dict.fromkeys(row["arm"] for row in rows if row["channel"] == channel):
            points = sorted((r for r in rows if r["channel"] == channel and r["arm"] == arm), key=lambda r: r["snr_db"])
            specialist = arm.startswith(SPECIALIST_PREFIX)
            panel.errorbar(
                [r["snr_db"] for r in points], [r["accuracy_mean"] for r in points], yerr=[r["accuracy_std"] for r in points],
                marker="o", markersize=3, capsize=2, linestyle="--" if specialist else "-", linewidth=1 if specialist else 2,
                label=arm.removeprefix(SPECIALIST_PREFIX),
            )
        panel.set_title(channel)
        panel.set_xlabel("SNR (dB)")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    panels[0][0].set_ylabel("test accuracy")
    panels[0][0].set_ylim(0, 1.02)
    figure.suptitle("one wide-range student vs fixed-SNR specialists (mean ± s.d. over seeds)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
