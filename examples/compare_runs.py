"""Paired comparison of two arms from finished runs: per eval link and SNR, the accuracy difference
over the same test images and seeds, with a 95% bootstrap interval and McNemar's p.

Each arm is one or more run directories (one per seed); runs are paired seed by seed, and a seed's
two runs must have been scored on the same test images (fedtosc.studies.paired checks it).

    python examples/compare_runs.py --first runs/full-s0 runs/full-s1 --second runs/fixed-s0 runs/fixed-s1 \
        --json results/main_job/equal_bandwidth_paired.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedtosc.outcomes import read_outcomes
from fedtosc.studies.paired import ArmOutcomes, paired_difference


def _arm(run_dirs: list[Path], key: str) -> list[ArmOutcomes]:
    arms = []
    for run_dir in run_dirs:
        outcomes = read_outcomes(run_dir)
        arms.append(ArmOutcomes(str(run_dir), outcomes.seed, outcomes.test_index, outcomes.correct[key]))
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=Path, nargs="+", required=True, help="run directories of the first arm")
    parser.add_argument("--second", type=Path, nargs="+", required=True, help="run directories of the second arm")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    keys = sorted(read_outcomes(args.first[0]).correct, key=lambda k: (k.split("@")[0], float(k.split("@")[1])))
    rows = []
    print("| link @ SNR dB | first − second (points) | 95% interval | McNemar p | pairs |")
    print("|---|---:|---|---:|---:|")
    for key in keys:
        result = paired_difference(_arm(args.first, key), _arm(args.second, key))
        rows.append({"point": key, **result.__dict__})
        print(
            f"| {key} | {100 * result.difference:+.1f} | [{100 * result.low:+.1f}, {100 * result.high:+.1f}] | "
            f"{result.p_value:.3g} | {result.num_pairs} ({result.num_seeds} seeds) |"
        )
    if args.json is not None:
        report = {"first": [str(p) for p in args.first], "second": [str(p) for p in args.second], "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
