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
skipped; a message the ServerApp stores wakes it at once. It changes Flower only where it finds
the 1.42 engine and its in-memory state, and not
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

from fedtosc.federation.store_signal import store_signal

__all__ = ["install", "pick_up_once"]

_ENGINE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
KEEP_FLOWERS = ("FEDTOSC_ENGINE_PICKUP", "flower")  # this variable, set to this, leaves Flower's loop in place
# Flower polls every 0.1 s whatever it costs. One pass of ours looks at every stored message
# (0.24 ms for 1,000 here), so the interval grows with them: 40 passes a second at 1,000 stored
# messages stay near 1% of a core, and a small federation's round starts within 10 ms, not 100.
_POLL_S_PER_STORED_MESSAGE = 2.5e-5
_MIN_POLL_S, _MAX_POLL_S = 0.01, 0.1


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
    """Drop-in for Flower's loop of the same name: each waiting node's next message, as soon as the
    ServerApp stores one (fedtosc.federation.store_signal), else every 10 to 100 ms (longer the more
    messages a pass looks at); passes at most one per 0.025 ms per stored message either way."""
    sent = store_signal(state, "store_message_ins")
    while not f_stop.is_set():
        seen = sent.stores() if sent is not None else 0
        spacing = pick_up_once(state, queue, nodes_mapping) * _POLL_S_PER_STORED_MESSAGE
        interval = min(_MAX_POLL_S, max(_MIN_POLL_S, spacing))
        if sent is not None:
            sent.wait(seen, interval, spacing_s=spacing)
        else:
            f_stop.wait(interval)


def pick_up_once(state, queue: Queue, nodes_mapping: Mapping[int, int]) -> int:  # noqa: ANN001
    """One poll: for each node in the engine's order that has an undelivered message, its next one.
    Returns how many stored messages the pass looked at."""
    stored = _stored_messages(state)
    if stored is None:  # not the in-memory state this was written against: ask every node, as Flower does
        waiting, looked_at = set(nodes_mapping), len(nodes_mapping)
    else:
        waiting = {message.metadata.dst_node_id for message in stored if message.metadata.delivered_at == ""}
        looked_at = len(stored)
    for node_id in nodes_mapping:
        if node_id in waiting:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
    return looked_at


def _stored_messages(state) -> list[Message] | None:  # noqa: ANN001
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    if store is None or lock is None:
        return None
    with lock:
        return list(store.values())
