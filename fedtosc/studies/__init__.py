"""Studies users run: a grid of experiments (one run directory per cell) and its summary.

`sweep` expands a grid from conf/study/ with Hydra's basic sweeper and runs each cell as a
`fedtosc run` (or `fedtosc train`), once per arm, resuming finished cells; `tables` turns the
cells' results.json files into one CSV and one figure per study (`mismatch`, `bandwidth` and
`knowledge_rate` do it for their studies), with arms compared per test image by `paired`.
"""

from fedtosc.studies.sweep import FINISHED, CellOutcome, run_study
from fedtosc.studies.tables import (
    Cell,
    data_efficiency_claims,
    data_efficiency_rows,
    load_cells,
    plot_data_efficiency,
    plot_snr_sweep,
    snr_sweep_rows,
    write_csv,
)

__all__ = [
    "FINISHED",
    "Cell",
    "CellOutcome",
    "data_efficiency_claims",
    "data_efficiency_rows",
    "load_cells",
    "plot_data_efficiency",
    "plot_snr_sweep",
    "run_study",
    "snr_sweep_rows",
    "write_csv",
]
