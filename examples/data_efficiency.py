"""Data-efficiency under heterogeneous SNR, at a scale a laptop finishes in minutes.

    .venv/bin/python examples/data_efficiency.py [--output DIR] [--seeds 0,1,2]

Runs `fedtosc study data-efficiency` on the bundled digits data with 2 clients and 2 rounds:
label fraction {0.05, 1.0} x method {full, labels_only} x client SNR profile {both clients at
5 dB, clients at 0 and 10 dB (same 5 dB mean)} x seed {0} = 8 cells, each one `fedtosc run`
(about 40 s each on an idle 2-core CPU, Flower start-up dominating; the first cell of each seed
also trains the server teacher once). Then it writes an HTML report of the study.

Expected output, under studies/example-data-efficiency/ (or --output):
  cells/<axes>/           one run directory per cell (config.yaml, metrics.jsonl, results.json, ...)
  data_efficiency.csv     one row per method x profile x label fraction: accuracy_mean, accuracy_std,
                          num_seeds, the per-seed accuracies, teacher_accuracy, mean_client_snr_db
  data_efficiency.png     accuracy on AWGN at 10 dB against label fraction (log axis), one line per
                          method x profile (dashed = heterogeneous), error bars = s.d. over seeds
  report.html             the figure, the CSV as a table and the cell list, self-contained
With one seed the error bars are zero; pass --seeds 0,1,2 for real ones (3x the cells).
Run it again and it reruns nothing: finished cells are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedtosc.cli import main

_GRID = [
    "dataset.label_fraction=0.05,1.0",
    "method=full,labels_only",
    "channel.clients=awgn:5,'awgn:0,awgn:10'",
    "federation.num_clients=2",
    "federation.rounds=2",
]


def _run(output: Path, seeds: str) -> int:
    status = main(["study", "data-efficiency", "--output", str(output), "--snr-db", "10", *_GRID, f"seed={seeds}"])
    main(["report", str(output), "-o", str(output / "report.html")])
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("studies/example-data-efficiency"))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for error bars")
    args = parser.parse_args()
    sys.exit(_run(args.output, args.seeds))
