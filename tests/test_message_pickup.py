"""The simulation engine's message pick-up: the same messages, in the same order, as Flower's own
loop, on Flower's own in-memory LinkState; without a check of every stored message per node. And the
store signal: the pick-up and the ServerApp's wait for replies wake when a message is stored."""

from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace
from queue import Queue
from uuid import uuid4

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from fedtosc.federation import message_pickup
from fedtosc.federation.store_signal import StoreSignal, store_signal
import server.prompt_grid as prompt_grid
from server.prompt_grid import PromptGrid

_RUN_ID, _TASK_ID = 7, 11


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity `flwr-simulation` gives its process, which the LinkState reads; put back after."""
    for name, value in (("_task_id", _TASK_ID), ("_run_id", _RUN_ID), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _engine(num_nodes: int, destinations: list[int]):  # noqa: ANN202
    """A LinkState and node mapping as `flwr-simulation` sets them up, with one message pushed to
    node `destinations[i]` (an index into the nodes) for each i, its content naming i."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    mapping = vce_api._register_nodes(num_nodes, factory)
    state = factory.state()
    run = Run.create_empty(run_id=_RUN_ID)
    run.primary_task_id, run.federation_id = _TASK_ID, NOOP_FEDERATION_ID
    state.run_ids[_RUN_ID] = RunRecord(run=run)
    state.task_store[_TASK_ID] = Task(task_id=_TASK_ID, run_id=_RUN_ID)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    nodes = list(mapping)
    grid.push_messages([_message(i, nodes[node]) for i, node in enumerate(destinations)])
    return state, mapping, grid


def _message(number: int, node_id: int) -> Message:
    return Message(RecordDict({"m": ConfigRecord({"i": number})}), dst_node_id=node_id, message_type="query")


def _flower_poll(state, queue: Queue, mapping) -> None:  # noqa: ANN001
    """One pass of the body of Flower 1.42's `add_messages_to_queue`."""
    for node_id in mapping.keys():
        for message in state.get_message_ins(node_id=node_id, limit=1):
            queue.put(message)


def _polls(poll, destinations: list[int]) -> list[list[tuple[int, int]]]:  # noqa: ANN001
    """What each poll puts in the queue (partition, message number), until a poll finds nothing."""
    state, mapping, _ = _engine(6, destinations)
    polls = []
    while True:
        queue: Queue = Queue()
        poll(state, queue, mapping)
        picked = [(mapping[message.metadata.dst_node_id], int(message.content.config_records["m"]["i"]))
                  for message in queue.queue]
        if not picked:
            return polls
        polls.append(picked)


def test_each_poll_picks_up_what_flowers_loop_picks_up_in_the_same_order() -> None:
    # Node 3 has three messages, node 5 none; the pushes are out of node order.
    destinations = [3, 1, 3, 0, 4, 3, 2, 1]
    ours = _polls(message_pickup.pick_up_once, destinations)
    assert ours == _polls(_flower_poll, destinations)
    assert ours == [[(0, 3), (1, 1), (2, 6), (3, 0), (4, 4)], [(1, 7), (3, 2)], [(3, 5)]]


def test_a_poll_checks_no_stored_message_when_no_node_has_one_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message delivered and awaiting its reply, as during a round: Flower's poll checks each
    stored message once per node; this one checks none."""
    checks = {}
    for name, poll in (("flower", _flower_poll), ("ours", message_pickup.pick_up_once)):
        state, mapping, _ = _engine(6, list(range(6)))
        _flower_poll(state, Queue(), mapping)  # the round's messages go out
        counted = []
        check = state._check_stored_messages
        monkeypatch.setattr(state, "_check_stored_messages", lambda ids, *rest: (counted.append(ids), check(ids, *rest)))
        looked_at = poll(state, Queue(), mapping)
        checks[name] = len(counted)
    assert checks == {"flower": 6 * 6, "ours": 0}
    assert looked_at == 6  # ours ran last: one pass over the six stored messages sets its next wait


def test_install_replaces_the_engines_loop_only_where_the_engine_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vce_api, "add_messages_to_queue", vce_api.add_messages_to_queue)  # restored afterwards
    assert message_pickup.install()
    assert vce_api.add_messages_to_queue is message_pickup.add_messages_to_queue

    monkeypatch.setattr(vce_api, "add_messages_to_queue", "flower's")
    monkeypatch.setenv(*message_pickup.KEEP_FLOWERS)
    assert not message_pickup.install()
    assert vce_api.add_messages_to_queue == "flower's"
    monkeypatch.delenv(message_pickup.KEEP_FLOWERS[0])

    monkeypatch.delitem(sys.modules, vce_api.__name__)
    assert not message_pickup.install()


def _after_first(calls: threading.Event, function):  # noqa: ANN001, ANN202
    """`function`, setting `calls` once it has returned the first time."""
    def called(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = function(*args, **kwargs)
        calls.set()
        return result
    return called


def test_a_message_the_server_stores_wakes_the_pickup_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 60 s between polls, only the store signal can hand a message on within the 30 s waited."""
    monkeypatch.setattr(message_pickup, "_MIN_POLL_S", 60.0)
    monkeypatch.setattr(message_pickup, "_MAX_POLL_S", 60.0)
    state, mapping, grid = _engine(2, [])
    first_pass = threading.Event()
    monkeypatch.setattr(message_pickup, "pick_up_once", _after_first(first_pass, message_pickup.pick_up_once))
    queue, stop = Queue(), threading.Event()
    loop = threading.Thread(target=message_pickup.add_messages_to_queue, args=(state, queue, mapping, stop))
    loop.start()
    try:
        assert first_pass.wait(30)  # the loop found nothing and waits
        grid.push_messages([_message(5, list(mapping)[1])])
        assert queue.get(timeout=30).content.config_records["m"]["i"] == 5
    finally:
        stop.set()
        grid.push_messages([_message(6, list(mapping)[0])])  # a store wakes it to see the stop
        loop.join(30)
    assert not loop.is_alive()


def test_a_stored_reply_ends_the_servers_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServerApp's PromptGrid, polling 60 s apart on the simulation's own state, gets a reply
    stored after its first pull without sleeping its interval out: the store woke it."""
    def sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s instead of waiting for the next store")

    monkeypatch.setattr(prompt_grid, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    state, mapping, grid = _engine(2, [])
    first_pull = threading.Event()
    grid.pull_messages = _after_first(first_pull, grid.pull_messages)
    node = list(mapping)[0]

    def engine() -> None:  # delivers the message and stores the node's reply, once the server has looked
        first_pull.wait(30)
        reply = Message(RecordDict(), reply_to=state.get_message_ins(node_id=node, limit=1)[0])
        reply.metadata.__dict__["_message_id"] = str(uuid4())  # as the engine's worker names a reply
        state.store_message_res(reply)

    answering = threading.Thread(target=engine)
    answering.start()
    replies = list(PromptGrid(grid, poll_s=(60.0, 60.0)).send_and_receive([_message(1, node)], timeout=30))
    answering.join(30)
    assert [reply.metadata.src_node_id for reply in replies] == [node]


def test_only_flowers_in_memory_state_is_signalled_and_each_method_once() -> None:
    state, _, grid = _engine(2, [])
    sent = store_signal(state, "store_message_ins")
    assert store_signal(state, "store_message_ins") is sent
    grid.push_messages([_message(0, sorted(grid.get_node_ids())[0])])
    assert sent.stores() == 1  # wrapped once: one store, one announcement
    assert store_signal(object(), "store_message_ins") is None
    with pytest.raises(ValueError, match="signalled store methods"):
        store_signal(state, "store_node")


def test_a_waiter_woken_by_a_store_still_keeps_its_spacing() -> None:
    """A burst of stores (a round's replies) wakes a poller at most once per spacing."""
    signal = StoreSignal()
    seen = signal.stores()
    signal.stored()  # already moved: no waiting for a store
    started = time.monotonic()
    signal.wait(seen, timeout_s=60, spacing_s=0.2)
    assert time.monotonic() - started >= 0.2
