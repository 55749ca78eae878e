"""Knowledge delivery (knowledge.delivery): what each node is sent, what it costs, and the node's cache.

The ClientApp's own handlers run here on real Flower messages and contexts, without a SuperLink:
a node with its own folder describes itself, receives the shared payload once, caches it by
fingerprint, and a restarted node (a fresh context, the same cache) is sent nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from PIL import Image

from clients.client_app import describe, receive_knowledge, train
from fedtosc.config import load_config
from fedtosc.experiment import Experiment, codec_for, experiment_student, load_experiment
from fedtosc.federation.messages import DESCRIBE, KNOWLEDGE, REJOINED, RUN
from fedtosc.federation.node import RUN_SLOT
from fedtosc.federation.node_data import OwnSamples, shared_delivery_data
from fedtosc.federation.payload_cache import cached_payload
from fedtosc.federation.payloads import (
    KNOWLEDGE_ARRAYS, TRANSFER_DIGESTS, TRANSFER_IMAGES, TRANSFER_SAMPLES, payload_bytes, payload_fingerprint,
    shared_payload,
)
from fedtosc.federation.wire import state_to_wire
from fedtosc.knowledge.builder import build_knowledge
from fedtosc.models.teachers import ServerCNNTeacher
from server.broadcast import plan_broadcast, run_description

_CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _server_process_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps a message with its process's task identity, which a ServerApp process has set."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """delivery -> (experiment, store), each built once for this module."""
    cache: dict[str, tuple[Experiment, object]] = {}

    def get(delivery: str) -> tuple[Experiment, object]:
        if delivery not in cache:
            cache[delivery] = _build(tmp_path_factory.mktemp(delivery), delivery)
        return cache[delivery]

    return get


def _build(tmp_path: Path, delivery: str) -> tuple[Experiment, object]:
    config = load_config([f"knowledge.delivery={delivery}", f"knowledge.cache_dir={tmp_path / 'knowledge'}",
                          "federation.num_clients=3", "channel.clients=awgn:10", "train.local_epochs=1", "device=cpu",
                          "dataset.max_train_samples=300"])
    experiment = load_experiment(config)
    torch.manual_seed(0)
    teacher = ServerCNNTeacher(in_channels=1, num_classes=10, width=4).eval()  # untrained: only the plumbing matters
    train = experiment.splits.train
    store = build_knowledge(teacher, train, experiment.plan.distillation_indices, codec_for(config), tmp_path / "store.safetensors",
                            dataset_fingerprint=experiment.dataset_fingerprint, transform="uint8/255", batch_size=256, device=_CPU)
    return experiment, store


def _write_node_folder(folder: Path, experiment: Experiment, indices: np.ndarray) -> None:
    train = experiment.splits.train
    for index in indices:
        path = folder / train.class_names[int(train.labels[index])] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[index, 0].numpy(), mode="L").save(path)


def _describe_message(experiment: Experiment, fingerprint: str, slot: int) -> Message:
    """The `describe` the server sends the node in `slot` (node ids 0..slot: this one is the last)."""
    records = run_description(experiment, list(range(slot + 1)), fingerprint)[slot]
    return Message(RecordDict(dict(records)), dst_node_id=7, message_type=DESCRIBE)


def _fresh_context(node_config: dict) -> Context:
    """A SuperNode process as it starts: its node config, an empty state."""
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_transfer_set_payload_is_the_servers_samples_and_their_knowledge_never_a_clients(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    plan = experiment.plan

    payload = shared_payload(experiment, store)

    sent_indices = payload.array_records[KNOWLEDGE_ARRAYS]["index"].numpy()
    assert np.array_equal(sent_indices, plan.server_indices)  # no transfer_fraction: the server's own samples
    assert np.intersect1d(sent_indices, np.concatenate(plan.client_indices)).size == 0
    images = payload.array_records[TRANSFER_SAMPLES][TRANSFER_IMAGES].numpy()
    assert images.dtype == np.uint8 and np.array_equal(images, experiment.splits.train.images[plan.server_indices].numpy())
    # Every byte is counted: the samples (uint8) plus the knowledge rows, as a link carries them.
    assert payload_bytes(payload) > images.nbytes + store.bytes_per_sample * len(sent_indices)


def test_broadcast_plan_sends_the_payload_once_to_each_node_without_it_and_counts_every_byte(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    nodes = {11: {"partition-id": 0, "has-payload": False}, 12: {"partition-id": 1, "has-payload": True},
             13: {"partition-id": 2, "has-payload": False}}

    plan = plan_broadcast(experiment.config, nodes, store, experiment, payload)

    assert plan.bytes_by_node() == {11: payload_bytes(payload), 13: payload_bytes(payload)}


def test_partition_delivery_plan_sends_each_node_its_own_rows_only(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("partition")
    nodes = {11: {"partition-id": 0}, 12: {"partition-id": 1}}

    plan = plan_broadcast(experiment.config, nodes, store, experiment, None)

    for node, entry in nodes.items():
        rows = plan.payloads[node].array_records[KNOWLEDGE_ARRAYS]["index"].numpy()
        assert np.array_equal(rows, experiment.plan.client_indices[entry["partition-id"]])


def test_restarted_node_reuses_its_cached_payload_and_is_sent_nothing(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    fingerprint = payload_fingerprint(payload)
    own_rows = experiment.plan.client_indices[0][:20]
    _write_node_folder(tmp_path / "node", experiment, own_rows)
    node_config = {"data-path": str(tmp_path / "node"), "cache-dir": str(tmp_path / "node-cache")}

    first = _fresh_context(node_config)
    reply = describe(_describe_message(experiment, fingerprint, slot=0), first).content.config_records["node"]
    assert (reply["num-examples"], reply["num-labelled"], reply["has-payload"]) == (20, 20, False)
    assert "class-counts" not in reply  # not unless the node config allows it
    assert "partition-id" not in node_config and reply["partition-id"] == 0  # the server's slot
    nodes = {7: dict(reply)}
    sent = plan_broadcast(experiment.config, nodes, store, experiment, payload).bytes_by_node()
    assert sent == {7: payload_bytes(payload)}
    receive_knowledge(Message(payload, dst_node_id=7, message_type=KNOWLEDGE), first)

    restarted = _fresh_context(node_config)
    reply = describe(_describe_message(experiment, fingerprint, slot=0), restarted).content.config_records["node"]
    assert reply["has-payload"] is True
    assert plan_broadcast(experiment.config, {7: dict(reply)}, store, experiment, payload).bytes_by_node() == {}

    student = experiment_student(experiment, None)
    train_message = Message(
        RecordDict({"arrays": _arrays(student), "config": ConfigRecord({"server-round": 1})}), dst_node_id=7, message_type="train"
    )
    metrics = train(train_message, restarted).content.metric_records["metrics"]
    # Trained on its own 20 rows plus the cached transfer set, without fetching it again.
    assert metrics["num-examples"] == 20 + len(experiment.plan.server_indices)


def test_a_node_restarted_mid_run_rejoins_from_its_train_message_and_its_cache(tmp_path: Path, built) -> None:  # noqa: ANN001
    """A SuperNode restarted mid-run gets no `describe` (Flower kept its context in memory): the
    strategy's train message carries its run description, its cache the payload; the server counts it."""
    from server.round_traffic import RoundTraffic
    from server.strategies import make_strategy

    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    fingerprint = payload_fingerprint(payload)
    _write_node_folder(tmp_path / "node", experiment, experiment.plan.client_indices[1][:12])
    node_config = {"data-path": str(tmp_path / "node"), "cache-dir": str(tmp_path / "node-cache")}
    description = run_description(experiment, [5, 7, 9], fingerprint)  # node 7: slot 1
    receive_knowledge(Message(payload, dst_node_id=7, message_type=KNOWLEDGE), _described(description[7], node_config))
    student = experiment_student(experiment, None)
    traffic = RoundTraffic(student.state_dict(), knowledge_bytes=0)
    strategy = make_strategy(experiment.config, traffic.note_round, {node: {"partition-id": slot} for slot, node in enumerate((5, 7, 9))},
                             node_records=description.get)

    messages = list(strategy.configure_train(1, ArrayRecord(student.state_dict()), ConfigRecord(), _NodeGrid([5, 7, 9])))
    # each node its own description
    assert {m.metadata.dst_node_id: m.content.config_records[RUN][RUN_SLOT] for m in messages} == {5: 0, 7: 1, 9: 2}
    restarted = _fresh_context(node_config)  # no describe since the restart
    reply = train(next(m for m in messages if m.metadata.dst_node_id == 7), restarted)
    metrics = reply.content.metric_records["metrics"]

    assert (metrics[REJOINED], metrics["partition-id"]) == (1, 1)
    assert metrics["num-examples"] == 12 + len(experiment.plan.server_indices)  # its rows + the cached transfer set
    traffic.note_round(1, [reply.content], [])
    assert traffic.rejoins == {1: 1}
    again = train(next(m for m in messages if m.metadata.dst_node_id == 7), restarted).content.metric_records["metrics"]
    assert again[REJOINED] == 0  # once rejoined, it holds the run again
    # Without the payload in its cache a restarted node fails clearly (and the round goes on without it).
    with pytest.raises(RuntimeError, match="not in this node's cache"):
        train(next(m for m in messages if m.metadata.dst_node_id == 5), _fresh_context({"data-path": str(tmp_path / "node"), "cache-dir": str(tmp_path / "empty")}))


def _described(records: dict, node_config: dict) -> Context:
    context = _fresh_context(node_config)
    describe(Message(RecordDict(dict(records)), dst_node_id=7, message_type=DESCRIBE), context)
    return context


class _NodeGrid:
    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def test_a_partition_node_under_transfer_set_delivery_trains_on_its_partition_and_the_transfer_set(built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    fingerprint = payload_fingerprint(payload)
    node = _fresh_context({"partition-id": 2})

    reply = describe(_describe_message(experiment, fingerprint, slot=0), node).content.config_records["node"]
    assert (reply["partition-id"], reply["num-examples"]) == (2, len(experiment.plan.client_indices[2]))
    receive_knowledge(Message(payload, dst_node_id=7, message_type=KNOWLEDGE), node)
    student = experiment_student(experiment, None)
    train_message = Message(
        RecordDict({"arrays": _arrays(student), "config": ConfigRecord({"server-round": 1})}), dst_node_id=7, message_type="train"
    )
    metrics = train(train_message, node).content.metric_records["metrics"]

    assert metrics["num-examples"] == len(experiment.plan.client_indices[2]) + len(experiment.plan.server_indices)


def test_a_cached_payload_that_no_longer_matches_its_fingerprint_is_fetched_again(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    fingerprint = payload_fingerprint(payload)
    from fedtosc.federation.payload_cache import save_payload

    path = save_payload(tmp_path, fingerprint, payload)
    assert cached_payload(tmp_path, fingerprint) is not None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cached_payload(tmp_path, fingerprint) is None
    with pytest.raises(ValueError, match="announced fingerprint"):
        save_payload(tmp_path, "0" * 32, payload)


def test_class_counts_reach_the_server_only_when_the_node_allows_it(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    _write_node_folder(tmp_path / "node", experiment, experiment.plan.client_indices[1][:25])
    node_config = {"data-path": str(tmp_path / "node"), "share-class-counts": True, "label-fraction": 0.5}

    reply = describe(_describe_message(experiment, "", slot=1), _fresh_context(node_config)).content.config_records["node"]

    counts = json.loads(reply["class-counts"])
    assert len(counts) == 10 and sum(counts) == reply["num-labelled"] < 25 == reply["num-examples"]


def test_transfer_set_rows_carry_knowledge_and_own_rows_carry_labels(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("transfer_set")
    payload = shared_payload(experiment, store)
    own = OwnSamples(torch.zeros(5, 1, 8, 8, dtype=torch.uint8), torch.arange(5), torch.ones(5, dtype=torch.bool))

    data = shared_delivery_data(own, payload, temperature=4.0)

    transfer = len(experiment.plan.server_indices)
    assert len(data) == 5 + transfer
    assert data.with_knowledge.tolist() == [False] * 5 + [True] * transfer
    assert data.labelled.tolist() == [True] * 5 + [False] * transfer
    assert torch.all(data.teacher_probs[:5] == 0) and torch.allclose(data.teacher_probs[5:].sum(1), torch.ones(transfer))


def test_digest_delivery_gives_knowledge_to_the_samples_whose_bytes_match(tmp_path: Path, built) -> None:  # noqa: ANN001
    experiment, store = built("digest")
    payload = shared_payload(experiment, store)
    assert TRANSFER_DIGESTS in payload.array_records[TRANSFER_SAMPLES]
    assert TRANSFER_IMAGES not in payload.array_records[TRANSFER_SAMPLES]  # no samples travel in digest mode
    train = experiment.splits.train
    held = experiment.plan.client_indices[0][:6]
    stranger = torch.full((1, 1, 8, 8), 7, dtype=torch.uint8)  # a sample no store row holds
    own = OwnSamples(torch.cat([train.images[held], stranger]), torch.zeros(7, dtype=torch.long), torch.ones(7, dtype=torch.bool))

    data = shared_delivery_data(own, payload, temperature=4.0)

    assert data.with_knowledge.tolist() == [True] * 6 + [False]
    store_rows = np.searchsorted(experiment.plan.distillation_indices, held)
    expected = store.decode(experiment.plan.distillation_indices[store_rows]).soft_labels(4.0)
    assert torch.allclose(data.teacher_probs[:6], torch.as_tensor(expected))


def _arrays(student: torch.nn.Module):  # noqa: ANN202
    """The global model as the server sends it (float32, the default wire dtype)."""

    return state_to_wire(student.state_dict(), "float32")


class _DescribingGrid:
    """Replies to `describe` as nodes would: `failing` nodes with the error their ClientApp raised."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing

    def send_and_receive(self, messages, timeout):  # noqa: ANN001, ANN201
        from flwr.app import Error

        for message in messages:
            node = message.metadata.dst_node_id
            slot = int(message.content.config_records[RUN][RUN_SLOT])
            yield (Message(Error(code=0, reason=f"NodeDataError: /srv/node{node}/x.png: cannot read image"), reply_to=message)
                   if node in self.failing else
                   Message(RecordDict({"node": ConfigRecord({"partition-id": slot, "channel-profile": "awgn@10dB"})}),
                           reply_to=message))


def test_a_node_that_cannot_describe_itself_is_lost_and_the_run_goes_on_while_enough_remain(built) -> None:  # noqa: ANN001
    from server.broadcast import describe_nodes

    experiment, _ = built("transfer_set")

    nodes = describe_nodes(_DescribingGrid({30}), run_description(experiment, [30, 10, 20], ""), 60.0, enough=2)
    assert sorted(nodes) == [10, 20]
    assert sorted(entry["partition-id"] for entry in nodes.values()) == [0, 1]  # slots in node-id order

    with pytest.raises(RuntimeError, match=r"only 1 of 3 nodes could start, 2 needed: node 20: .*/srv/node20/x\.png.*; node 30: "):
        describe_nodes(_DescribingGrid({20, 30}), run_description(experiment, [30, 10, 20], ""), 60.0, enough=2)
