"""Message pick-up in Flower's simulation engine, asking only the nodes that have a message waiting.

Flower 1.42's engine (`flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue`) asks the
in-memory LinkState for each node's next message every 0.1 s. Each ask walks every stored message
and checks its expiry and federation, so one poll does nodes x stored-messages checks: 10,000 at
100 clients, a million at 1,000, every 0.1 s for as long as a round lasts. That runs in the process
that also hosts the ServerApp and hands work to the Ray actors, and on a small machine it takes CPU
from the clients (benchmarks/federation.py measures what it costs).

`install()` swaps in a pick-up that first collects, in one pass, the nodes that have an undelivered
message, and asks only those, in the engine's own node order and through the LinkState's own
`get_message_ins` (which still checks expiry and marks delivery). What reaches the engine's queue,
and in which order, is what Flower's loop puts there; only the asks that would find nothing are
skipped. It changes Flower only where it finds the 1.42 engine and its in-memory state, and not
at all with FEDTOSC_ENGINE_PICKUP=flower in the environment (how benchmarks/federation.py measures
both side by side).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from queue import Queue

import flwr
from flwr.app import Message

__all__ = ["install", "pick_up_once"]

_ENGINE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
KEEP_FLOWERS = ("FEDTOSC_ENGINE_PICKUP", "flower")  # this variable, set to this, leaves Flower's loop in place
_POLL_S = 0.1  # Flower's own interval


def install() -> bool:
    """Use this pick-up in the simulation engine of this process, if the engine is loaded here.

    The engine is imported only where simulations run (the `flwr-simulation` process, which loads
    the ClientApp before it starts the pick-up thread), so elsewhere this imports nothing and
    returns False, as it does for a Flower version other than 1.42 and under KEEP_FLOWERS.
    """
    engine = sys.modules.get(_ENGINE_MODULE)
    if os.environ.get(KEEP_FLOWERS[0]) == KEEP_FLOWERS[1]:
        return False
    if engine is None or not flwr.__version__.startswith("1.42.") or not hasattr(engine, "add_messages_to_queue"):
        return False
    engine.add_messages_to_queue = add_messages_to_queue
    return True


def add_messages_to_queue(state, queue: Queue, nodes_mapping: Mapping[int, int], f_stop: threading.Event) -> None:  # noqa: ANN001
    """Drop-in for Flower's loop of the same name: every 0.1 s, each waiting node's next message."""
    while not f_stop.is_set():
        pick_up_once(state, queue, nodes_mapping)
        f_stop.wait(_POLL_S)


def pick_up_once(state, queue: Queue, nodes_mapping: Mapping[int, int]) -> None:  # noqa: ANN001
    """One poll: for each node in the engine's order that has an undelivered message, its next one."""
    waiting = _nodes_with_undelivered_messages(state)
    if waiting is None:  # not the in-memory state this was written against: ask every node, as Flower does
        waiting = set(nodes_mapping)
    for node_id in nodes_mapping:
        if node_id in waiting:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)


def _nodes_with_undelivered_messages(state) -> set[int] | None:  # noqa: ANN001
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    if store is None or lock is None:
        return None
    with lock:
        messages: list[Message] = list(store.values())
    return {message.metadata.dst_node_id for message in messages if message.metadata.delivered_at == ""}
