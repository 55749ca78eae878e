"""Client partitions are computed once per federation config and seed and then read from
`dataset.cache_dir`: a process that plans the data from a warm cache imports neither flwr-datasets
nor HF datasets (nor scikit-learn, for the digits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedtosc.data.partition as partition_module
from fedtosc.config import FederationConfig
from fedtosc.data.partition import partition_indices

_LABELS = np.random.default_rng(0).integers(0, 10, size=300)
_FEDERATION = FederationConfig(num_clients=5, partitioner="dirichlet", dirichlet_alpha=0.5)


def _same(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(first, second))


def _no_partitioning(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise AssertionError("partitioned again instead of reading the cache")


def test_the_partitions_are_read_back_from_the_cache_as_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    computed = partition_indices(_LABELS, _FEDERATION, 3, tmp_path)
    assert _same(computed, partition_indices(_LABELS, _FEDERATION, 3))  # the cache changes nothing
    (entry,) = tmp_path.glob("dirichlet-*.npz")

    monkeypatch.setattr(partition_module, "_partitioned", _no_partitioning)
    read = partition_indices(_LABELS, _FEDERATION, 3, tmp_path)

    assert _same(read, computed)
    with pytest.raises(AssertionError, match="partitioned again"):  # another seed is another entry
        partition_indices(_LABELS, _FEDERATION, 4, tmp_path)
    with pytest.raises(AssertionError, match="partitioned again"):  # so are other labels
        partition_indices(_LABELS[::-1].copy(), _FEDERATION, 3, tmp_path)
    assert list(tmp_path.glob("*.npz")) == [entry]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_entry_is_computed_again_and_rewritten(tmp_path: Path, damage: str) -> None:
    computed = partition_indices(_LABELS, _FEDERATION, 3, tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    raw = bytearray(entry.read_bytes())
    if damage == "flip":
        raw[len(raw) // 3] ^= 0x40  # inside the first array's values: the zip's CRC catches it
    else:
        del raw[len(raw) // 2:]
    entry.write_bytes(bytes(raw))

    again = partition_indices(_LABELS, _FEDERATION, 3, tmp_path)

    assert _same(again, computed)
    assert partition_module._read_partitions(entry, 5, len(_LABELS)) is not None  # rewritten whole


@pytest.mark.slow
def test_planning_from_a_warm_cache_imports_no_partitioning_or_dataset_library(tmp_path: Path) -> None:
    code = (
        "import sys; from fedtosc.config import load_config; from fedtosc.experiment import load_experiment; "
        f"load_experiment(load_config(['dataset.cache_dir={tmp_path}', 'federation.partitioner=dirichlet'])); "
        "print(sorted(name for name in ('datasets', 'flwr_datasets', 'sklearn') if name in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True) for _ in range(2)]
    assert runs[0].stdout.strip() == "['datasets', 'flwr_datasets']"  # the cold process partitions
    assert runs[1].stdout.strip() == "[]"
