"""The rate-price study: what the price per symbol sent (`loss.rate_weight`) does to the learned rate.

One row per price: the mean symbols the full method sends at the eval SNR, its accuracy there, and
the paired difference per test image to the arm with price 0, where the rate term is off and the
controller has no reason to drop a symbol. The headline is the highest price that costs no accuracy
by that interval: the price at which the controller saves symbols for free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedtosc.studies.tables import Cell, paired_arm_rows, plot_paired_arms

__all__ = ["plot_rate_price", "rate_price_claims", "rate_price_rows"]


def _is_free(row: dict[str, Any]) -> bool:
    return row["rate_weight"] == 0.0


def _price_columns(members: list[Cell], channel: str, snr_db: float) -> dict[str, Any]:
    return {
        "rate_weight": float(members[0].config["loss"]["rate_weight"]),
        "channel": channel,
        "snr_db": snr_db,
        "channel_uses": float(np.mean([c.results["channel_uses"][str(float(snr_db))] for c in members])),
        "max_channel_uses": int(members[0].config["student"]["channel_uses"]),
    }


def rate_price_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """One row per arm, by price; each priced arm paired with the price-0 arm (arm − price 0)."""
    return paired_arm_rows(cells, _price_columns, _is_free, channel, snr_db, sort_key="rate_weight")


def rate_price_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest price whose accuracy is not below price 0's (paired 95% interval reaches 0 or above)."""
    free = next(filter(_is_free, rows), None)
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
    plus the paired 95% interval of the difference to it (crossing price 0's line: costs no accuracy)."""
    plot_paired_arms(
        rows, path, x_key="channel_uses", label_key="rate_weight", is_reference=_is_free,
        xlabel="mean symbols sent", title_size=9,
        title="{channel} at {snr_db:g} dB; labels: nats per symbol; bars: paired 95% vs price 0",
    )
