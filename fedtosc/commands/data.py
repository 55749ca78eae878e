"""`fedtosc data split --out DIR [overrides]`: give each simulated node a folder of its own.

Writes DIR/node<i>/ (PNGs + labels.csv of the samples whose labels node i may use) from the
configured dataset's partitions; `fedtosc run dataset.node_root=DIR knowledge.delivery=transfer_set`
then has every simulated node read its folder through the loader a SuperNode's data-path uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedtosc.config import ExperimentConfig

__all__ = ["register", "split_into_node_folders"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare data for nodes")
    actions = parser.add_subparsers(dest="action", required=True)
    split = actions.add_parser("split", help="write each partition of the dataset as a node's own folder")
    split.add_argument("--out", type=Path, required=True, help="folder for node0/, node1/, ...")
    split.add_argument("overrides", nargs="*", help="Hydra overrides (dataset, federation.num_clients, partitioner, seed)")
    split.set_defaults(func=_split)


def _split(args: argparse.Namespace) -> int:
    from fedtosc.config import load_config

    out = args.out.expanduser().resolve()
    counts = split_into_node_folders(load_config(args.overrides), out)
    for node, count in enumerate(counts):
        print(f"{out / f'node{node}'}: {count} samples")
    print(f"simulate with: dataset.node_root={out} knowledge.delivery=transfer_set")
    return 0


def split_into_node_folders(config: ExperimentConfig, out: Path) -> list[int]:
    """Write node<i>/ for each of the config's partitions; returns the samples per node."""
    from fedtosc.data.local import write_node_folder
    from fedtosc.experiment import load_experiment

    experiment = load_experiment(config)
    train, plan = experiment.splits.train, experiment.plan
    counts = []
    for node, indices in enumerate(plan.client_indices):
        labels = [train.class_names[int(train.labels[i])] if plan.labelled[i] else "" for i in indices]
        counts.append(write_node_folder(out / f"node{node}", train.images[indices].numpy(), labels))
    return counts
