"""Accuracy against SNR for several methods and every channel type, at a quick scale.

    .venv/bin/python examples/snr_sweep.py [--output DIR] [--seeds 0,1,2]

Runs `fedtosc study snr-sweep` on the bundled digits data with 2 clients (AWGN links at 0 and
10 dB) and 2 rounds, for method {full, labels_only, no_adaptive} x seed {0} = 3 cells, each one
`fedtosc run` (about 40 s each on an idle 2-core CPU). Every cell evaluates its student on AWGN,
Rayleigh and Rician (K = channel.k_factor, 3) channels at -10 ... 25 dB (conf/study/snr_sweep.yaml).
Then it writes an HTML report of the study.

Expected output, under studies/example-snr-sweep/ (or --output):
  cells/<axes>/     one run directory per cell
  snr_sweep.csv     one row per method x channel x SNR: accuracy_mean, accuracy_std, num_seeds, accuracies
  snr_sweep.png     one panel per link (awgn, rayleigh, rician(k=3)): accuracy vs SNR, one line per method
  report.html       the figure, the CSV as a table and the cell list, self-contained
Run it again and it reruns nothing: finished cells are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedtosc.cli import main

_GRID = [
    "method=full,labels_only,no_adaptive",
    "channel.clients='awgn:0,awgn:10'",
    "federation.num_clients=2",
    "federation.rounds=2",
]


def _run(output: Path, seeds: str) -> int:
    status = main(["study", "snr-sweep", "--output", str(output), *_GRID, f"seed={seeds}"])
    main(["report", str(output), "-o", str(output / "report.html")])
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("studies/example-snr-sweep"))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for error bars")
    args = parser.parse_args()
    sys.exit(_run(args.output, args.seeds))
