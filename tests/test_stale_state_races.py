"""Deterministic versions of the races behind the long chaos run's failure on Redis.

1. The outbox read: RedisStore.pending_messages reads the ids, then the bodies. A message
   delivered between the two reads used to be skipped, so `pending_messages(1)` answered []
   while later messages were still queued: the chaos run's settle check took the outbox for
   drained and then saw five more posts (legitimate events, queued behind a message whose
   claim a kill had left in place).
2. A cycle whose readings are older than ones already committed (a replica that lost the
   lease mid-cycle, `check --notify` from cron beside `serve`): its old readings must not
   produce events against the newer alert state, nor replace the newer latest readings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import fired, read_ok

from bot.alerts import Policy, step
from bot.alerts_types import AlertBook, Event, EventKind
from bot.quota import Level, QuotaType, ScopeReading, Threshold
from bot.store.base import CycleCommit, OutboxMessage, StateStore
from bot.store.factory import make_store
from bot.store.redis import RedisStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
V = QuotaType.VOICE


def message(at: datetime, scope: str) -> OutboxMessage:
    event = fired(scope, V, Level.WARNING, 500, 1000, at=at, opened_at=at)
    return OutboxMessage(id=OutboxMessage.new_id(at), created_at=at, events=(event,))


# 1. the outbox read ------------------------------------------------------------------------


async def test_a_message_delivered_mid_read_does_not_hide_the_ones_behind_it(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix="race")
    other = RedisStore(redis_url, prefix="race")  # another replica, delivering
    await store.open()
    await other.open()
    try:
        first, second = message(NOW, "a"), message(NOW + SEC, "b")
        book, version = await store.load_book()
        assert await store.commit_cycle(CycleCommit([], book, [first]), version)
        book, version = await store.load_book()
        assert await store.commit_cycle(CycleCommit([], book, [second]), version)

        client: Any = store.redis._r  # the hook sits between the two round trips
        zrange = client.zrange
        delivered = False

        async def zrange_then_deliver(*args: Any, **kwargs: Any) -> Any:
            nonlocal delivered
            ids = await zrange(*args, **kwargs)
            if not delivered:
                delivered = True
                await other.mark_delivered(first.id, NOW + 2 * SEC)
            return ids

        client.zrange = zrange_then_deliver
        pending = await store.pending_messages(1)
        assert delivered
        assert [m.id for m in pending] == [second.id]
    finally:
        await store.close()
        await other.close()


# 2. readings older than the committed ones -------------------------------------------------

POLICY = Policy(
    repeat_interval=None, resolve_margin_pct=10, failures_before_alert=1, forecast_horizon=None
)
THRESHOLDS = {"app": {V: Threshold(1000, 100)}}


def reading(at: datetime, voice: int) -> ScopeReading:
    return read_ok("app", at, voice=voice)


def test_step_ignores_a_reading_older_than_the_one_the_book_last_saw() -> None:
    """Pure: warning at 500 (t1), topped up to 65,456 (t3), then a late 77 read at t2."""
    book, events = step(AlertBook(), [reading(NOW, 500)], THRESHOLDS, {}, NOW, POLICY)
    assert [e.kind for e in events] == [EventKind.FIRED]
    book, events = step(book, [reading(NOW + 3 * SEC, 65_456)], THRESHOLDS, {}, NOW, POLICY)
    assert [e.kind for e in events] == [EventKind.RESOLVED]
    late, events = step(book, [reading(NOW + 2 * SEC, 77)], THRESHOLDS, {}, NOW, POLICY)
    assert events == []
    assert late == book


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def shared_store(
    request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[Callable[[], Awaitable[StateStore]]]:
    """Opens stores sharing one state, as two processes would."""
    if request.param == "memory":
        only = make_store("memory://")
        url = None
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("redis_url")
    opened: list[StateStore] = []

    async def open_one() -> StateStore:
        store = only if url is None else make_store(url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def test_a_late_cycle_with_old_readings_changes_nothing(
    shared_store: Callable[[], Awaitable[StateStore]],
) -> None:
    """Two pollers: the slow one read 77 at t2; the other read 65,456 at t3 and committed
    first. The slow one's commit must produce no event and keep the newer latest reading."""
    from bot.monitor import evaluate_and_commit

    first, slow = await shared_store(), await shared_store()
    await evaluate_and_commit(first, [reading(NOW, 500)], THRESHOLDS, {}, NOW, POLICY)
    await evaluate_and_commit(first, [reading(NOW + 3 * SEC, 65_456)], THRESHOLDS, {}, NOW, POLICY)
    messages = await first.pending_messages()
    events, _ = await evaluate_and_commit(
        slow, [reading(NOW + 2 * SEC, 77)], THRESHOLDS, {}, NOW + 4 * SEC, POLICY
    )
    assert events == []
    assert await first.pending_messages() == messages
    latest = (await first.latest_readings())["app"]
    assert latest.balances is not None and latest.balances[V] == 65_456
    assert 77 not in [value for _, value in await first.history("app", V, NOW - SEC)]


async def test_concurrent_pollers_never_announce_an_old_value() -> None:
    """The same race with the cycle's own commit loop: the slow cycle loads the book only
    after the fast one committed (as after a lease change), and must still stay silent."""
    from bot.monitor import evaluate_and_commit

    store = make_store("memory://")
    await store.open()
    await evaluate_and_commit(store, [reading(NOW, 500)], THRESHOLDS, {}, NOW, POLICY)
    gate = asyncio.Event()

    async def slow() -> list[Event]:
        old = [reading(NOW + 2 * SEC, 77)]  # fetched before the top-up ...
        await gate.wait()  # ... committed after the other poller's newer cycle
        events, _ = await evaluate_and_commit(store, old, THRESHOLDS, {}, NOW + 4 * SEC, POLICY)
        return events

    task = asyncio.create_task(slow())
    await evaluate_and_commit(
        store, [reading(NOW + 3 * SEC, 65_456)], THRESHOLDS, {}, NOW + 3 * SEC, POLICY
    )
    gate.set()
    assert await task == []
    await store.close()
