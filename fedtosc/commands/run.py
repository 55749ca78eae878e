"""`fedtosc run [key=value ...]`: prepare teacher + knowledge, run the Flower simulation, write results."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from fedtosc.config import ConfigError, ExperimentConfig, load_config

__all__ = ["make_run_dir", "project_root", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the federated experiment (Flower simulation on Ray)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.rounds=3 channel=heterogeneous_fading")
    parser.set_defaults(func=_run)


def project_root() -> Path:
    """The checkout holding pyproject.toml with the Flower app (server/, clients/, conf/)."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "pyproject.toml").is_file() and (candidate / "server" / "server_app.py").is_file():
            return candidate
    raise SystemExit("fedtosc run needs the project checkout (pyproject.toml, server/, clients/): run it from there")


def make_run_dir(config: ExperimentConfig, root: Path) -> Path:
    """`output_dir`, or runs/<timestamp>, holding the resolved config."""
    run_dir = Path(config.output_dir) if config.output_dir else root / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    from fedtosc.run_config import write_run_config

    run_dir = run_dir.expanduser().resolve()
    if ":" in str(run_dir):
        # Flower puts the installed app under the run dir on the workers' PYTHONPATH, where ':' splits.
        raise ConfigError(f"output_dir={run_dir} contains ':', which breaks Flower's module path; choose another")
    write_run_config(config, run_dir)
    return run_dir


def _run(args: argparse.Namespace) -> int:
    from fedtosc.experiment import prepare_experiment
    from fedtosc.launch import run_simulation
    from fedtosc.results import print_summary, read_results
    from fedtosc.run_config import load_run_config, write_run_config

    config = load_config(args.overrides)
    root = project_root()
    resuming = config.resume is not None
    if resuming:
        # The interrupted run's own config, plus any overrides given with resume= (e.g. more rounds).
        run_dir = Path(config.resume).expanduser().resolve()
        config = load_run_config(run_dir, overrides=[o for o in args.overrides if not o.startswith("resume=")])
        write_run_config(config, run_dir)
        print(f"resuming run: {run_dir}")
    else:
        run_dir = make_run_dir(config, root)
        print(f"run directory: {run_dir}")
    # Prepared here, with progress bars on the user's terminal; the ServerApp then finds both cached.
    _, teacher, store = prepare_experiment(config)
    print(
        f"teacher {teacher.display_name}: {teacher.num_params():,} params; knowledge {store.header.codec} "
        f"{store.bytes_per_sample:.1f} bytes/sample x {store.header.num_samples} samples"
    )
    run_simulation(config, run_dir, root, resume=resuming)
    print_summary(read_results(run_dir), run_dir)
    return 0

