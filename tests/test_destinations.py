"""Per-destination queues: one slow or failing destination never holds another up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from builders import fired

from bot.alerts_types import AlertBook, Event
from bot.delivery import Deliverer
from bot.errors import DeliveryRetryable
from bot.outbox import Routing, plan_messages
from bot.quota import Level, QuotaType
from bot.render.alert import SlackMessage
from bot.store.base import PRIMARY, CycleCommit, OutboxMessage, StateStore
from bot.store.factory import make_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT = fired("shop", QuotaType.VOICE, Level.WARNING, 500, 1000, at=NOW, opened_at=NOW)


class DownSlack:
    name = "down"

    def __init__(self) -> None:
        self.tries = 0

    async def send(self, message: SlackMessage, console_text: str) -> None:
        self.tries += 1
        raise DeliveryRetryable("Slack is down")

    async def close(self) -> None:
        return None


class Robot:
    """A team-chat robot: renders a cycle's events itself."""

    name = "robot"

    def __init__(self) -> None:
        self.got: list[tuple[Event, ...]] = []

    async def send_events(self, events: Sequence[Event], now: datetime) -> None:
        self.got.append(tuple(events))

    async def send_digest(self, title: str, markdown: str) -> None:
        self.got.append(())

    async def close(self) -> None:
        return None


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    opened = make_store("memory://")
    await opened.open()
    yield opened
    await opened.close()


async def test_a_down_destination_never_holds_another(store: StateStore) -> None:
    book, messages = plan_messages(
        AlertBook(), [EVENT], NOW, Routing(destinations=("dingtalk",)), OutboxMessage.new_id(NOW)
    )
    assert [m.destination for m in messages] == [PRIMARY, "dingtalk"]
    assert await store.commit_cycle(CycleCommit([], book, messages), 0)

    slack, robot = DownSlack(), Robot()
    primary = Deliverer(store, slack, holder="h", clock=lambda: NOW)
    chat = Deliverer(store, robot, holder="h", clock=lambda: NOW, destination="dingtalk")
    assert await primary.deliver_pending() == 0
    assert await chat.deliver_pending() == 1
    assert robot.got == [(EVENT,)]
    assert primary.status.queued == 1 and primary.status.problem == "Slack is down"
    assert chat.status.queued == 0 and chat.status.problem is None
    # The chat's queue is empty; Slack's still holds its message for later.
    assert await store.pending_messages(destination="dingtalk") == []
    assert len(await store.pending_messages()) == 1


async def test_no_events_no_messages_for_other_destinations() -> None:
    _, messages = plan_messages(
        AlertBook(), [], NOW, Routing(destinations=("dingtalk",)), OutboxMessage.new_id(NOW)
    )
    assert messages == []
