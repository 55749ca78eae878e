"""The ClientApp: what an edge device does with each message from the server.

describe  -> remember the run's config, report partition and channel profile
knowledge -> cache this node's knowledge slice in its context state (sent once per run)
train     -> distill the global student on local data through the node's channel, reply weights
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedtosc.experiment import resolve_device
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation.messages import CONFIG_JSON
from fedtosc.federation.node import cached_experiment, node_facts
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payloads import KNOWLEDGE_ARRAYS, KNOWLEDGE_HEADER

app = ClientApp()


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    context.state["config"] = msg.content.config_records["config"]
    experiment = cached_experiment(str(context.state["config"][CONFIG_JSON]))
    facts = node_facts(context, experiment.config)
    reply = ConfigRecord(
        {
            "partition-id": facts.partition_id,
            "channel-profile": facts.profile.describe(),
            "num-examples": len(experiment.plan.client_indices[facts.partition_id]),
        }
    )
    return Message(RecordDict({"node": reply}), reply_to=msg)


@app.query("knowledge")
def receive_knowledge(msg: Message, context: Context) -> Message:
    context.state[KNOWLEDGE_ARRAYS] = msg.content.array_records[KNOWLEDGE_ARRAYS]
    context.state[KNOWLEDGE_HEADER] = msg.content.config_records[KNOWLEDGE_HEADER]
    return Message(RecordDict({"ack": ConfigRecord({"received": True})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    experiment = cached_experiment(str(context.state.config_records["config"][CONFIG_JSON]))
    # Parsed once per Ray actor with the experiment: parsing per call cost ~75 ms x every client x round.
    config = experiment.config
    facts = node_facts(context, config)
    train_config = msg.content.config_records["config"]
    # A resumed run restarts Flower's round count; seeds and SNR paths follow the original count.
    server_round = int(train_config["server-round"]) + int(train_config.get("round-offset", 0))
    knowledge = _cached_knowledge(context) if config.knowledge.mode == "prestored" else None
    state, metrics = run_client_round(
        experiment,
        facts.partition_id,
        facts.profile,
        local_data(experiment, facts.partition_id, knowledge),
        msg.content.array_records["arrays"].to_torch_state_dict(),
        server_round,
        resolve_device(config.device),
    )
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def _cached_knowledge(context: Context) -> RecordDict:
    if KNOWLEDGE_ARRAYS not in context.state.array_records:
        raise RuntimeError("no knowledge slice cached on this node: the server must send query.knowledge before training")
    return RecordDict(
        {
            KNOWLEDGE_ARRAYS: context.state.array_records[KNOWLEDGE_ARRAYS],
            KNOWLEDGE_HEADER: context.state.config_records[KNOWLEDGE_HEADER],
        }
    )
