"""The knowledge-rate study: student accuracy against the knowledge bytes per sample broadcast.

One row per codec arm: bytes per sample (results.json's knowledge section), accuracy, and the
paired difference to the `full` codec per test image (one seed: the interval is over images).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedtosc.studies.tables import Cell, accuracy_at, cells_by_arm, paired_columns, save_figure, spread

__all__ = ["knowledge_rate_claims", "knowledge_rate_rows", "plot_knowledge_rate"]

_FULL = "full"


def knowledge_rate_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """One row per arm, by bytes per sample; each arm but full paired with full (arm − full)."""
    arms = cells_by_arm(cells)
    rows = []
    for arm, members in arms.items():
        knowledge = members[0].results["knowledge"]
        row = {
            "arm": arm,
            "codec": knowledge["codec"],
            "codec_params": ";".join(f"{k}={v}" for k, v in sorted(knowledge["codec_params"].items())),
            "bytes_per_sample": float(np.mean([c.results["knowledge"]["bytes_per_sample"] for c in members])),
            "channel": channel,
            "snr_db": snr_db,
            **spread([accuracy_at(c, channel, snr_db) for c in members], members),
        }
        if arm != _FULL and _FULL in arms:
            row.update(paired_columns(members, arms[_FULL], _FULL, channel, snr_db))
        rows.append(row)
    return sorted(rows, key=lambda row: row["bytes_per_sample"])


def knowledge_rate_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fewest bytes per sample whose arm is not worse than full (interval contains 0 or is above)."""
    full = next((row for row in rows if row["arm"] == _FULL), None)
    paired = [row for row in rows if "difference" in row]
    if full is None or not paired:
        return []
    matching = [row for row in paired if row["difference_high"] >= 0.0]
    if not matching:
        sentence = f"every codec is below full ({full['bytes_per_sample']:g} B/sample) by its paired 95% interval"
    else:
        best = matching[0]
        sentence = (f"{best['arm']} at {best['bytes_per_sample']:g} B/sample is the cheapest arm not below full "
                    f"({full['bytes_per_sample']:g} B/sample): {best['arm']} − full = {best['difference']:+.3f} "
                    f"[{best['difference_low']:+.3f}, {best['difference_high']:+.3f}]")
    return [{
        "claim": sentence,
        "cheapest_not_below_full": matching[0]["arm"] if matching else None,
        "full_bytes_per_sample": full["bytes_per_sample"],
    }]


def plot_knowledge_rate(rows: list[dict[str, Any]], path: Any) -> None:
    """Accuracy against bytes per sample (log x), one point per arm; each arm's bar is full's accuracy
    plus its paired 95% interval of the difference to full."""
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    full = next((row for row in rows if row["arm"] == _FULL), None)
    for row in rows:
        if full is not None and "difference" in row:
            low, high = full["accuracy_mean"] + row["difference_low"], full["accuracy_mean"] + row["difference_high"]
            axes.plot([row["bytes_per_sample"]] * 2, [low, high], color="gray", linewidth=1)
        axes.plot(row["bytes_per_sample"], row["accuracy_mean"], "o", color="C0" if row["arm"] != _FULL else "C3")
        axes.annotate(row["arm"], (row["bytes_per_sample"], row["accuracy_mean"]), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    if full is not None:
        # A bar that crosses this line is an arm not distinguishable from full.
        axes.axhline(full["accuracy_mean"], color="C3", linestyle="--", linewidth=0.8)
    if rows:
        axes.set_title(f"accuracy on {rows[0]['channel']} at {rows[0]['snr_db']:g} dB; bars: paired 95% vs full", fontsize=10)
    axes.set_xscale("log")
    sizes = sorted({row["bytes_per_sample"] for row in rows})
    axes.set_xticks(sizes, [f"{size:g}" for size in sizes], fontsize=7, rotation=90)
    axes.minorticks_off()
    axes.set_xlabel("knowledge bytes per sample broadcast")
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    save_figure(figure, path)
