"""The studies `fedtosc study <name>` runs (`fedtosc.registries.STUDIES`): each is its grid in
conf/study/, how its finished cells become rows, and how the rows become a figure.

Plain data, light to import: the CLI lists the studies for `--help` without loading matplotlib;
`rows` and `plot` are import paths, resolved when a study is summarized.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DATA_EFFICIENCY", "SNR_SWEEP", "Study"]


@dataclass(frozen=True)
class Study:
    conf: str  # conf/study/<conf>.yaml: the grid (hydra.sweeper.params) and fixed keys
    summary: str  # one line for --help
    example: str  # overrides worth showing in --help
    rows: str  # "module:function": (cells, **options) -> list of row dicts
    plot: str  # "module:function": (rows, path) -> None
    # Command-line options passed to `rows`: flag -> argparse keyword arguments
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summarize(self, cells: list, **options: Any) -> list[dict[str, Any]]:
        return _resolve(self.rows)(cells, **options)

    def draw(self, rows: list[dict[str, Any]], path: Any) -> None:
        _resolve(self.plot)(rows, path)


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


DATA_EFFICIENCY = Study(
    conf="data_efficiency",
    summary="accuracy vs label fraction per method and client SNR profile",
    example="dataset.label_fraction=0.05,1.0 method=full,labels_only seed=0,1 federation.rounds=3",
    rows="fedtosc.studies.tables:data_efficiency_rows",
    plot="fedtosc.studies.tables:plot_data_efficiency",
    options={
        "--channel": {"default": "awgn", "help": "eval channel the accuracy is read at (default: awgn)"},
        "--snr-db": {"type": float, "default": 10.0, "help": "eval SNR the accuracy is read at (default: 10)"},
    },
)

SNR_SWEEP = Study(
    conf="snr_sweep",
    summary="accuracy vs SNR per method and eval channel type",
    example="method=full,no_adaptive seed=0 'channel.eval_channels=[awgn,rician]'",
    rows="fedtosc.studies.tables:snr_sweep_rows",
    plot="fedtosc.studies.tables:plot_snr_sweep",
)
