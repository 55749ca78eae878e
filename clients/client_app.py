"""The ClientApp: what an edge device does with each message from the server.

describe  -> remember the run (config, classes, slot, payload fingerprint); report counts and channel
             profile (and whether the shared payload is already in this node's cache); its own data is
             read and checked here
knowledge -> keep what the server sends once: a partition's knowledge slice in the context state,
             or the shared transfer_set / digest payload in the node's cache, by fingerprint
train     -> train the global student on local data through the node's channel, reply weights; a node
             restarted mid-run (its context state is gone) takes the run from the train message and
             its knowledge from its payload cache, and says so (messages.REJOINED)
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedtosc.experiment import resolve_device
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation import message_pickup
from fedtosc.federation.messages import REJOINED, RUN, RUN_CONFIG
from fedtosc.federation.node import NodeView, node_view
from fedtosc.federation.node_data import local_data, shared_delivery_data
from fedtosc.federation.payload_cache import cached_payload, payload_for_training, save_payload
from fedtosc.federation.payloads import KNOWLEDGE_ARRAYS, KNOWLEDGE_HEADER
from fedtosc.federation.placement import PLACEMENT, placement_record
from fedtosc.federation.wire import received_state, state_to_wire
from fedtosc.training import LocalData

# In a simulation, Flower loads this ClientApp in its engine's process before the engine starts
# picking up messages: the moment to swap in a pick-up whose cost does not grow with nodes x
# messages (fedtosc/federation/message_pickup.py). Anywhere else this does nothing.
message_pickup.install()

app = ClientApp()


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    _remember_run(msg, context)
    node = node_view(context)
    reply = node.describe(share_class_counts=bool(context.node_config.get("share-class-counts", False)))
    reply["has-payload"] = cached_payload(node.cache_dir, node.fingerprint) is not None
    return Message(RecordDict({"node": reply}), reply_to=msg)


@app.query("knowledge")
def receive_knowledge(msg: Message, context: Context) -> Message:
    node = node_view(context)
    if node.fingerprint:
        save_payload(node.cache_dir, node.fingerprint, msg.content)
    else:
        context.state[KNOWLEDGE_ARRAYS] = msg.content.array_records[KNOWLEDGE_ARRAYS]
        context.state[KNOWLEDGE_HEADER] = msg.content.config_records[KNOWLEDGE_HEADER]
    return Message(RecordDict({"ack": ConfigRecord({"received": True})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    # Flower keeps what `describe` told this node in the SuperNode's memory: after a restart it is gone.
    rejoined = RUN not in context.state.config_records
    if rejoined:
        _remember_run(msg, context)
    node = node_view(context)
    # The experiment is parsed once per Ray actor: parsing per call cost ~75 ms x every client x round.
    config = node.experiment.config
    train_config = msg.content.config_records["config"]
    # A resumed run restarts Flower's round count; seeds and SNR paths follow the original count.
    server_round = int(train_config["server-round"]) + int(train_config.get("round-offset", 0))
    wire_dtype = config.federation.wire_dtype  # the global model arrives, and the update leaves, in it
    state, metrics = run_client_round(
        node.experiment,
        node.facts.partition_id,
        node.facts.profile,
        _training_data(node, context),
        received_state(msg.content.array_records["arrays"], wire_dtype),
        server_round,
        resolve_device(config.device),
    )
    metrics[REJOINED] = int(rejoined)  # in every reply: Flower aggregates only replies with the same metric keys
    # Where this round ran (Ray node, host): the server tallies it into results.json's placement.
    arrays = state_to_wire(state, wire_dtype)
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), PLACEMENT: placement_record()})
    return Message(content=content, reply_to=msg)


def _remember_run(msg: Message, context: Context) -> None:
    for name in (RUN_CONFIG, RUN):
        if name not in msg.content.config_records:
            raise RuntimeError(f"this node has not been told the run (no {name!r} record): the server must describe it first")
        context.state[name] = msg.content.config_records[name]


def _training_data(node: NodeView, context: Context) -> LocalData:
    config = node.experiment.config
    prestored = config.knowledge.mode == "prestored"
    if node.own is None:  # partition delivery
        return local_data(node.experiment, node.facts.partition_id, _cached_knowledge(context) if prestored else None)
    if not prestored:
        return shared_delivery_data(node.own, None, config.knowledge.temperature)
    payload = payload_for_training(node.cache_dir, node.fingerprint)
    if payload is None:
        raise RuntimeError(
            f"the shared payload {node.fingerprint} is not in this node's cache ({node.cache_dir}): "
            "the server must send query.knowledge before training"
        )
    return shared_delivery_data(node.own, payload, config.knowledge.temperature)


def _cached_knowledge(context: Context) -> RecordDict:
    if KNOWLEDGE_ARRAYS not in context.state.array_records:
        raise RuntimeError(
            "no knowledge slice on this node: partition delivery keeps it in the SuperNode's memory, so a node "
            "restarted mid-run has lost it; resume the run (`fedtosc deploy run resume=<run dir>`) to send it again"
        )
    return RecordDict(
        {
            KNOWLEDGE_ARRAYS: context.state.array_records[KNOWLEDGE_ARRAYS],
            KNOWLEDGE_HEADER: context.state.config_records[KNOWLEDGE_HEADER],
        }
    )
