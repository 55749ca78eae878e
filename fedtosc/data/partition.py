"""Who holds what: the server's labelled share, client partitions, labelled masks.

Both roles call `plan_data` with the same config and seed, so the server and every
client agree on which dataset indices a client holds without sending index lists.
Client partitions come from flwr-datasets partitioners run over a local dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedtosc.config import DatasetConfig, FederationConfig
from fedtosc.registries import PARTITIONERS

__all__ = [
    "DataPlan", "dirichlet_partitioner", "iid_partitioner", "partition_indices", "pathological_partitioner", "plan_data",
]


@dataclass(frozen=True)
class DataPlan:
    """Dataset indices (into the training split) by role."""

    server_indices: np.ndarray  # labelled data the server trains its teacher on
    client_indices: list[np.ndarray]  # one sorted array per client partition (private data)
    labelled: np.ndarray  # bool [len(train)]: may a client use this sample's label?
    transfer_indices: np.ndarray  # public unlabelled transfer set every client holds (empty: none)

    @property
    def distillation_indices(self) -> np.ndarray:
        """What the teacher's knowledge must cover: the transfer set, or else all client data."""
        if len(self.transfer_indices):
            return self.transfer_indices
        return np.sort(np.concatenate(self.client_indices))

    def knowledge_indices(self, partition_id: int) -> np.ndarray:
        """The knowledge rows a client receives: the whole transfer set, or its own partition."""
        return self.transfer_indices if len(self.transfer_indices) else self.client_indices[partition_id]


def plan_data(
    labels: np.ndarray, dataset: DatasetConfig, federation: FederationConfig, seed: int, delivery: str = "partition"
) -> DataPlan:
    """`delivery` (knowledge.delivery): with `transfer_set` and no public share carved out
    (`dataset.transfer_fraction=0`), the server's own samples are the transfer set it broadcasts."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    num_server = int(round(len(labels) * dataset.server_fraction))
    num_transfer = int(round(len(labels) * dataset.transfer_fraction))
    server_indices = np.sort(order[:num_server])
    transfer_indices = np.sort(order[num_server : num_server + num_transfer])
    if delivery == "transfer_set" and not num_transfer:
        transfer_indices = server_indices
    pool = np.sort(order[num_server + num_transfer :])
    if len(pool) < federation.num_clients:
        raise ValueError(
            f"{len(pool)} client samples cannot fill federation.num_clients={federation.num_clients}: "
            "lower dataset.server_fraction or the number of clients"
        )
    partitions = partition_indices(labels[pool], federation, seed)
    labelled = rng.random(len(labels)) < dataset.label_fraction
    labelled[transfer_indices] = False  # the transfer set is public and unlabelled
    return DataPlan(server_indices, [pool[p] for p in partitions], labelled, transfer_indices)


def partition_indices(labels: np.ndarray, federation: FederationConfig, seed: int) -> list[np.ndarray]:
    """Split positions 0..len(labels)-1 into federation.num_clients sorted partitions."""
    from datasets import Dataset

    # flwr-datasets' IidPartitioner cuts contiguous chunks: shuffle first, or class-sorted data
    # (image folders are read class by class) would give each client only a few classes.
    order = np.random.default_rng(seed).permutation(len(labels))
    local = Dataset.from_dict({"label": labels[order].astype(np.int64), "position": order})
    partitioner = PARTITIONERS.get(federation.partitioner)(federation, seed)
    partitioner.dataset = local
    partitions = [
        np.sort(np.asarray(partitioner.load_partition(i)["position"], dtype=np.int64))
        for i in range(federation.num_clients)
    ]
    empty = [i for i, part in enumerate(partitions) if len(part) == 0]
    if empty:
        raise ValueError(f"partitions {empty} are empty with federation.partitioner={federation.partitioner}")
    return partitions


def iid_partitioner(federation: FederationConfig, seed: int):  # noqa: ANN201 - a flwr-datasets Partitioner
    """Equal shares, classes mixed (the order was shuffled before: see `partition_indices`)."""
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=federation.num_clients)


def dirichlet_partitioner(federation: FederationConfig, seed: int):  # noqa: ANN201
    """Class shares per client drawn from Dir(`federation.dirichlet_alpha`): smaller alpha, more skew."""
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=federation.num_clients,
        partition_by="label",
        alpha=federation.dirichlet_alpha,
        min_partition_size=1,
        seed=seed,
    )


def pathological_partitioner(federation: FederationConfig, seed: int):  # noqa: ANN201
    """Each client holds `federation.classes_per_client` classes only."""
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(
        num_partitions=federation.num_clients,
        partition_by="label",
        num_classes_per_partition=federation.classes_per_client,
        seed=seed,
    )
