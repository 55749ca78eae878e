"""Knowledge broadcast: learn which node holds which partition, then send each node its slice once."""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedtosc.config import ExperimentConfig
from fedtosc.federation.messages import DESCRIBE, KNOWLEDGE, config_record
from fedtosc.federation.payloads import knowledge_record, payload_bytes

__all__ = ["NodeInfo", "describe_nodes", "send_knowledge", "wait_for_nodes"]

NodeInfo = dict[int, dict]  # node id -> {"partition-id", "channel-profile", "num-examples"}


def wait_for_nodes(grid: Grid, required: int, timeout_s: float) -> list[int]:
    """Node ids once `required` nodes are connected; a clear error after `timeout_s`, never a hang."""
    deadline = time.monotonic() + timeout_s
    while len(node_ids := list(grid.get_node_ids())) < required:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(node_ids)} of {required} required SuperNodes connected within {timeout_s:.0f} s "
                "(federation.num_clients): start more SuperNodes or lower federation.num_clients"
            )
        time.sleep(1.0)
    return node_ids


def describe_nodes(grid: Grid, node_ids: list[int], config: ExperimentConfig) -> NodeInfo:
    """Send the run's config to every node; each replies with its partition and channel profile."""
    content = RecordDict({"config": config_record(config)})
    messages = [Message(content=content, message_type=DESCRIBE, dst_node_id=node) for node in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=config.federation.round_timeout_s))
    info: NodeInfo = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed to start: {reply.error.reason}")
        record = reply.content.config_records["node"]
        info[reply.metadata.src_node_id] = {key: record[key] for key in ("partition-id", "channel-profile", "num-examples")}
    partitions = sorted(int(entry["partition-id"]) for entry in info.values())
    if len(set(partitions)) != len(partitions):
        raise RuntimeError(f"two SuperNodes claim the same partition: {partitions}; give each a distinct partition-id")
    return info


def send_knowledge(
    grid: Grid, nodes: NodeInfo, store, rows_for: Callable[[int], np.ndarray], timeout_s: float  # noqa: ANN001
) -> int:
    """Each node gets exactly the store rows `rows_for(partition id)`, once; returns bytes sent."""
    messages, sent = [], 0
    for node_id, entry in nodes.items():
        content = knowledge_record(store, rows_for(int(entry["partition-id"])))
        sent += payload_bytes(content)
        messages.append(Message(content=content, message_type=KNOWLEDGE, dst_node_id=node_id))
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} rejected its knowledge slice: {reply.error.reason}")
    log(INFO, "knowledge broadcast: %d bytes to %d nodes", sent, len(messages))
    return sent


