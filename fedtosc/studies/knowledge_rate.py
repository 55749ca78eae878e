"""The knowledge-rate study: student accuracy against the knowledge bytes per sample broadcast.

One row per codec arm: bytes per sample (results.json's knowledge section), accuracy, and the
paired difference to the `full` codec per test image (one seed: the interval is over images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedtosc.studies.tables import Cell, paired_arm_rows, plot_paired_arms

__all__ = ["knowledge_rate_claims", "knowledge_rate_rows", "plot_knowledge_rate"]

_FULL = "full"


def _is_full(row: dict[str, Any]) -> bool:
    return row["arm"] == _FULL


def _codec_columns(members: list[Cell], channel: str, snr_db: float) -> dict[str, Any]:
    knowledge = members[0].results["knowledge"]
    return {
        "codec": knowledge["codec"],
        "codec_params": ";".join(f"{k}={v}" for k, v in sorted(knowledge["codec_params"].items())),
        "bytes_per_sample": float(np.mean([c.results["knowledge"]["bytes_per_sample"] for c in members])),
        "channel": channel,
        "snr_db": snr_db,
    }


def knowledge_rate_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """One row per arm, by bytes per sample; each arm but full paired with full (arm − full)."""
    return paired_arm_rows(cells, _codec_columns, _is_full, channel, snr_db, sort_key="bytes_per_sample")


def knowledge_rate_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fewest bytes per sample whose arm is not worse than full (interval contains 0 or is above)."""
    full = next(filter(_is_full, rows), None)
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
    plot_paired_arms(
        rows, path, x_key="bytes_per_sample", label_key="arm", is_reference=_is_full,
        xlabel="knowledge bytes per sample broadcast", log_x=True,
        title="accuracy on {channel} at {snr_db:g} dB; bars: paired 95% vs full",
    )
