"""The rate-price study: what the price per symbol sent (`loss.rate_weight`) does to the learned rate.

One row per price: the mean symbols the full method sends at the eval SNR, its accuracy there, and
the paired difference per test image to the arm with price 0, where the rate term is off and the
controller has no reason to drop a symbol. The headline is the highest price that costs no accuracy
by that interval: the price at which the controller saves symbols for free.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedtosc.studies.tables import Cell, accuracy_at, cells_by_arm, paired_columns, save_figure, spread

__all__ = ["plot_rate_price", "rate_price_claims", "rate_price_rows"]


def _price(cell: Cell) -> float:
    return float(cell.config["loss"]["rate_weight"])


def rate_price_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """One row per arm, by price; each priced arm paired with the price-0 arm (arm − price 0)."""
    arms = cells_by_arm(cells)
    free = next((arm for arm, members in arms.items() if _price(members[0]) == 0.0), None)
    rows = []
    for arm, members in arms.items():
        row = {
            "arm": arm,
            "rate_weight": _price(members[0]),
            "channel": channel,
            "snr_db": snr_db,
            "channel_uses": float(np.mean([c.results["channel_uses"][str(float(snr_db))] for c in members])),
            "max_channel_uses": int(members[0].config["student"]["channel_uses"]),
            **spread([accuracy_at(c, channel, snr_db) for c in members], members),
        }
        if free is not None and arm != free:
            row.update(paired_columns(members, arms[free], free, channel, snr_db))
        rows.append(row)
    return sorted(rows, key=lambda row: row["rate_weight"])


def rate_price_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest price whose accuracy is not below price 0's (paired 95% interval reaches 0 or above)."""
    free = next((row for row in rows if row["rate_weight"] == 0.0), None)
    priced = [row for row in rows if "difference" in row]
    if free is None or not priced:
        return []
    costless = [row for row in priced if row["difference_high"] >= 0.0]
    if not costless:
        sentence = (f"every price costs accuracy against price 0 ({free['channel_uses']:.1f} symbols, "
                    f"{free['accuracy_mean']:.3f}) by its paired 95% interval")
    else:
        best = costless[-1]
        sentence = (f"price {best['rate_weight']:g} is the highest that costs no accuracy: it sends "
                    f"{best['channel_uses']:.1f} of {best['max_channel_uses']} symbols against {free['channel_uses']:.1f} "
                    f"at price 0, difference {best['difference']:+.3f} [{best['difference_low']:+.3f}, "
                    f"{best['difference_high']:+.3f}]")
    return [{
        "claim": sentence,
        "highest_costless_price": costless[-1]["rate_weight"] if costless else None,
        "channel": free["channel"],
        "snr_db": free["snr_db"],
    }]


def plot_rate_price(rows: list[dict[str, Any]], path: Any) -> None:
    """Accuracy against the mean symbols sent, one point per price; each bar is price 0's accuracy
    plus the paired 95% interval of the difference to it."""
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    free = next((row for row in rows if row["rate_weight"] == 0.0), None)
    for row in rows:
        if free is not None and "difference" in row:
            low, high = free["accuracy_mean"] + row["difference_low"], free["accuracy_mean"] + row["difference_high"]
            axes.plot([row["channel_uses"]] * 2, [low, high], color="gray", linewidth=1)
        axes.plot(row["channel_uses"], row["accuracy_mean"], "o", color="C3" if row is free else "C0")
        axes.annotate(f"{row['rate_weight']:g}", (row["channel_uses"], row["accuracy_mean"]), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    if free is not None:
        # A bar that crosses this line is a price that costs no accuracy.
        axes.axhline(free["accuracy_mean"], color="C3", linestyle="--", linewidth=0.8)
    if rows:
        axes.set_title(f"{rows[0]['channel']} at {rows[0]['snr_db']:g} dB; labels: nats per symbol; "
                       "bars: paired 95% vs price 0", fontsize=9)
    axes.set_xlabel("mean symbols sent")
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
