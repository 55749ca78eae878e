"""Knowledge broadcast: describe the run to every node, then send each node what it lacks, once.

`describe` carries the run's config, the classes and input shape (for nodes with their own
data), each node's slot, and the shared payload's fingerprint; the reply is counts, the channel
profile and whether the node's cache already holds that payload. `plan_broadcast` then decides
what each node gets: its partition's knowledge slice (partition delivery), the shared payload
(transfer_set / digest delivery) unless cached, and every byte of it is counted per node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedtosc.config import ExperimentConfig
from fedtosc.experiment import Experiment
from fedtosc.federation.messages import DESCRIBE, KNOWLEDGE, RUN, RUN_CONFIG, config_record
from fedtosc.federation.node import RUN_CLASS_NAMES, RUN_FINGERPRINT, RUN_IMAGE_SHAPE, RUN_SLOT
from fedtosc.federation.payloads import knowledge_record, payload_bytes
from fedtosc.knowledge.store import KnowledgeStore

__all__ = [
    "BroadcastPlan", "NodeInfo", "RunDescription", "describe_nodes", "plan_broadcast", "run_description", "send_knowledge",
    "wait_for_nodes",
]

# node id -> its describe reply: partition-id, channel-profile, num-examples, num-labelled, has-payload
# (and class-counts when its node config allows it)
NodeInfo = dict[int, dict]
# node id -> the records that describe the run to it (messages.RUN_CONFIG, messages.RUN)
RunDescription = dict[int, dict[str, ConfigRecord]]


def wait_for_nodes(grid: Grid, required: int, timeout_s: float, enough: int) -> list[int]:
    """Node ids once `required` nodes are connected, or at `timeout_s` those that are, when at least
    `enough` are: a box that refused to start (bad data, say) is a lost node, not a lost run. Fewer
    than `enough` is a clear error after `timeout_s`, never a hang."""
    deadline = time.monotonic() + timeout_s
    while len(node_ids := list(grid.get_node_ids())) < required:
        if time.monotonic() > deadline:
            if len(node_ids) >= enough:
                log(
                    WARNING,
                    "only %d of %d SuperNodes connected within %.0f s (federation.connect_timeout_s); "
                    "going on with them (at least %d needed)",
                    len(node_ids), required, timeout_s, enough,
                )
                return node_ids
            raise TimeoutError(
                f"only {len(node_ids)} of {required} required SuperNodes connected within {timeout_s:.0f} s, "
                f"fewer than the {enough} a round needs: start more SuperNodes, or lower federation.num_clients "
                "or federation.min_train_fraction"
            )
        time.sleep(1.0)
    return node_ids


def run_description(experiment: Experiment, node_ids: list[int], fingerprint: str) -> RunDescription:
    """The run as each node is told it: the config, the classes and input shape (for nodes with their
    own data), the shared payload's fingerprint, and its slot (its place in node-id order, which seeds
    its rounds). `describe` sends it, and every train message again (messages.RUN)."""
    train = experiment.splits.train
    config = config_record(experiment.config)
    run = {RUN_CLASS_NAMES: json.dumps(list(train.class_names)), RUN_IMAGE_SHAPE: json.dumps(list(train.image_shape)),
           RUN_FINGERPRINT: fingerprint}
    return {node: {RUN_CONFIG: config, RUN: ConfigRecord(run | {RUN_SLOT: slot})} for slot, node in enumerate(sorted(node_ids))}


def describe_nodes(grid: Grid, description: RunDescription, timeout_s: float, enough: int) -> NodeInfo:
    """Send the run to every node; a node that fails to describe itself (bad data, say) is lost to
    the run, which goes on while at least `enough` nodes remain."""
    messages = [Message(RecordDict(dict(records)), message_type=DESCRIBE, dst_node_id=node) for node, records in description.items()]
    info: NodeInfo = {}
    failures = []
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error():
            failures.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
            log(WARNING, "node %d is lost to this run: %s", reply.metadata.src_node_id, reply.error.reason)
            continue
        info[reply.metadata.src_node_id] = dict(reply.content.config_records["node"])
    if len(info) < enough:
        raise RuntimeError(f"only {len(info)} of {len(description)} nodes could start, {enough} needed: " + "; ".join(failures))
    partitions = sorted(int(entry["partition-id"]) for entry in info.values())
    if len(set(partitions)) != len(partitions):
        raise RuntimeError(f"two SuperNodes claim the same partition: {partitions}; give each a distinct partition-id")
    return info


@dataclass(frozen=True)
class BroadcastPlan:
    """What each node is sent once before the rounds (a node absent from `payloads` is sent nothing)."""

    payloads: dict[int, RecordDict]

    def bytes_by_node(self) -> dict[int, int]:
        return {node: payload_bytes(payload) for node, payload in self.payloads.items()}


def plan_broadcast(
    config: ExperimentConfig, nodes: NodeInfo, store: KnowledgeStore, experiment: Experiment, shared: RecordDict | None
) -> BroadcastPlan:
    """Partition delivery: each node its partition's rows of the store. transfer_set / digest: the one
    `shared` payload to each node whose cache does not hold it. knowledge.mode other than prestored: nothing."""
    if config.knowledge.mode != "prestored":
        return BroadcastPlan({})
    if shared is None:
        return BroadcastPlan({
            node: knowledge_record(store, experiment.plan.knowledge_indices(int(entry["partition-id"])))
            for node, entry in nodes.items()
        })
    return BroadcastPlan({node: shared for node, entry in nodes.items() if not entry.get("has-payload", False)})


def send_knowledge(grid: Grid, plan: BroadcastPlan, timeout_s: float) -> dict[int, int]:
    """Send the plan; returns the bytes sent to each node it names (a node sent nothing is absent)."""
    messages = [Message(content=payload, message_type=KNOWLEDGE, dst_node_id=node) for node, payload in plan.payloads.items()]
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} rejected its knowledge: {reply.error.reason}")
    sent = plan.bytes_by_node()
    log(INFO, "knowledge broadcast: %d bytes to %d nodes", sum(sent.values()), len(messages))
    return sent
