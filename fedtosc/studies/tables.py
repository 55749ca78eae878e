"""A study's summary: its cells' results.json files grouped over seeds into one CSV and one figure.

Each cell is a run directory (config.yaml, results.json, outcomes.safetensors) plus cell.json
naming its axis values. Cells that differ only in `seed` form one point: mean and sample standard
deviation over seeds; differences between arms are paired per test image (`paired_columns`).
The data-efficiency and snr-sweep studies live here; the others have a module each. The studies
that compare arms with one reference arm (rate-price, knowledge-rate) share `paired_arm_rows` and
`plot_paired_arms`.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import OmegaConf

from fedtosc.outcomes import RunOutcomes, outcome_key, read_outcomes
from fedtosc.results import read_results  # importing it selects matplotlib's headless Agg backend
from fedtosc.studies.paired import ArmOutcomes, paired_difference
from fedtosc.studies.sweep import ARM, CELL_FILE

__all__ = [
    "Cell",
    "accuracy_at",
    "cells_by_arm",
    "data_efficiency_claims",
    "data_efficiency_rows",
    "paired_arm_rows",
    "paired_columns",
    "spread",
    "load_cells",
    "plot_paired_arms",
    "plot_data_efficiency",
    "plot_snr_sweep",
    "save_figure",
    "snr_sweep_rows",
    "write_csv",
]

_SEED = "seed"
_LABEL_FRACTION = "dataset.label_fraction"
_CLIENTS = "channel.clients"
_METHOD = "method"
_HEADLINE_FRACTION = 0.1  # the label fraction whose `full` accuracy labels_only must come within a point of
_HEADLINE_MARGIN = 0.01


@dataclass(frozen=True)
class Cell:
    """One finished cell: its axis values, resolved config and results."""

    run_dir: Path
    axes: dict[str, str]
    config: dict[str, Any]
    results: dict[str, Any]

    @cached_property
    def _outcomes(self) -> RunOutcomes:
        return read_outcomes(self.run_dir)

    def outcomes_at(self, channel: str, snr_db: float) -> ArmOutcomes:
        """Which test images this cell's student got right on `channel` at `snr_db`."""
        key = outcome_key(channel, snr_db)
        if key not in self._outcomes.correct:
            raise ValueError(f"{self.run_dir}: no per-image outcomes at {key}; it has {sorted(self._outcomes.correct)}")
        return ArmOutcomes(str(self.run_dir), self._outcomes.seed, self._outcomes.test_index, self._outcomes.correct[key])


def paired_columns(this: list[Cell], other: list[Cell], other_name: str, channel: str, snr_db: float) -> dict[str, Any]:
    """`paired_with` = other_name, `paired_seeds`, and `difference[_low|_high|_p]`: accuracy of
    `this` − `other`, paired per test image over the seeds both have (`fedtosc.studies.paired`);
    no columns when they share no seed. A grid finished in parts pairs what has landed."""
    seeds = {int(cell.config["seed"]) for cell in this} & {int(cell.config["seed"]) for cell in other}
    if not seeds:
        return {}
    this, other = ([cell for cell in cells if int(cell.config["seed"]) in seeds] for cells in (this, other))
    difference = paired_difference(
        [cell.outcomes_at(channel, snr_db) for cell in this], [cell.outcomes_at(channel, snr_db) for cell in other]
    )
    return {"paired_with": other_name, "paired_seeds": ";".join(map(str, sorted(seeds))), **difference.columns("difference")}


def cells_by_arm(cells: list[Cell]) -> dict[str, list[Cell]]:
    """The cells of each arm (the `arm` axis), in the order arms first appear, each list by seed."""
    arms: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        arms[cell.axes.get(ARM, "")].append(cell)
    return {arm: sorted(members, key=lambda cell: int(cell.config["seed"])) for arm, members in arms.items()}


def paired_arm_rows(
    cells: list[Cell],
    columns: Callable[[list[Cell], str, float], dict[str, Any]],
    is_reference: Callable[[dict[str, Any]], bool],
    channel: str,
    snr_db: float,
    sort_key: str,
) -> list[dict[str, Any]]:
    """One row per arm, sorted by `sort_key`: `arm`, then `columns(members, channel, snr_db)` (what the
    study reads off the arm, in CSV order), then the accuracy `spread` on `channel` at `snr_db`. Every
    arm but the first whose row `is_reference` is paired with that one (arm − reference)."""
    arms = cells_by_arm(cells)
    rows = {
        arm: {"arm": arm, **columns(members, channel, snr_db),
              **spread([accuracy_at(cell, channel, snr_db) for cell in members], members)}
        for arm, members in arms.items()
    }
    reference = next((arm for arm, row in rows.items() if is_reference(row)), None)
    for arm, row in rows.items():
        if reference is not None and arm != reference:
            row.update(paired_columns(arms[arm], arms[reference], reference, channel, snr_db))
    return sorted(rows.values(), key=lambda row: row[sort_key])


def plot_paired_arms(
    rows: list[dict[str, Any]],
    path: Path,
    *,
    x_key: str,
    label_key: str,
    is_reference: Callable[[dict[str, Any]], bool],
    xlabel: str,
    title: str,
    title_size: float = 10,
    log_x: bool = False,
) -> None:
    """Accuracy against `x_key`, one point per row of `paired_arm_rows`, labelled by its `label_key`
    (a float as `:g`). Each paired row's bar is the reference's accuracy plus the paired 95% interval
    of the difference to it, so the bars share one dashed reference line. `title` is formatted with
    the first row's columns (e.g. `{channel}`); `log_x` puts the x axis on a log scale, ticked at the rows."""
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    reference = next((row for row in rows if is_reference(row)), None)
    for row in rows:
        if reference is not None and "difference" in row:
            low = reference["accuracy_mean"] + row["difference_low"]
            high = reference["accuracy_mean"] + row["difference_high"]
            axes.plot([row[x_key]] * 2, [low, high], color="gray", linewidth=1)
        axes.plot(row[x_key], row["accuracy_mean"], "o", color="C3" if row is reference else "C0")
        label = row[label_key]
        axes.annotate(f"{label:g}" if isinstance(label, float) else str(label), (row[x_key], row["accuracy_mean"]),
                      fontsize=7, textcoords="offset points", xytext=(4, 4))
    if reference is not None:
        # A bar that crosses this line is an arm not distinguishable from the reference.
        axes.axhline(reference["accuracy_mean"], color="C3", linestyle="--", linewidth=0.8)
    if rows:
        axes.set_title(title.format(**rows[0]), fontsize=title_size)
    if log_x:
        axes.set_xscale("log")
        # Ticks at the rows' own values: the default decades would not name the arms' sizes.
        values = sorted({row[x_key] for row in rows})
        axes.set_xticks(values, [f"{value:g}" for value in values], fontsize=7, rotation=90)
        axes.minorticks_off()
    axes.set_xlabel(xlabel)
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    save_figure(figure, path)


def load_cells(run_dirs: list[Path]) -> list[Cell]:
    """Read each cell; a directory without complete results.json raises ValueError naming it."""
    cells = []
    for run_dir in run_dirs:
        try:
            axes = json.loads((run_dir / CELL_FILE).read_text())["axes"]
            config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
            results = read_results(run_dir)
        except (OSError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"{run_dir} is not a finished study cell: {error}") from error
        cells.append(Cell(run_dir, axes, config, results))
    return cells


def data_efficiency_rows(cells: list[Cell], channel: str, snr_db: float) -> list[dict[str, Any]]:
    """Accuracy on `channel` at `snr_db` against label fraction: one row per series and fraction."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    varying = _varying_axes(cells)
    for cell in cells:
        fraction = float(cell.config["dataset"]["label_fraction"])
        groups[(_series_key(cell, exclude=(_SEED, _LABEL_FRACTION)), fraction)].append(cell)
    rows = []
    for (series, fraction), members in sorted(groups.items()):
        accuracies = [accuracy_at(cell, channel, snr_db) for cell in members]
        baseline = groups.get((_with_method(series, "labels_only"), fraction))
        paired = (
            paired_columns(members, baseline, "labels_only", channel, snr_db)
            if dict(series).get(_METHOD) == "full" and baseline else {}
        )
        rows.append(
            {
                **dict(series),
                "series": _series_label(series, members[0], varying),
                **_profile_columns(members[0]),
                "label_fraction": fraction,
                "channel": channel,
                "snr_db": snr_db,
                **spread(accuracies, members),
                "teacher_accuracy": float(np.mean([cell.results["teacher"]["accuracy"] for cell in members])),
                **paired,
            }
        )
    context_axes = {key for cell in cells for key in cell.axes} - {_SEED, _LABEL_FRACTION, _METHOD}
    return _with_headline(rows, context_axes)


def data_efficiency_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline per client profile: the smallest label fraction at which labels_only comes within
    1 point of what full reaches at 10%, read off the log-fraction axis."""
    claims = []
    for profile, row in {row["headline_profile"]: row for row in rows if "headline_profile" in row}.items():
        reached = row["labels_only_within_1pt_of_full_at_10pct"]
        where = "is never reached" if reached == "not reached" else f"is reached at a label fraction of {reached:.3g}"
        claims.append({
            "claim": f"{profile}: full reaches {row['full_accuracy_at_10pct']:.3f} at 10% of the labels; "
                     f"labels_only within 1 point of it {where}",
            "profile": profile,
            "full_accuracy_at_10pct": row["full_accuracy_at_10pct"],
            "labels_only_within_1pt_of_full_at_10pct": reached,
        })
    return claims


def _with_method(series: tuple[tuple[str, str], ...], method: str) -> tuple[tuple[str, str], ...]:
    return tuple((key, method if key == _METHOD else value) for key, value in series)


def _with_headline(rows: list[dict[str, Any]], context_axes: set[str]) -> list[dict[str, Any]]:
    """The rows of full and labels_only that share the `context_axes` (e.g. channel.clients) get
    their headline, when full ran at 10%."""
    curves: dict[tuple, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        context = tuple(sorted((key, row.get(key)) for key in context_axes))
        curves[context][row.get(_METHOD, "")].append(row)
    for methods in curves.values():
        at_10pct = [row for row in methods.get("full", []) if row["label_fraction"] == _HEADLINE_FRACTION]
        if not at_10pct or not methods.get("labels_only"):
            continue
        target = at_10pct[0]["accuracy_mean"]
        reached = _smallest_fraction_reaching(methods["labels_only"], target - _HEADLINE_MARGIN)
        for row in (*methods["full"], *methods["labels_only"]):
            row.update({
                "headline_profile": f"{row['profile']} clients ({row['mean_client_snr_db']:g} dB mean)",
                "full_accuracy_at_10pct": target,
                "labels_only_within_1pt_of_full_at_10pct": reached,
            })
    return rows


def _smallest_fraction_reaching(curve: list[dict[str, Any]], target: float) -> float | str:
    """Where the mean accuracy curve first reaches `target`, linear in log(fraction) between the
    points either side; the smallest fraction run if it starts above; "not reached" if it never does."""
    points = sorted((row["label_fraction"], row["accuracy_mean"]) for row in curve)
    for index, (fraction, accuracy) in enumerate(points):
        if accuracy >= target:
            if index == 0:
                return fraction
            below_fraction, below_accuracy = points[index - 1]
            share = (target - below_accuracy) / (accuracy - below_accuracy)
            return math.exp(math.log(below_fraction) + share * (math.log(fraction) - math.log(below_fraction)))
    return "not reached"


def snr_sweep_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """Accuracy against SNR for every eval channel: one row per series, channel and SNR."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    varying = _varying_axes(cells)
    for cell in cells:
        groups[_series_key(cell, exclude=(_SEED,))].append(cell)
    rows = []
    for series, members in sorted(groups.items()):
        curves = members[0].results["accuracy_vs_snr"]
        for channel in curves:
            for snr_db in sorted({float(snr) for snr in curves[channel]}):
                accuracies = [accuracy_at(cell, channel, snr_db) for cell in members]
                rows.append(
                    {
                        **dict(series),
                        "series": _series_label(series, members[0], varying),
                        **_profile_columns(members[0]),
                        "channel": channel,
                        "snr_db": snr_db,
                        **spread(accuracies, members),
                    }
                )
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows to CSV; the columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_data_efficiency(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs label fraction (log x), one line per series, error bars = s.d. over seeds."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    colors = _method_colors(rows)
    for label, points in _by_series(rows).items():
        points.sort(key=lambda row: row["label_fraction"])
        axes.errorbar(
            [row["label_fraction"] for row in points], [row["accuracy_mean"] for row in points],
            yerr=[row["accuracy_std"] for row in points], marker="o", capsize=3, color=colors.get(points[0].get("method")),
            linestyle="--" if points[0].get("profile") == "heterogeneous" else "-", label=label,
        )
    if rows:
        axes.axhline(float(np.mean([r["teacher_accuracy"] for r in rows])), color="gray", linestyle=":", label="teacher")
        axes.set_title(f"accuracy on {rows[0]['channel']} at {rows[0]['snr_db']:g} dB; {_seeds_note(rows)}", fontsize=10)
    axes.set_xscale("log")
    axes.set_xlabel("label fraction (share of client samples with labels)")
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    save_figure(figure, path)


def plot_snr_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per eval channel: accuracy vs SNR, one line per series, error bars over seeds."""
    channels = list(dict.fromkeys(row["channel"] for row in rows)) or ["awgn"]
    figure, panels = plt.subplots(1, len(channels), figsize=(4.2 * len(channels), 4), sharey=True, squeeze=False)
    for panel, channel in zip(panels[0], channels, strict=True):
        for label, points in _by_series([row for row in rows if row["channel"] == channel]).items():
            points.sort(key=lambda row: row["snr_db"])
            panel.errorbar(
                [row["snr_db"] for row in points], [row["accuracy_mean"] for row in points],
                yerr=[row["accuracy_std"] for row in points], marker="o", markersize=3, capsize=2, label=label,
            )
        panel.set_title(channel)
        panel.set_xlabel("SNR (dB)")
        panel.grid(alpha=0.3)
    panels[0][0].set_ylabel("test accuracy")
    panels[0][0].set_ylim(0, 1.02)
    handles, labels = panels[0][0].get_legend_handles_labels()
    # Below the panels: long series names would cover the curves inside any one panel.
    legend_rows = (len(labels) + 2) // 3
    figure.legend(handles, labels, loc="lower center", ncol=min(3, max(len(labels), 1)), fontsize=8)
    if rows:
        figure.suptitle(f"accuracy vs SNR; {_seeds_note(rows)}", fontsize=10)
    figure.tight_layout(rect=(0, 0.05 + 0.05 * legend_rows, 1, 1))
    save_figure(figure, path)


def _series_key(cell: Cell, exclude: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((key, value) for key, value in cell.axes.items() if key not in exclude))


def _varying_axes(cells: list[Cell]) -> set[str]:
    """Axes with more than one value among the cells: the only ones worth naming in a legend."""
    values: dict[str, set[str]] = defaultdict(set)
    for cell in cells:
        for key, value in cell.axes.items():
            values[key].add(value)
    return {key for key, seen in values.items() if len(seen) > 1}


def _series_label(series: tuple[tuple[str, str], ...], cell: Cell, varying: set[str]) -> str:
    """e.g. `full, heterogeneous clients (8.75 dB mean)`: the method first, then the other varying axes."""
    named = [(key, value) for key, value in series if key in varying] or list(series)
    parts = []
    for key, value in sorted(named, key=lambda item: item[0] != "method"):
        if key == _CLIENTS:
            profile = _profile_columns(cell)
            parts.append(f"{profile['profile']} clients ({profile['mean_client_snr_db']:g} dB mean)")
        elif key == "method":
            parts.append(value)
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "all cells"


def _profile_columns(cell: Cell) -> dict[str, Any]:
    """Whether every client had the same link, and the mean of the clients' nominal SNRs."""
    federation = cell.results["federation"]
    profiles = list(federation.get("client_channel_profiles", {}).values())
    client_snr_db = federation["client_snr_db"]
    homogeneous = len(set(profiles)) <= 1 and len(set(client_snr_db)) <= 1
    return {
        "profile": "homogeneous" if homogeneous else "heterogeneous",
        "mean_client_snr_db": float(np.mean(client_snr_db)),
    }


def accuracy_at(cell: Cell, channel: str, snr_db: float) -> float:
    """The cell's accuracy on eval link `channel` at `snr_db`, from results.json."""
    curves = cell.results["accuracy_vs_snr"]
    if channel not in curves:
        raise ValueError(f"{cell.run_dir}: no accuracy on channel {channel!r}; it has {sorted(curves)}")
    for snr, accuracy in curves[channel].items():
        if float(snr) == float(snr_db):
            return float(accuracy)
    available = sorted(float(snr) for snr in curves[channel])
    raise ValueError(f"{cell.run_dir}: no accuracy at {snr_db:g} dB on {channel}; evaluated SNRs: {available}")


def spread(accuracies: list[float], cells: list[Cell]) -> dict[str, Any]:
    """Mean, sample s.d. (0 for a single seed), and the per-seed values so the CSV keeps them."""
    return {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "num_seeds": len(accuracies),
        "seeds": ";".join(str(cell.config["seed"]) for cell in cells),
        "accuracies": ";".join(f"{accuracy:.4f}" for accuracy in accuracies),
    }


def _method_colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    methods = list(dict.fromkeys(row.get("method") for row in rows))
    return {method: f"C{index % 10}" for index, method in enumerate(methods)}


def _by_series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        series[row["series"]].append(row)
    return series


def _seeds_note(rows: list[dict[str, Any]]) -> str:
    counts = sorted({row["num_seeds"] for row in rows})
    seeds = "/".join(str(count) for count in counts)
    return f"mean ± s.d. over {seeds} seed{'s' if counts != [1] else ''}"


def save_figure(figure: Any, path: Path) -> None:
    """Write `figure` as a PNG at `path` and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
