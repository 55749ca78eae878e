"""PromptGrid: replies are collected at its own poll interval, and the timeout still ends the wait."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import server.prompt_grid as prompt_grid
from server.prompt_grid import PromptGrid


class ScriptedGrid:
    """A Grid whose nodes reply on the given pull (1 = the first pull sees it; None = never)."""

    def __init__(self, reply_on_pull: dict[str, int | None]) -> None:
        self.reply_on_pull = reply_on_pull
        self.pulls = 0
        self.pushed: list[str] = []

    def push_messages(self, messages):
        self.pushed = [message.message_id for message in messages]
        return list(self.pushed)

    def pull_messages(self, message_ids):
        self.pulls += 1
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=message_id))
                for message_id in message_ids if self.reply_on_pull[message_id] == self.pulls]

    def get_node_ids(self):
        return [7, 9]

    def get_nodes(self):
        return [SimpleNamespace(node_id=node_id) for node_id in self.get_node_ids()]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Sleeps are recorded and advance a fake monotonic clock instead of waiting."""
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(prompt_grid.time, "sleep", sleep)
    monkeypatch.setattr(prompt_grid.time, "monotonic", lambda: now[0])
    return sleeps


def _messages(*ids: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(message_id=message_id) for message_id in ids]


def test_replies_are_collected_every_poll_and_the_wait_ends_with_the_last_one(clock: list[float]) -> None:
    inner = ScriptedGrid({"a": 1, "b": 3, "c": 4})
    replies = PromptGrid(inner).send_and_receive(_messages("a", "b", "c"), timeout=60)

    assert sorted(reply.metadata.reply_to_message_id for reply in replies) == ["a", "b", "c"]
    assert inner.pulls == 4  # no pull after the last reply came
    assert clock == [0.05, 0.05, 0.05]  # Flower's HttpGrid would have slept 3 s each time


def test_the_timeout_ends_the_wait_with_the_replies_that_came(clock: list[float]) -> None:
    inner = ScriptedGrid({"a": 2, "lost": None})
    replies = PromptGrid(inner, poll_s=(0.5, 0.5)).send_and_receive(_messages("a", "lost"), timeout=2.0)

    assert [reply.metadata.reply_to_message_id for reply in replies] == ["a"]
    assert sum(clock) == pytest.approx(2.0)  # polled until the deadline, not past it


def test_the_more_replies_are_out_the_longer_between_pulls(clock: list[float]) -> None:
    """A pull names every message still out: 0.1 ms per message between pulls, up to 0.2 s."""
    inner = ScriptedGrid({f"m{i}": 2 if i < 1500 else 3 for i in range(3000)})
    PromptGrid(inner).send_and_receive(_messages(*(f"m{i}" for i in range(3000))), timeout=60)
    assert clock == [pytest.approx(0.2), pytest.approx(1500 * 1e-4)]  # 3,000 out, then 1,500


def test_everything_but_the_wait_is_the_wrapped_grid(clock: list[float]) -> None:
    inner = ScriptedGrid({"a": 1})
    grid = PromptGrid(inner)
    assert list(grid.get_node_ids()) == [7, 9]
    assert [node.node_id for node in grid.get_nodes()] == [7, 9]
    assert list(grid.push_messages(_messages("a"))) == ["a"]
    assert inner.pushed == ["a"]
