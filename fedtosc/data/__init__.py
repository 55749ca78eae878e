"""Data for both roles: datasets as image tensors, the plan of who holds which samples, and augmented views.

The names below load their module (and torch) when first asked for, so importing
`fedtosc.data.catalog` for config validation stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DataSplits": "fedtosc.data.datasets",
    "DatasetError": "fedtosc.data.catalog",
    "ImageDataset": "fedtosc.data.datasets",
    "load_dataset": "fedtosc.data.datasets",
    "DataPlan": "fedtosc.data.partition",
    "partition_indices": "fedtosc.data.partition",
    "plan_data": "fedtosc.data.partition",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Each public name, imported from its module when first asked for."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
