"""`fedtosc train [key=value ...]`: centralized training on the pooled client data (see fedtosc/centralized.py).

The same config and run directory as `fedtosc run`, without Flower: for fast iteration and
as the upper reference the federated student is measured against.
"""

from __future__ import annotations

import argparse

from fedtosc.config import load_config
from fedtosc.run_dir import make_run_dir, project_root

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train centrally on all clients' data (no Flower): the FL upper reference")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.rounds=3 method=no_ib")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    # The config is checked before torch loads: a bad one fails in well under a second.
    config = load_config(args.overrides)
    run_dir = make_run_dir(config, project_root())
    print(f"run directory: {run_dir}")
    import torch

    from fedtosc.centralized import train_centralized
    from fedtosc.experiment import resolve_device
    from fedtosc.results import print_summary

    torch.manual_seed(config.seed)
    results = train_centralized(config, run_dir, resolve_device(config.device))
    print_summary(results, run_dir)
    return 0
