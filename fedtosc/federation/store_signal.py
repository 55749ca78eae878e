"""Wake-ups instead of sleeps where a simulation's messages are stored: Flower's in-memory LinkState.

In a simulation the ServerApp (through its InMemoryGrid) and Flower's engine share one in-memory
LinkState in the `flwr-simulation` process, and both poll it: the engine for new messages to hand
to the Ray actors (fedtosc.federation.message_pickup), the ServerApp for replies
(server.prompt_grid). A poll that finds nothing sleeps its interval out, so a round started up to
one pick-up interval late and ended up to one reply interval late, with the actors idle meanwhile.

`store_signal(state, method)` makes `state` announce every call of one of its store methods
("store_message_ins": the ServerApp sent a message; "store_message_res": a reply came). A poller
notes `stores()` before it looks, and after finding nothing waits until the count moves or its
interval passes, whichever is first: a store it did not see wakes it at once (but no sooner than a
spacing that grows with what a look costs, so a thousand replies in a burst are not a thousand
looks), and the interval still bounds the wait for what no store announces (Flower synthesizes the error reply of a node
that went offline when replies are pulled). Only Flower 1.42's InMemoryLinkState is signalled; for
anything else (a deployed ServerApp's grid has no state here) there is no signal and pollers sleep
as before.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import flwr

__all__ = ["StoreSignal", "store_signal"]

_SIGNALLED_METHODS = ("store_message_ins", "store_message_res")
_INSTALL_LOCK = threading.Lock()


class StoreSignal:
    """A count of the calls of one store method, and a wait for it to move."""

    def __init__(self) -> None:
        self._moved = threading.Condition()
        self._stores = 0

    def stores(self) -> int:
        """How many stores so far: note it before looking, then `wait` with it."""
        with self._moved:
            return self._stores

    def wait(self, seen: int, timeout_s: float, spacing_s: float = 0.0) -> None:
        """Return once a store follows the count `seen`, but not before `spacing_s` seconds, or
        after `timeout_s` seconds. `spacing_s`, what one look costs times the cores' share it may
        take, keeps a burst of stores (a round's thousand replies) from becoming a look per store."""
        started = time.monotonic()
        with self._moved:
            self._moved.wait_for(lambda: self._stores != seen, timeout_s)
        early = min(spacing_s, timeout_s) - (time.monotonic() - started)
        if early > 0:
            time.sleep(early)

    def stored(self) -> None:
        """Announce a store: wakes every waiter."""
        with self._moved:
            self._stores += 1
            self._moved.notify_all()


def store_signal(state: Any, method: str) -> StoreSignal | None:  # noqa: ANN401 - whatever state a grid holds
    """The signal of `state`'s store method `method` (installed on the first call, shared after),
    or None when `state` is not Flower 1.42's in-memory LinkState."""
    if method not in _SIGNALLED_METHODS:
        raise ValueError(f"{method!r} is not one of the signalled store methods {_SIGNALLED_METHODS}")
    if type(state).__name__ != "InMemoryLinkState" or not flwr.__version__.startswith("1.42."):
        return None
    with _INSTALL_LOCK:
        signals: dict[str, StoreSignal] = state.__dict__.setdefault("_fedtosc_store_signals", {})
        if method not in signals:
            signals[method] = StoreSignal()
            # An attribute of the instance: the engine and the grid both call it through this state.
            setattr(state, method, _announcing(getattr(state, method), signals[method]))
        return signals[method]


def _announcing(store: Callable[..., Any], signal: StoreSignal) -> Callable[..., Any]:
    @functools.wraps(store)
    def announced(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the store's own result
        result = store(*args, **kwargs)
        signal.stored()
        return result

    return announced
