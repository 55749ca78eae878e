"""Knowledge slices as Flower records: serialized by the server, read back on the node.

A slice is the store's rows for one partition (`fedtosc.knowledge.store.export_slice`) as an
ArrayRecord plus a ConfigRecord header; its array bytes are what the broadcast costs.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtosc.knowledge.codecs import Knowledge
from fedtosc.knowledge.store import KnowledgeStore, export_slice, import_slice

__all__ = ["KNOWLEDGE_ARRAYS", "KNOWLEDGE_HEADER", "knowledge_record", "payload_bytes", "read_knowledge_record"]

# The record names of a slice in the knowledge message (and in a node's context state, where it is kept).
KNOWLEDGE_ARRAYS, KNOWLEDGE_HEADER = "knowledge", "knowledge-header"


def knowledge_record(store: KnowledgeStore, indices: np.ndarray) -> RecordDict:
    """The store's rows at `indices` (and its shared arrays), ready to send to a node."""
    arrays, header = export_slice(store, indices)
    return RecordDict(
        {
            KNOWLEDGE_ARRAYS: ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}),
            KNOWLEDGE_HEADER: ConfigRecord(dict(header)),
        }
    )


def read_knowledge_record(record: RecordDict) -> tuple[np.ndarray, Knowledge]:
    """(dataset indices the slice covers, its decoded knowledge)."""
    arrays = {name: array.numpy() for name, array in record.array_records[KNOWLEDGE_ARRAYS].items()}
    header = {name: str(value) for name, value in record.config_records[KNOWLEDGE_HEADER].items()}
    return import_slice(arrays, header)


def payload_bytes(record: RecordDict) -> int:
    """Bytes of array payload in a message (what a link would carry, headers aside)."""
    return sum(len(array.data) for item in record.array_records.values() for array in item.values())
