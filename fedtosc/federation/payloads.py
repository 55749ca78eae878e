"""What the server sends a node once, as Flower records: serialized by the server, read back on the node.

A knowledge slice is the store's rows (`fedtosc.knowledge.store.export_slice`) as an ArrayRecord
plus a ConfigRecord header. In transfer_set and digest delivery (`knowledge.delivery`) the same
payload goes to every node, with the transfer set's samples (uint8 [M, C, H, W]) or each row's
sample digest (sha256, uint8 [M, 32]) beside it, and a fingerprint names it so a node can cache
it. Its array bytes are what the broadcast costs.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtosc.data.local import sample_digests
from fedtosc.experiment import Experiment
from fedtosc.knowledge.codecs import Knowledge
from fedtosc.knowledge.store import KnowledgeStore, export_slice, import_slice

__all__ = [
    "KNOWLEDGE_ARRAYS", "KNOWLEDGE_HEADER", "TRANSFER_DIGESTS", "TRANSFER_IMAGES", "TRANSFER_SAMPLES",
    "knowledge_record", "payload_bytes", "payload_fingerprint", "read_knowledge_record", "shared_payload",
]

# The record names of a slice in the knowledge message (and in a node's context state, where it is kept).
KNOWLEDGE_ARRAYS, KNOWLEDGE_HEADER = "knowledge", "knowledge-header"
# The record beside the slice in transfer_set / digest delivery, and its one array.
TRANSFER_SAMPLES, TRANSFER_IMAGES, TRANSFER_DIGESTS = "transfer-samples", "images", "digests"


def knowledge_record(store: KnowledgeStore, indices: np.ndarray) -> RecordDict:
    """The store's rows at `indices` (and its shared arrays), ready to send to a node."""
    arrays, header = export_slice(store, indices)
    return RecordDict(
        {
            KNOWLEDGE_ARRAYS: ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}),
            KNOWLEDGE_HEADER: ConfigRecord(dict(header)),
        }
    )


def shared_payload(experiment: Experiment, store: KnowledgeStore) -> RecordDict | None:
    """The one payload every node gets in transfer_set / digest delivery (None in partition delivery):
    the knowledge of the store's rows with the samples themselves, or with each sample's digest."""
    delivery = experiment.config.knowledge.delivery
    if delivery == "partition":
        return None
    indices = experiment.plan.distillation_indices  # the store's rows, ascending, as export_slice orders them
    record = knowledge_record(store, indices)
    images = experiment.splits.train.images[np.asarray(indices)].numpy()
    # Samples travel as the uint8 pixels they are stored as; digests as raw 32-byte sha256 values.
    name, values = (TRANSFER_IMAGES, images) if delivery == "transfer_set" else (TRANSFER_DIGESTS, sample_digests(images))
    record[TRANSFER_SAMPLES] = ArrayRecord({name: Array(np.ascontiguousarray(values))})
    return record


def read_knowledge_record(record: RecordDict) -> tuple[np.ndarray, Knowledge]:
    """(dataset indices the slice covers, its decoded knowledge)."""
    arrays = {name: array.numpy() for name, array in record.array_records[KNOWLEDGE_ARRAYS].items()}
    header = {name: str(value) for name, value in record.config_records[KNOWLEDGE_HEADER].items()}
    return import_slice(arrays, header)


def payload_bytes(record: RecordDict) -> int:
    """Bytes of array payload in a message (what a link would carry, headers aside)."""
    return sum(len(array.data) for item in record.array_records.values() for array in item.values())


def payload_fingerprint(record: RecordDict) -> str:
    """sha256 of every array (name, dtype, shape, bytes) and config value: equal payloads, equal names."""
    digest = hashlib.sha256()
    for record_name, arrays in sorted(record.array_records.items()):
        for name, array in sorted(arrays.items()):
            digest.update(f"{record_name}/{name}:{array.dtype}:{list(array.shape)}\n".encode())
            digest.update(array.data)
    configs = {name: {key: str(value) for key, value in items.items()} for name, items in record.config_records.items()}
    digest.update(json.dumps(configs, sort_keys=True).encode())
    return digest.hexdigest()[:32]
