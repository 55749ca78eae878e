"""`fedtosc run [key=value ...]`: prepare teacher + knowledge, run the Flower simulation, write results."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtosc.config import load_config
from fedtosc.run_dir import make_run_dir, project_root

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the federated experiment (Flower simulation on Ray)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.rounds=3 channel=heterogeneous_fading")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # The config is checked before torch, Flower and Sionna load: a bad one fails in well under a second.
    config = load_config(args.overrides)
    root = project_root()
    resuming = config.resume is not None
    if resuming:
        from fedtosc.preflight import check_before_work
        from fedtosc.run_config import load_run_config, write_run_config

        # The interrupted run's own config, plus any overrides given with resume= (e.g. more rounds).
        run_dir = Path(config.resume).expanduser().resolve()
        config = load_run_config(run_dir, overrides=[o for o in args.overrides if not o.startswith("resume=")])
        check_before_work(config, run_dir)
        write_run_config(config, run_dir)
        print(f"resuming run: {run_dir}")
    else:
        run_dir = make_run_dir(config, root)
        print(f"run directory: {run_dir}")
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

