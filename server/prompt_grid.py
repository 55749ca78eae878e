"""A Grid that collects replies as they arrive.

A deployed ServerApp talks to its SuperLink through Flower 1.42's HttpGrid, whose `send_and_receive`
pulls replies and then sleeps 3 s whenever some are still out: every exchange (describe, knowledge,
each round) ends up to 3 s after its last reply, 1.5 s on average. `PromptGrid` wraps any Grid and
polls every 50 to 200 ms instead (`REPLY_POLL_S`); everything else goes to the wrapped Grid
unchanged. The simulation engine's InMemoryGrid polls every 0.1 s; in a simulation the wait here
also ends as soon as a reply is stored (fedtosc.federation.store_signal), so a round ends when its
last reply comes, not up to a poll later.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from fedtosc.federation.store_signal import store_signal

# A pull names the messages still out, so it costs more the more are out: the interval is 0.1 ms
# per outstanding message, between 50 ms (20 small pulls a second are nothing to a SuperLink) and
# 200 ms (2,000 messages and more).
REPLY_POLL_S = (0.05, 0.2)
_POLL_S_PER_OUTSTANDING_MESSAGE = 1e-4
# Woken by each stored reply (a simulation), pulls still stay 1 ms per outstanding message apart: a
# pull costs 3.4 us per message still out on Flower's in-memory state (0.05 / 0.33 / 3.4 ms at 10 /
# 100 / 1,000), so pulls take at most 0.3% of a core; a pull per reply would take about 1.7 s a round at 1,000.
_PULL_SPACING_S_PER_OUTSTANDING_MESSAGE = 1e-3


class PromptGrid:
    """`grid`, with replies collected every `poll_s` = (shortest, longest) seconds, instead of Flower's 3;
    everything else is the wrapped grid's (as `server.screening._OrderedGrid` wraps one)."""

    def __init__(self, grid: Grid, poll_s: tuple[float, float] = REPLY_POLL_S) -> None:
        self._grid = grid
        self._poll_s = poll_s

    def __getattr__(self, name: str):  # noqa: ANN204 - whatever the grid has
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`; return the replies that came within `timeout` seconds (None: wait for all),
        as Flower's own `send_and_receive` does."""
        # A simulation's in-memory state announces each reply it stores: a pull then follows at once.
        replied = store_signal(getattr(self._grid, "state", None), "store_message_res")
        waiting = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            seen = replied.stores() if replied is not None else 0
            arrived = list(self._grid.pull_messages(waiting))
            replies.extend(arrived)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            shortest, longest = self._poll_s
            interval = min(longest, max(shortest, len(waiting) * _POLL_S_PER_OUTSTANDING_MESSAGE))
            if deadline is not None:
                interval = min(interval, max(0.0, deadline - time.monotonic()))
            if replied is not None:
                replied.wait(seen, interval, spacing_s=len(waiting) * _PULL_SPACING_S_PER_OUTSTANDING_MESSAGE)
            else:
                time.sleep(interval)
        return replies
