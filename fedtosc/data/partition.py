"""Who holds what: the server's labelled share, client partitions, labelled masks.

Both roles call `plan_data` with the same config and seed, so the server and every
client agree on which dataset indices a client holds without sending index lists.
Client partitions come from flwr-datasets partitioners run over a local dataset, and are kept in
`dataset.cache_dir` (see `partition_indices`): every process that plans the data (each Ray actor,
each deployed ClientApp message, the ServerApp) otherwise imports flwr-datasets and HF datasets,
2.6 s here, to compute the same partitions again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from fedtosc.atomic_write import atomic_path
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
    (`dataset.transfer_fraction=0`), the server's own samples are the transfer set it broadcasts.
    The client partitions are cached in `dataset.cache_dir` (null: computed every time)."""
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
    cache_dir = Path(dataset.cache_dir).expanduser() / "partitions" if dataset.cache_dir else None
    partitions = partition_indices(labels[pool], federation, seed, cache_dir)
    labelled = rng.random(len(labels)) < dataset.label_fraction
    labelled[transfer_indices] = False  # the transfer set is public and unlabelled
    return DataPlan(server_indices, [pool[p] for p in partitions], labelled, transfer_indices)


def partition_indices(
    labels: np.ndarray, federation: FederationConfig, seed: int, cache_dir: Path | None = None
) -> list[np.ndarray]:
    """Split positions 0..len(labels)-1 into federation.num_clients sorted partitions.

    With `cache_dir`, they are read from there when an entry for these labels, this federation
    config, this seed and these flwr-datasets and datasets versions is there and sound, and written
    there otherwise (atomically: concurrent writers write the same arrays).
    """
    path = _cache_entry(labels, federation, seed, cache_dir) if cache_dir is not None else None
    if path is not None and (cached := _read_partitions(path, federation.num_clients, len(labels))) is not None:
        return cached
    partitions = _partitioned(labels, federation, seed)
    if path is not None:
        with atomic_path(path) as temp:
            with temp.open("wb") as handle:
                np.savez(handle, *partitions)
    return partitions


def _partitioned(labels: np.ndarray, federation: FederationConfig, seed: int) -> list[np.ndarray]:
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


def _cache_entry(labels: np.ndarray, federation: FederationConfig, seed: int, cache_dir: Path) -> Path:
    key = {
        "labels": hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(),
        # All of it, not only the partitioner's keys: a partitioner registered later may read any.
        "federation": dataclasses.asdict(federation),
        "seed": seed,
        "versions": {package: version(package) for package in ("flwr-datasets", "datasets")},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir / f"{federation.partitioner}-{digest}.npz"


def _read_partitions(path: Path, num_clients: int, num_samples: int) -> list[np.ndarray] | None:
    """The cached partitions, or None when the entry is missing or unsound (then it is rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as stored:  # a zip: each member's CRC is checked on read
            partitions = [stored[f"arr_{i}"] for i in range(num_clients)]
            count = len(stored.files)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # absent, truncated, corrupted
        return None
    sound = all(
        part.dtype == np.int64 and part.ndim == 1 and len(part) > 0 and bool(np.all(np.diff(part) > 0))
        and 0 <= part[0] and part[-1] < num_samples
        for part in partitions
    )
    return partitions if sound and count == num_clients else None


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
