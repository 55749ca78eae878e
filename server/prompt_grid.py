"""A Grid that collects replies as they arrive.

A deployed ServerApp talks to its SuperLink through Flower 1.42's HttpGrid, whose `send_and_receive`
pulls replies and then sleeps 3 s whenever some are still out: every exchange (describe, knowledge,
each round) ends up to 3 s after its last reply, 1.5 s on average. `PromptGrid` wraps any Grid and
polls every `REPLY_POLL_S` instead; everything else goes to the wrapped Grid unchanged. The simulation
engine's InMemoryGrid already polls every 0.1 s, so there it changes nothing that matters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run

# A pull is one small request naming the messages still out: five a second is nothing to a
# SuperLink, and a reply waits at most this long to be noticed.
REPLY_POLL_S = 0.2


class PromptGrid(Grid):
    """`grid`, with replies collected every `poll_s` seconds instead of Flower's 3."""

    def __init__(self, grid: Grid, poll_s: float = REPLY_POLL_S) -> None:
        self._grid = grid
        self._poll_s = poll_s

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`; return the replies that came within `timeout` seconds (None: wait for all),
        as Flower's own `send_and_receive` does."""
        waiting = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            arrived = list(self._grid.pull_messages(waiting))
            replies.extend(arrived)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._poll_s)
        return replies
