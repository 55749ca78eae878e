"""`fedtosc run [key=value ...]`: prepare teacher + knowledge, run the Flower simulation, write results."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from fedtosc.config import ExperimentConfig, load_config

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
    run_dir = run_dir.expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    return run_dir


def _run(args: argparse.Namespace) -> int:
    import torch

    from fedtosc.experiment import ensure_knowledge, load_experiment, load_teacher, resolve_device
    from fedtosc.launch import run_simulation
    from fedtosc.results import read_results

    config = load_config(args.overrides)
    root = project_root()
    run_dir = make_run_dir(config, root)
    print(f"run directory: {run_dir}")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    # Prepared here, with progress bars on the user's terminal; the ServerApp then finds both cached.
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, device)
    store = ensure_knowledge(experiment, teacher, device)
    print(
        f"teacher {teacher.display_name}: {teacher.num_params():,} params; knowledge {store.header.codec} "
        f"{store.bytes_per_sample:.1f} bytes/sample x {store.header.num_samples} samples"
    )
    run_simulation(config, run_dir, root)
    _print_summary(read_results(run_dir), run_dir)
    return 0


def _print_summary(results: dict, run_dir: Path) -> None:
    print(f"\nteacher accuracy: {results['teacher']['accuracy']:.3f}")
    print(f"student: {results['student']['params']:,} params ({results['student']['encoder_params']:,} on device)")
    for channel, curve in results["accuracy_vs_snr"].items():
        row = "  ".join(f"{float(snr):>5g} dB {acc:.3f}" for snr, acc in sorted(curve.items(), key=lambda kv: float(kv[0])))
        print(f"{channel:>9}: {row}")
    print(f"results: {run_dir / 'results.json'}")
