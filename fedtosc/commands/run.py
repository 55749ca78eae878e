"""`fedtosc run [key=value ...]`: prepare teacher + knowledge, run the Flower simulation, write results."""

from __future__ import annotations

import argparse

from fedtosc.run_dir import open_run, project_root

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the federated experiment (Flower simulation on Ray)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.rounds=3 channel=heterogeneous_fading")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # The config is checked before torch, Flower and Sionna load: a bad one fails in well under a second.
    root = project_root()
    config, run_dir, resuming = open_run(args.overrides, root)
    print(f"{'resuming run' if resuming else 'run directory'}: {run_dir}")
    from fedtosc.experiment import prepare_experiment
    from fedtosc.launch import run_simulation
    from fedtosc.results import print_summary, read_results

    # Prepared here, with progress bars on the user's terminal; the ServerApp then finds both cached.
    _, teacher, store = prepare_experiment(config)
    print(
        f"teacher {teacher.display_name}: {teacher.num_params():,} params; knowledge {store.header.codec} "
        f"{store.bytes_per_sample:.1f} bytes/sample x {store.header.num_samples} samples"
    )
    run_simulation(config, run_dir, root, resume=resuming)
    print_summary(read_results(run_dir), run_dir)
    return 0

