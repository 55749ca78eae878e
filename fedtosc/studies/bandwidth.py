"""The bandwidth study: accuracy against the mean symbols actually sent, on a low-SNR link.

Two stages. The `full` arm (learned rate) runs at each maximum width; then each finished `full`
cell gets a `fixed_rate` partner at N = round(the mean symbols that cell sent over the eval SNRs),
same seed (`fixed_rate_cells`, the study's follow-up). Rows pair each `full` width with its
fixed-rate partners, and `no_ib` with `full` at the same width, per test image.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedtosc.studies.sweep import ARM, CellOutcome
from fedtosc.studies.tables import Cell, accuracy_at, cells_by_arm, load_cells, paired_columns, save_figure, spread

__all__ = ["bandwidth_claims", "bandwidth_rows", "fixed_rate_cells", "fixed_rate_uses", "plot_bandwidth"]

_WIDTH = "student.channel_uses"


def fixed_rate_uses(cell: Cell) -> int:
    """N for a learned-rate cell: the mean symbols it sent over its eval SNRs, rounded (at least 1)."""
    return max(1, round(float(np.mean(list(cell.results["channel_uses"].values())))))


def fixed_rate_cells(finished: list[CellOutcome]) -> list[tuple[str, list[str]]]:
    """The follow-up: one `fixed_rate` cell per finished `full` cell, pinned to its seed (and any
    other axis it swept) at that cell's N; cells with the same settings are run once."""
    derived: dict[tuple[str, ...], None] = {}
    for cell in load_cells([outcome.run_dir for outcome in finished if outcome.axes.get(ARM) == "full"]):
        pins = [f"{key}={_override_value(value)}" for key, value in sorted(cell.axes.items()) if key not in (ARM, _WIDTH)]
        derived[("method=fixed_rate", f"{_WIDTH}={fixed_rate_uses(cell)}", *pins)] = None
    return [("fixed_rate", list(overrides)) for overrides in derived]


def _override_value(value: str) -> str:
    """A value as Hydra's override grammar reads it back: quoted when it holds a comma."""
    return f"'{value}'" if "," in value else value


def bandwidth_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """Rows per arm and maximum width: accuracy, mean symbols sent, and paired differences:
    full − fixed_rate (on the full row), no_ib − full (on the no_ib row)."""
    arms = cells_by_arm(cells)
    fixed = {(int(c.config["seed"]), int(c.config["student"]["channel_uses"])): c for c in arms.get("fixed_rate", [])}
    full_by_width = _by_width(arms.get("full", []))
    rows = []
    for width, members in full_by_width.items():
        row = _row("full", width, members, channel, snr_db)
        # The fixed-rate cells the follow-up derived from these (those that have finished).
        partners = [p for c in members if (p := fixed.get((int(c.config["seed"]), fixed_rate_uses(c)))) is not None]
        if partners:
            row.update(paired_columns(members, partners, "fixed_rate", channel, snr_db))
        rows.append(row)
        if partners:
            rows.append(_row("fixed_rate", width, partners, channel, snr_db))
    for width, members in _by_width(arms.get("no_ib", [])).items():
        row = _row("no_ib", width, members, channel, snr_db)
        if width in full_by_width:
            row.update(paired_columns(members, full_by_width[width], "full", channel, snr_db))
        rows.append(row)
    return rows


def _by_width(cells: list[Cell]) -> dict[int, list[Cell]]:
    widths: dict[int, list[Cell]] = {}
    for cell in cells:
        widths.setdefault(int(cell.config["student"]["channel_uses"]), []).append(cell)
    return dict(sorted(widths.items()))


def _row(arm: str, width: int, members: list[Cell], channel: str, snr_db: float) -> dict[str, Any]:
    """`max_channel_uses` is the width of the full cells the row belongs to; a fixed_rate row's own
    width is its mean_channel_uses."""
    return {
        "arm": arm,
        "max_channel_uses": width,
        "mean_channel_uses": float(np.mean([c.results["channel_uses"][str(float(snr_db))] for c in members])),
        "channel": channel,
        "snr_db": snr_db,
        **spread([accuracy_at(c, channel, snr_db) for c in members], members),
    }


def bandwidth_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width: full against fixed_rate at its mean, and no_ib against full, with paired intervals."""
    claims = []
    for row in rows:
        if "difference" not in row:
            continue
        first, second = (row["arm"], row["paired_with"])
        claims.append({
            "claim": f"at most {row['max_channel_uses']} symbols ({row['mean_channel_uses']:.2f} sent by {first}): "
                     f"{first} − {second} = {row['difference']:+.3f} [{row['difference_low']:+.3f}, "
                     f"{row['difference_high']:+.3f}] (paired 95% interval, McNemar p = {row['difference_p']:.3g})",
            "arm": first, "paired_with": second, "max_channel_uses": row["max_channel_uses"],
            "difference": row["difference"], "low": row["difference_low"], "high": row["difference_high"],
        })
    return claims


def plot_bandwidth(rows: list[dict[str, Any]], path: Any) -> None:
    """Accuracy against mean symbols sent (log2 x): one line per arm, error bars = s.d. over seeds."""
    figure, axes = plt.subplots(figsize=(6, 4.2))
    for arm in dict.fromkeys(row["arm"] for row in rows):
        points = sorted((row for row in rows if row["arm"] == arm), key=lambda row: row["mean_channel_uses"])
        axes.errorbar(
            [r["mean_channel_uses"] for r in points], [r["accuracy_mean"] for r in points],
            yerr=[r["accuracy_std"] for r in points], marker="o", capsize=3, label=arm,
        )
    if rows:
        axes.set_title(f"accuracy on {rows[0]['channel']} at {rows[0]['snr_db']:g} dB", fontsize=10)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("mean complex symbols sent per image")
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
