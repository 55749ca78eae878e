"""The ClientApp: what an edge device does with each message from the server.

describe  -> remember the run's config, report partition and channel profile
knowledge -> cache this node's knowledge slice in its context state (sent once per run)
train     -> distill the global student on local data through the node's channel, reply weights
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedtosc.channels import seed_channels
from fedtosc.experiment import experiment_student, load_teacher, resolve_device
from fedtosc.faults import InjectedCrash, fault_for
from fedtosc.federated import (
    AGGREGATION_WEIGHT_KEY,
    cached_experiment,
    local_data,
    node_facts,
    nominal_snr_db,
    snr_aware_weight,
)
from fedtosc.training import NonFiniteLossError, train_student

app = ClientApp()


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    context.state["config"] = msg.content.config_records["config"]
    experiment = cached_experiment(str(context.state["config"]["config-json"]))
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
    context.state["knowledge"] = msg.content.array_records["knowledge"]
    context.state["knowledge-header"] = msg.content.config_records["knowledge-header"]
    return Message(RecordDict({"ack": ConfigRecord({"received": True})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    experiment = cached_experiment(str(context.state.config_records["config"]["config-json"]))
    # Parsed once per Ray actor with the experiment: parsing per call cost ~75 ms x every client x round.
    config = experiment.config
    facts = node_facts(context, config)
    device = resolve_device(config.device)
    train_config = msg.content.config_records["config"]
    # A resumed run restarts Flower's round count; seeds and SNR paths follow the original count.
    server_round = int(train_config["server-round"]) + int(train_config.get("round-offset", 0))
    knowledge = _cached_knowledge(context) if config.knowledge.mode == "prestored" else None
    data = local_data(experiment, facts.partition_id, knowledge)
    embedding_dim = None if data.teacher_embeddings is None else data.teacher_embeddings.shape[1]
    student = experiment_student(experiment, embedding_dim)
    global_state = msg.content.array_records["arrays"].to_torch_state_dict()
    student.load_state_dict(global_state)
    proximal = [p.detach().clone() for p in student.parameters()] if config.strategy.name == "fedprox" else None
    online_teacher = load_teacher(experiment, device) if config.knowledge.mode == "online" else None
    round_seed = config.seed * 100_003 + facts.partition_id * 1_009 + server_round
    # Every random draw of this update (data order, SNRs, z ~ q(z|x), channel noise) depends on
    # (seed, partition, round) alone, not on what a reused Ray actor ran before: a resumed run
    # repeats the rounds an uninterrupted one would have run.
    generator = torch.Generator().manual_seed(round_seed)
    torch.manual_seed(round_seed)
    seed_channels(round_seed)
    fault = fault_for(config.federation.inject_faults, facts.partition_id, server_round)
    if fault == "crash":
        raise InjectedCrash(f"partition {facts.partition_id} crashes in round {server_round} (federation.inject_faults)")
    try:
        metrics = train_student(
            student,
            data,
            profile=facts.profile,
            channel=facts.profile.make_channel(config.channel.block_length),
            config=config,
            server_round=server_round,
            generator=generator,
            device=device,
            online_teacher=online_teacher,
            proximal_reference=proximal,
        )
    except NonFiniteLossError as error:
        # The server logs this reason and rejects the update; it must say which client diverged.
        raise NonFiniteLossError(f"partition {facts.partition_id} ({facts.profile.describe()}): {error}") from error
    if fault == "nan":
        with torch.no_grad():
            next(student.parameters()).fill_(float("nan"))
    metrics.update(
        {
            "num-examples": len(data),
            AGGREGATION_WEIGHT_KEY: snr_aware_weight(len(data), facts.profile, config.strategy.snr_weight_alpha),
            "partition-id": facts.partition_id,
            "snr-db": nominal_snr_db(facts.profile),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(student.cpu().state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def _cached_knowledge(context: Context) -> RecordDict:
    if "knowledge" not in context.state.array_records:
        raise RuntimeError("no knowledge slice cached on this node: the server must send query.knowledge before training")
    return RecordDict(
        {
            "knowledge": context.state.array_records["knowledge"],
            "knowledge-header": context.state.config_records["knowledge-header"],
        }
    )
