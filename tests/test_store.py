"""One suite for every StateStore backend: SQLite (tmp_path) and a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from bot.alerts_types import AlertBook, AlertKind, Event, EventKind, OpenAlert, ScopeHealth
from bot.errors import ConfigError, StoreError
from bot.incidents import IncidentPolicy
from bot.incidents import step as incidents_step
from bot.quota import FetchError, Level, QuotaType, ScopeKind, ScopeReading
from bot.store.base import (
    CAP_SLICES,
    UPKEEP_EVERY,
    CycleCommit,
    OutboxMessage,
    Receipt,
    StateStore,
    to_us,
)
from bot.store.factory import make_store
from bot.store.redis import RedisStore
from bot.store.sqlite import _SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, SCHEMA_VERSION, SqliteStore
from bot.store.urls import redact_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
B, V, IND, M = QuotaType.BALANCE, QuotaType.VOICE, QuotaType.INDUSTRY, QuotaType.MARKET
MIN = timedelta(minutes=1)


# helpers ------------------------------------------------------------------------------------


def ok(scope: str, at: datetime, **values: int | None) -> ScopeReading:
    balances = {B: 900, V: 700, IND: 500, M: None} | {QuotaType(k): v for k, v in values.items()}
    kind = ScopeKind.ACCOUNT if scope == "account" else ScopeKind.APP
    return ScopeReading(scope=scope, kind=kind, read_at=at, balances=balances)


def failed(scope: str, at: datetime) -> ScopeReading:
    return ScopeReading(
        scope=scope,
        kind=ScopeKind.APP,
        read_at=at,
        error=FetchError(code=50002, message="auth failed", config=True),
    )


def unassigned(scope: str, at: datetime) -> ScopeReading:
    return ScopeReading(scope=scope, kind=ScopeKind.APP, read_at=at, unassigned=True)


def fired(scope: str, quota_type: QuotaType, at: datetime) -> Event:
    return Event(
        kind=EventKind.FIRED,
        scope=scope,
        at=at,
        quota_type=quota_type,
        level=Level.WARNING,
        value=50,
        threshold=100,
        alert=AlertKind.THRESHOLD,
        opened_at=at,
    )


def message(at: datetime, *events: Event) -> OutboxMessage:
    return OutboxMessage(id=OutboxMessage.new_id(at), created_at=at, events=events)


def book_pending(at: datetime, *keys: str) -> AlertBook:
    alert = OpenAlert(AlertKind.THRESHOLD, Level.WARNING, opened_at=at, announced_at=at, value=50)
    return AlertBook(
        alerts={k: alert for k in keys},
        health={"shop": ScopeHealth(consecutive_failures=1)},
    )


async def wait_for(
    condition: Callable[[], Awaitable[bool]], deadline_s: float = 3.0, step_s: float = 0.02
) -> None:
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {deadline_s}s")
        await asyncio.sleep(step_s)


# fixtures -----------------------------------------------------------------------------------

Opener = Callable[..., Awaitable[Any]]


@dataclass
class Backend:
    name: str
    # A new store over the same storage each call: a restart, or a second replica.
    make: Callable[..., Any]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name: str = request.param
    if name == "sqlite":
        path = tmp_path / "state.db"
        return Backend(name, lambda **kw: SqliteStore(path, **kw))
    url: str = request.getfixturevalue("redis_url")
    return Backend(name, lambda **kw: RedisStore(url, prefix="test", **kw))


@pytest.fixture
async def stores(backend: Backend) -> AsyncIterator[Opener]:
    opened: list[Any] = []

    async def open_store(**kwargs: Any) -> Any:
        # A fixed clock, so retention upkeep never depends on the day the suite runs.
        kwargs.setdefault("clock", FakeClock(NOW))
        store = backend.make(**kwargs)
        await store.open()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


@pytest.fixture
async def store(stores: Opener) -> StateStore:
    result: StateStore = await stores()
    return result


async def snapshot(store: StateStore) -> tuple[Any, ...]:
    """Everything observable, to show that a refused write changed nothing."""
    book = await store.load_book()
    latest = await store.latest_readings()
    history = {
        (scope, t): await store.history(scope, t, NOW - timedelta(days=1))
        for scope in ("account", "shop")
        for t in QuotaType
    }
    return book, latest, history, await store.pending_messages()


# alert book and commit_cycle ----------------------------------------------------------------


async def test_empty_store(store: StateStore) -> None:
    await store.ping()
    assert await store.load_book() == (AlertBook(), 0)
    assert await store.latest_readings() == {}
    assert await store.history("account", B, NOW - timedelta(days=30)) == []
    assert await store.pending_messages() == []
    assert await store.get_meta("last_cycle_at") is None


async def test_open_is_idempotent(store: StateStore) -> None:
    await store.open()
    await store.set_meta("k", "v")
    assert await store.get_meta("k") == "v"


async def test_commit_cycle_round_trip(store: StateStore) -> None:
    readings = [ok("account", NOW), failed("shop", NOW), unassigned("promo", NOW)]
    book = book_pending(NOW, "account/balance")
    msg = message(NOW, fired("account", B, NOW))

    assert await store.commit_cycle(CycleCommit(readings, book, [msg]), expected_version=0)

    assert await store.load_book() == (book, 1)
    assert await store.latest_readings() == {r.scope: r for r in readings}
    assert await store.history("account", B, NOW) == [(NOW, 900)]
    assert await store.pending_messages() == [msg]


async def test_commit_cycle_without_message(store: StateStore) -> None:
    assert await store.commit_cycle(CycleCommit([ok("account", NOW)], AlertBook()), 0)
    assert await store.commit_cycle(CycleCommit([], book_pending(NOW, "account/voice")), 1)
    assert await store.load_book() == (book_pending(NOW, "account/voice"), 2)
    assert await store.pending_messages() == []


async def test_version_conflict_writes_nothing(store: StateStore) -> None:
    first = CycleCommit(
        [ok("account", NOW)],
        book_pending(NOW, "account/balance"),
        [message(NOW, fired("account", B, NOW))],
    )
    assert await store.commit_cycle(first, 0)
    before = await snapshot(store)

    later = NOW + MIN
    stale = CycleCommit(
        [ok("account", later, balance=1), ok("shop", later)],
        book_pending(later, "shop/voice"),
        [message(later, fired("shop", V, later))],
    )
    for wrong in (0, 2, 7):
        assert not await store.commit_cycle(stale, expected_version=wrong)

    assert await snapshot(store) == before


async def test_concurrent_commits_same_store_exactly_one_wins(store: StateStore) -> None:
    commits = [
        CycleCommit(
            [ok("account", NOW, balance=n)],
            book_pending(NOW, f"app{n}/voice"),
            [message(NOW, fired(f"app{n}", V, NOW))],
        )
        for n in range(4)
    ]
    results = await asyncio.gather(*(store.commit_cycle(c, 0) for c in commits))

    assert sorted(results) == [False, False, False, True]
    winner = commits[results.index(True)]
    assert await store.load_book() == (winner.book, 1)
    assert await store.pending_messages() == list(winner.messages)
    assert await store.latest_readings() == {"account": winner.readings[0]}


async def test_concurrent_commits_two_instances_exactly_one_wins(stores: Opener) -> None:
    a: StateStore = await stores()
    b: StateStore = await stores()
    for version in range(5):
        at = NOW + version * MIN
        ca = CycleCommit([ok("account", at, balance=1)], book_pending(at, "a/voice"), [message(at)])
        cb = CycleCommit([ok("account", at, balance=2)], book_pending(at, "b/voice"), [message(at)])
        results = await asyncio.gather(a.commit_cycle(ca, version), b.commit_cycle(cb, version))
        assert sorted(results) == [False, True]
        winner = ca if results[0] else cb
        assert await a.load_book() == (winner.book, version + 1)
        assert await b.load_book() == (winner.book, version + 1)
    assert len(await a.pending_messages()) == 5


# readings and history -----------------------------------------------------------------------


async def test_save_readings_leaves_the_book_alone(store: StateStore) -> None:
    book = book_pending(NOW, "account/balance")
    assert await store.commit_cycle(CycleCommit([ok("account", NOW)], book), 0)

    refreshed = ok("account", NOW + MIN, balance=850)
    await store.save_readings([refreshed])

    assert await store.load_book() == (book, 1)
    assert (await store.latest_readings())["account"] == refreshed
    assert await store.history("account", B, NOW) == [(NOW, 900), (NOW + MIN, 850)]


async def test_latest_is_replaced_per_scope(store: StateStore) -> None:
    await store.save_readings([ok("account", NOW), ok("shop", NOW)])
    newer = failed("account", NOW + MIN)
    await store.save_readings([newer])
    assert await store.latest_readings() == {"account": newer, "shop": ok("shop", NOW)}


async def test_history_order_since_and_series(store: StateStore) -> None:
    times = [NOW + n * MIN for n in (3, 0, 2, 1)]  # written out of order
    for n, at in enumerate(times):
        await store.save_readings([ok("account", at, balance=100 + n, voice=200 + n)])
    await store.save_readings([ok("shop", NOW, balance=7)])

    assert await store.history("account", B, NOW) == [
        (NOW, 101),
        (NOW + MIN, 103),
        (NOW + 2 * MIN, 102),
        (NOW + 3 * MIN, 100),
    ]
    # `since` is inclusive
    assert await store.history("account", V, NOW + 2 * MIN) == [
        (NOW + 2 * MIN, 202),
        (NOW + 3 * MIN, 200),
    ]
    assert await store.history("shop", B, NOW) == [(NOW, 7)]
    assert await store.history("nobody", B, NOW) == []


async def test_history_keeps_one_value_per_instant(store: StateStore) -> None:
    await store.save_readings([ok("account", NOW, balance=10)])
    await store.save_readings([ok("account", NOW, balance=11)])
    assert await store.history("account", B, NOW) == [(NOW, 11)]


async def test_history_holds_only_successful_allocated_values(store: StateStore) -> None:
    await store.save_readings(
        [ok("account", NOW, market=None), failed("shop", NOW), unassigned("promo", NOW)]
    )
    assert await store.history("account", M, NOW) == []
    for scope in ("shop", "promo"):
        for t in QuotaType:
            assert await store.history(scope, t, NOW - MIN) == []


async def test_history_keeps_microseconds_and_returns_utc(store: StateStore) -> None:
    at = datetime(2026, 3, 1, 20, 0, 0, 123457, tzinfo=UTC)
    await store.save_readings([ok("account", at)])
    [(when, _)] = await store.history("account", B, at)
    assert when == at
    assert when.utcoffset() == timedelta(0)


async def test_histories_reads_many_series_at_once(store: StateStore) -> None:
    for n in range(3):
        await store.save_readings(
            [ok("account", NOW + n * MIN, balance=n), ok("shop", NOW + n * MIN, voice=10 + n)]
        )
    series = [("shop", V), ("nobody", B), ("account", B), ("account", IND)]
    found = await store.histories(series, NOW + MIN)
    assert list(found) == series
    for scope, quota_type in series:
        assert found[(scope, quota_type)] == await store.history(scope, quota_type, NOW + MIN)
    assert found[("shop", V)] == [(NOW + MIN, 11), (NOW + 2 * MIN, 12)]
    assert found[("nobody", B)] == []
    assert await store.histories([], NOW) == {}


async def test_histories_reads_more_series_than_one_round_trip_takes(store: StateStore) -> None:
    scopes = [f"app{i:03d}" for i in range(350)]  # 1,050 series: three Redis pipeline slices
    await store.save_readings([ok(scope, NOW, balance=i) for i, scope in enumerate(scopes)])
    series = [(scope, t) for scope in reversed(scopes) for t in (B, V, IND)]
    found = await store.histories(series, NOW)
    assert list(found) == series
    assert [found[(scope, B)] for scope in scopes] == [[(NOW, i)] for i in range(350)]
    assert all(found[(scope, V)] == [(NOW, 700)] for scope in scopes)


async def test_prune_history_drops_older_points(store: StateStore) -> None:
    for n in range(5):
        await store.save_readings([ok("account", NOW + n * MIN, balance=n, voice=None)])

    removed = await store.prune_history(NOW + 2 * MIN)

    assert removed >= 2
    assert [v for _, v in await store.history("account", B, NOW)] == [2, 3, 4]
    assert [v for _, v in await store.history("account", IND, NOW)] == [500, 500, 500]


async def test_history_is_capped_per_series(stores: Opener) -> None:
    store: StateStore = await stores(max_points=5)
    for n in range(8):
        await store.save_readings([ok("account", NOW + n * MIN, balance=n)])
    await store.prune_history(NOW - timedelta(days=1))  # applies the cap on every backend

    assert [v for _, v in await store.history("account", B, NOW)] == [3, 4, 5, 6, 7]


async def test_upkeep_checks_each_series_against_the_cap_once_per_round(
    stores: Opener,
) -> None:
    clock = FakeClock(NOW)
    store: StateStore = await stores(clock=clock)
    checked: list[set[tuple[str, str]]] = []
    prune = store.backend.prune

    async def recording(before_us: int, capped: set[tuple[str, str]] | None) -> int:
        assert capped is not None
        checked.append(set(capped))
        return await prune(before_us, capped)

    store.backend.prune = recording  # type: ignore[method-assign]
    scopes = [f"app{i}" for i in range(40)]
    for n in range(CAP_SLICES):
        clock.now = NOW + n * UPKEEP_EVERY
        await store.save_readings([ok(scope, clock.now) for scope in scopes])
    written = {(scope, t.value) for scope in scopes for t in (B, V, IND)}
    assert len(checked) == CAP_SLICES
    assert set().union(*checked) == written  # every series once per round ...
    assert sum(len(due) for due in checked) == len(written)  # ... and only once
    assert max(len(due) for due in checked) < len(written) / 10  # spread over the upkeeps


async def test_retention_is_applied_while_writing(stores: Opener) -> None:
    clock = FakeClock(NOW)
    store: StateStore = await stores(retention=timedelta(hours=1), clock=clock)

    await store.save_readings([ok("account", NOW, balance=1)])
    clock.now = NOW + timedelta(minutes=30)
    await store.commit_cycle(CycleCommit([ok("account", clock.now, balance=2)], AlertBook()), 0)
    clock.now = NOW + timedelta(minutes=90)
    await store.save_readings([ok("account", clock.now, balance=3)])
    assert [v for _, v in await store.history("account", B, NOW - MIN)] == [2, 3]

    # Upkeep is paced: a late point written within the same minute stays until the next one.
    await store.save_readings([ok("account", NOW - timedelta(hours=5), balance=0)])
    assert [v for _, v in await store.history("account", B, NOW - timedelta(hours=6))] == [0, 2, 3]
    clock.now += 2 * MIN  # the cut is now NOW + 32 min
    await store.save_readings([ok("account", clock.now, balance=4)])
    assert [v for _, v in await store.history("account", B, NOW - timedelta(hours=6))] == [3, 4]


# outbox -------------------------------------------------------------------------------------


async def queue(
    store: StateStore, count: int, book: AlertBook | None = None
) -> list[OutboxMessage]:
    messages = []
    version = (await store.load_book())[1]
    for n in range(count):
        at = NOW + n * MIN
        msg = message(at, fired("account", B, at), fired("shop", V, at))
        assert await store.commit_cycle(CycleCommit([], book or AlertBook(), [msg]), version + n)
        messages.append(msg)
    return messages


async def test_pending_messages_oldest_first_with_limit(store: StateStore) -> None:
    messages = await queue(store, 4)
    assert await store.pending_messages() == messages
    assert await store.pending_messages(limit=2) == messages[:2]


async def test_claims(store: StateStore) -> None:
    [msg] = await queue(store, 1)
    lease = timedelta(seconds=60)

    assert await store.claim_message(msg.id, "a", NOW + lease, NOW)
    assert not await store.claim_message(msg.id, "b", NOW + lease, NOW + MIN / 2)
    assert await store.claim_message(msg.id, "a", NOW + 2 * lease, NOW + MIN / 2)  # own renewal
    # After a's claim lapses, b may take it, and then a is the one kept out.
    later = NOW + 2 * lease
    assert await store.claim_message(msg.id, "b", later + lease, later)
    assert not await store.claim_message(msg.id, "a", later + lease, later + MIN / 2)
    # Claimed messages are still pending (the claim holder may crash), marked as attempted
    # from the first claim on: a send may have reached Slack.
    assert await store.pending_messages() == [replace(msg, attempted_at=NOW)]
    assert not await store.claim_message("no-such-id", "a", NOW + lease, NOW)


async def test_mark_delivered_updates_book_and_leaves_queue(store: StateStore) -> None:
    book = book_pending(NOW, "account/balance", "shop/voice", "other/market")
    [msg, second] = await queue(store, 2, book)
    _, version = await store.load_book()
    assert await store.claim_message(msg.id, "a", NOW + MIN, NOW)

    delivered_at = NOW + 5 * MIN
    await store.mark_delivered(msg.id, delivered_at)

    stored, new_version = await store.load_book()
    assert new_version == version + 1
    assert stored == book.mark_delivered(msg.keys, delivered_at)
    assert not stored.alerts["account/balance"].pending
    assert stored.alerts["account/balance"].announced_at == delivered_at
    assert stored.alerts["other/market"].pending
    assert await store.pending_messages() == [second]
    assert not await store.claim_message(msg.id, "a", NOW + 10 * MIN, NOW + 6 * MIN)

    # Delivering it again, or failing it late, changes nothing.
    await store.mark_delivered(msg.id, delivered_at + MIN)
    await store.record_failure(msg.id, "late", delivered_at + MIN)
    assert await store.load_book() == (stored, new_version)
    assert await store.pending_messages() == [second]


async def test_mark_delivered_with_nothing_pending_keeps_version(store: StateStore) -> None:
    [msg] = await queue(store, 1)
    before = await store.load_book()
    await store.mark_delivered(msg.id, NOW)
    assert await store.load_book() == before
    assert await store.pending_messages() == []


async def test_mark_delivered_racing_a_commit_loses_neither(store: StateStore) -> None:
    book = book_pending(NOW, "account/balance", "shop/voice")
    [msg] = await queue(store, 1, book)
    _, version = await store.load_book()
    next_book = book_pending(NOW + MIN, "account/balance", "shop/voice", "x/voice")
    cycle = CycleCommit([ok("account", NOW + MIN)], next_book)

    committed, _ = await asyncio.gather(
        store.commit_cycle(cycle, version), store.mark_delivered(msg.id, NOW + MIN)
    )

    final, final_version = await store.load_book()
    base = next_book if committed else book
    assert final == base.mark_delivered(msg.keys, NOW + MIN)
    assert final_version == version + (2 if committed else 1)
    assert await store.pending_messages() == []


async def test_record_failure_counts_and_releases(store: StateStore) -> None:
    [msg] = await queue(store, 1)
    assert await store.claim_message(msg.id, "a", NOW + MIN, NOW)

    await store.record_failure(msg.id, "slack 503", NOW)
    assert await store.claim_message(msg.id, "b", NOW + MIN, NOW)  # released at once
    await store.record_failure(msg.id, "rate limited", NOW)

    [pending] = await store.pending_messages()
    assert (pending.attempts, pending.last_error) == (2, "rate limited")
    assert pending.events == msg.events
    await store.record_failure("no-such-id", "x", NOW)  # ignored


async def test_attempted_at_kept_only_when_maybe_sent(store: StateStore) -> None:
    [msg] = await queue(store, 1)
    assert await store.claim_message(msg.id, "a", NOW + MIN, NOW)
    await store.record_failure(msg.id, "connection lost", NOW, maybe_sent=True)
    assert await store.claim_message(msg.id, "b", NOW + 2 * MIN, NOW + MIN)
    [pending] = await store.pending_messages()
    assert pending.attempted_at == NOW  # the first attempt's time, for the look-up window
    await store.record_failure(msg.id, "slack said 500", NOW + MIN)
    [pending] = await store.pending_messages()
    assert pending.attempted_at is None


async def test_destinations_have_their_own_queues(store: StateStore) -> None:
    event = fired("account", B, NOW)
    slack = message(NOW, event)
    chat = replace(message(NOW, event), destination="dingtalk")
    assert await store.commit_cycle(CycleCommit([], AlertBook(), [slack, chat]), 0)
    assert await store.pending_messages() == [slack]
    assert await store.pending_messages(destination="dingtalk") == [chat]
    assert await store.pending_messages(destination="feishu") == []
    await store.mark_delivered(chat.id, NOW)
    assert await store.pending_messages(destination="dingtalk") == []
    assert await store.pending_messages() == [slack]


async def test_incident_operations_and_root_ts(store: StateStore) -> None:
    event = fired("account", B, NOW)
    plan = incidents_step(AlertBook().incidents, [event], NOW, IncidentPolicy(channel="C"), "c1")
    book = replace(book_pending(NOW, "account/balance"), incidents=plan.book)
    [root_op] = plan.ops
    root = OutboxMessage(id=root_op.id, created_at=NOW, events=(), op=root_op)
    assert await store.commit_cycle(CycleCommit([], book, [root]), 0)
    [pending] = await store.pending_messages()
    assert pending == root and pending.kind == "root" and pending.keys == ["account/balance"]
    assert await store.delivered_ts(root.id) is None

    await store.mark_delivered(root.id, NOW + MIN, Receipt(ts="100.000200", root_id=root.id))
    stored, _ = await store.load_book()
    assert stored.incidents.open["account"].root_ts == "100.000200"
    assert not stored.alerts["account/balance"].pending
    assert await store.delivered_ts(root.id) == "100.000200"

    # A later message that had to post a fresh root moves the root's ts for every reader.
    later = OutboxMessage(id=OutboxMessage.new_id(NOW + MIN), created_at=NOW, events=())
    assert await store.commit_cycle(CycleCommit([], stored, [later]), 2)
    await store.mark_delivered(later.id, NOW + 2 * MIN, Receipt("200.000300", root_id=root.id))
    assert await store.delivered_ts(root.id) == "200.000300"
    assert await store.delivered_ts(later.id) == "200.000300"
    stored, _ = await store.load_book()
    assert stored.incidents.open["account"].root_ts == "200.000300"


# lease and meta -----------------------------------------------------------------------------


async def test_lease_acquire_renew_release(store: StateStore) -> None:
    ttl = timedelta(seconds=30)
    assert await store.acquire_lease("a", ttl, NOW)
    assert not await store.acquire_lease("b", ttl, NOW)
    assert await store.acquire_lease("a", ttl, NOW + timedelta(seconds=10))  # renewal
    await store.release_lease("b")  # not b's to release
    assert not await store.acquire_lease("b", ttl, NOW + timedelta(seconds=20))
    await store.release_lease("a")
    assert await store.acquire_lease("b", ttl, NOW + timedelta(seconds=20))
    assert not await store.acquire_lease("a", ttl, NOW + timedelta(seconds=20))


async def test_lease_expires(store: StateStore) -> None:
    # SQLite judges expiry by the `now` passed in; Redis by its own clock (PX),
    # so the second holder keeps asking until the key has expired on the server.
    ttl = timedelta(milliseconds=200)
    assert await store.acquire_lease("a", ttl, NOW)
    assert not await store.acquire_lease("b", timedelta(seconds=30), NOW)
    await wait_for(
        lambda: store.acquire_lease("b", timedelta(seconds=30), NOW + timedelta(seconds=1))
    )
    assert not await store.acquire_lease("a", ttl, NOW + timedelta(seconds=2))


async def test_meta(store: StateStore) -> None:
    await store.set_meta("last_cycle_at", NOW.isoformat())
    await store.set_meta("delivery_problem", "invalid_auth")
    await store.set_meta("last_cycle_at", (NOW + MIN).isoformat())
    assert await store.get_meta("last_cycle_at") == (NOW + MIN).isoformat()
    assert await store.get_meta("delivery_problem") == "invalid_auth"
    assert await store.get_meta("missing") is None


# restart ------------------------------------------------------------------------------------


async def test_a_new_instance_sees_everything(stores: Opener) -> None:
    first: StateStore = await stores()
    book = book_pending(NOW, "account/balance")
    readings = [ok("account", NOW), failed("shop", NOW)]
    msg = message(NOW, fired("account", B, NOW))
    assert await first.commit_cycle(CycleCommit(readings, book, [msg]), 0)
    await first.set_meta("last_cycle_at", NOW.isoformat())
    assert await first.acquire_lease("a", timedelta(minutes=5), NOW)
    assert await first.claim_message(msg.id, "a", NOW + MIN, NOW)
    await first.close()

    second: StateStore = await stores()
    assert await second.load_book() == (book, 1)
    assert await second.latest_readings() == {r.scope: r for r in readings}
    assert await second.history("account", B, NOW) == [(NOW, 900)]
    # Claimed by a process that is gone: the next sender must look before posting again.
    assert await second.pending_messages() == [replace(msg, attempted_at=NOW)]
    assert await second.get_meta("last_cycle_at") == NOW.isoformat()
    assert not await second.acquire_lease("b", timedelta(minutes=5), NOW)
    assert not await second.claim_message(msg.id, "b", NOW + MIN, NOW)


# SQLite only --------------------------------------------------------------------------------


async def test_sqlite_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_version_1_queue_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        for statement in _SCHEMA_V1.split(";"):
            if statement.strip():
                conn.execute(statement)
        msg = message(NOW, fired("account", B, NOW))
        conn.execute(
            "INSERT INTO outbox (id, created_at, events_json, attempts) VALUES (?, ?, ?, 0)",
            (msg.id, NOW.isoformat(), msg.encode().events),
        )
        conn.execute("PRAGMA user_version = 1")
    store = SqliteStore(path)
    await store.open()
    try:
        # A message queued by the previous version is the primary destination's, as before.
        assert await store.pending_messages() == [msg]
    finally:
        await store.close()


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 10**9), st.sampled_from(["shop", "promo"])),
        max_size=40,
    ),
    compact_points=st.integers(1, 12),
    since=st.integers(0, 30),
)
def test_sqlite_history_reads_the_same_whenever_the_journal_is_moved(
    writes: list[tuple[int, int, str]], compact_points: int, since: int
) -> None:
    """New points go to a journal that moves to the history table every `compact_points`;
    a read sees the last value written at each instant either way, even when an instant is
    written again after its first value moved."""

    async def run(path: Path) -> None:
        store = SqliteStore(path, compact_points=compact_points, clock=FakeClock(NOW))
        await store.open()
        model: dict[str, dict[datetime, int]] = {"shop": {}, "promo": {}}
        try:
            for minute, value, scope in writes:
                at = NOW + minute * MIN
                await store.save_readings([ok(scope, at, balance=value)])
                model[scope][at] = value
                with sqlite3.connect(path) as conn:
                    # What every process reads instead of scanning the journal: the points
                    # written to it since it was emptied (a rewritten instant counts twice).
                    (counted,) = conn.execute("SELECT points FROM history_recent_size").fetchone()
                    (held,) = conn.execute("SELECT count(*) FROM history_recent").fetchone()
                    assert held <= counted < compact_points
            for scope, points in model.items():
                expected = sorted((at, v) for at, v in points.items() if at >= NOW + since * MIN)
                assert await store.history(scope, B, NOW + since * MIN) == expected
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run(Path(workdir) / "state.db"))


async def test_sqlite_journal_is_moved_on_open_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, compact_points=10, clock=FakeClock(NOW))
    await store.open()
    for n in range(7):  # 3 points each (balance, voice, industry)
        await store.save_readings([ok("account", NOW + n * MIN, balance=n)])
    with sqlite3.connect(path) as conn:
        # Moved at 12 points (the 4th write); the 5th to 7th wait in the journal.
        assert conn.execute("SELECT count(*) FROM history_recent").fetchone() == (9,)
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (12,)
    await store.close()

    reopened = SqliteStore(path, clock=FakeClock(NOW))
    await reopened.open()
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM history_recent").fetchone() == (0,)
        assert [v for _, v in await reopened.history("account", B, NOW)] == list(range(7))
    finally:
        await reopened.close()


async def test_sqlite_bulk_read_moves_a_large_journal_and_a_single_read_never_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, compact_points=160, clock=FakeClock(NOW))  # bulk reads move > 10
    await store.open()

    def journal() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM history_recent").fetchone()[0])

    try:
        for n in range(4):  # 3 points each
            await store.save_readings([ok("account", NOW + n * MIN, balance=n)])
        assert journal() == 12
        assert [v for _, v in await store.history("account", B, NOW)] == [0, 1, 2, 3]
        assert journal() == 12
        found = await store.histories([("account", B), ("account", V)], NOW)
        assert journal() == 0
        assert [v for _, v in found[("account", B)]] == [0, 1, 2, 3]
        assert [v for _, v in found[("account", V)]] == [700] * 4
    finally:
        await store.close()


async def test_sqlite_version_3_history_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        for script in (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.executemany(
            "INSERT INTO history (scope, type, ts_us, value) VALUES ('shop', 'balance', ?, ?)",
            [(to_us(NOW + n * MIN), 100 - n) for n in range(3)],
        )
        conn.execute("PRAGMA user_version = 3")
    store = SqliteStore(path, clock=FakeClock(NOW))
    await store.open()
    try:
        await store.save_readings([ok("shop", NOW + 3 * MIN, balance=97)])
        assert [v for _, v in await store.history("shop", B, NOW)] == [100, 99, 98, 97]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"schema version 99, newer than this bot"):
        await SqliteStore(path).open()


async def test_sqlite_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await SqliteStore(tmp_path / "missing" / "state.db").open()


async def test_sqlite_locked_beyond_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, busy_timeout=0.1)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await store.set_meta("k", "v")
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.set_meta("k", "v")  # usable again once the lock is gone
    assert await store.get_meta("k") == "v"
    await store.close()


async def test_sqlite_not_open_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await SqliteStore(tmp_path / "state.db").load_book()


_CRASH_WRITER = """
import asyncio, sys, time
from datetime import UTC, datetime
from bot.alerts_types import AlertBook
from bot.store.base import CycleCommit
from bot.store.sqlite import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    await store.open()
    ok = await store.commit_cycle(CycleCommit([], AlertBook()), 0)
    await store.set_meta("written", "yes")
    print("committed" if ok else "refused", flush=True)
    time.sleep(60)  # killed before any orderly close

asyncio.run(main())
"""


def test_sqlite_commit_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CRASH_WRITER), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    async def reopen() -> tuple[int, str | None]:
        store = SqliteStore(path)
        await store.open()
        try:
            return (await store.load_book())[1], await store.get_meta("written")
        finally:
            await store.close()

    assert asyncio.run(reopen()) == (1, "yes")


# Redis only ---------------------------------------------------------------------------------


async def test_redis_down_is_a_store_error_and_the_same_store_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="test")
    await store.open()
    try:
        await store.set_meta("k", "before")
        redis_server.stop()

        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            store.load_book,
            lambda: store.commit_cycle(CycleCommit([], AlertBook()), 0),
            lambda: store.set_meta("k", "v"),
            lambda: store.acquire_lease("a", timedelta(seconds=5), NOW),
            store.pending_messages,
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreError, match="redis"):
                await call()
            assert time.monotonic() - started < 3

        redis_server.start()  # same port, empty data (no persistence in tests)
        await store.ping()
        assert await store.commit_cycle(CycleCommit([ok("account", NOW)], AlertBook()), 0)
        assert await store.load_book() == (AlertBook(), 1)
        assert await store.acquire_lease("a", timedelta(seconds=5), NOW)
    finally:
        await store.close()


async def test_redis_restart_between_calls_is_invisible(
    redis_server: RedisServer, redis_url: str
) -> None:
    # The pool still holds sockets to the old server: the next call must reconnect by itself.
    store = RedisStore(redis_url, prefix="test")
    await store.open()
    try:
        await asyncio.gather(*(store.set_meta(f"k{n}", "v") for n in range(4)))
        redis_server.restart()
        assert await asyncio.gather(*(store.get_meta(f"k{n}") for n in range(4))) == [None] * 4
        assert await store.commit_cycle(CycleCommit([], AlertBook()), 0)
    finally:
        await store.close()


async def test_redis_open_fails_cleanly_and_never_shows_the_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://user:s3cr3t-pw@127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "s3cr3t-pw" not in str(caught.value)
    assert "s3cr3t-pw" not in store.safe_url
    with pytest.raises(StoreError, match="not open"):
        await store.load_book()


async def test_redis_prefixes_are_isolated(redis_url: str) -> None:
    a, b = RedisStore(redis_url, prefix="one"), RedisStore(redis_url, prefix="two")
    await a.open()
    await b.open()
    try:
        assert await a.commit_cycle(CycleCommit([ok("account", NOW)], book_pending(NOW, "x")), 0)
        assert await b.load_book() == (AlertBook(), 0)
        assert await b.latest_readings() == {}
    finally:
        await a.close()
        await b.close()


# factory ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("sqlite:///state.db", SqliteStore, "state.db"),
        ("sqlite:////tmp/state.db", SqliteStore, "/tmp/state.db"),
        ("sqlite:///:memory:", SqliteStore, ":memory:"),
        ("memory://", SqliteStore, ":memory:"),
        ("redis://localhost:6379/0", RedisStore, None),
        ("redis://:pw@localhost:6379/0", RedisStore, None),
        ("rediss://user:pw@cache.example.com:6380/1", RedisStore, None),
    ],
)
def test_make_store(url: str, kind: type, path: str | None) -> None:
    store = make_store(url)
    assert isinstance(store, kind)
    if path is not None:
        assert isinstance(store, SqliteStore)
        assert store.path == path
    if isinstance(store, RedisStore):
        assert "pw" not in store.safe_url.replace("://", "")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://admin:hunter2@db/bot", "unsupported"),
        ("sms-balance-bot.db", "unsupported"),
        ("sqlite:///", "sqlite:///PATH"),
        ("sqlite:////no/such/dir/state.db", "does not exist"),
    ],
)
def test_make_store_rejects(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        make_store(url)
    assert str(caught.value).startswith("STATE_URL")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://user:pw@h/0", "rediss://***@h/0"),
        ("redis://h:6379", "redis://h:6379"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# delivery reports: seen keys (replays), their expiry and bound, per-minute counts ----------

DAY = timedelta(hours=24)


async def test_a_key_is_new_once(store: StateStore) -> None:
    assert await store.record_report("1:aa", NOW + DAY, "shop", "4005", NOW)
    assert not await store.record_report("1:aa", NOW + DAY, "shop", "4005", NOW + MIN)
    assert await store.record_report("2:bb", NOW + DAY, "shop", "4005", NOW + MIN)
    counts = await store.report_counts("shop", NOW - timedelta(hours=1), NOW + MIN)
    assert counts == {"4005": 2}


async def test_counts_per_scope_outcome_and_window(store: StateStore) -> None:
    for i, (scope, outcome, at) in enumerate(
        [
            ("shop", "4001", NOW),
            ("shop", "4001", NOW + 30 * MIN),
            ("shop", "4006", NOW + 59 * MIN),
            ("crm", "4001", NOW),
            ("shop", "4001", NOW - 2 * MIN),  # before the window
        ]
    ):
        assert await store.record_report(f"k{i}", NOW + DAY, scope, outcome, at)
    assert await store.report_counts("shop", NOW, NOW + 59 * MIN) == {"4001": 2, "4006": 1}
    assert await store.report_counts("crm", NOW, NOW + 59 * MIN) == {"4001": 1}
    assert await store.report_counts("nobody", NOW, NOW + 59 * MIN) == {}


async def test_a_key_is_forgotten_after_its_time(store: StateStore) -> None:
    assert await store.record_report("k", NOW + MIN, "shop", "4001", NOW)
    assert not await store.record_report("k", NOW + MIN, "shop", "4001", NOW + MIN / 2)
    assert await store.record_report("k", NOW + 3 * MIN, "shop", "4001", NOW + 2 * MIN)


async def test_unrecord_undoes_key_and_count(store: StateStore) -> None:
    assert await store.record_report("k", NOW + DAY, "shop", "4005", NOW)
    await store.unrecord_report("k", "shop", "4005", NOW)
    assert await store.report_counts("shop", NOW, NOW) == {}
    assert await store.record_report("k", NOW + DAY, "shop", "4005", NOW)
    assert await store.report_counts("shop", NOW, NOW) == {"4005": 1}


async def test_the_seen_set_is_bounded(stores: Opener) -> None:
    store = await stores(max_seen=50)
    for i in range(200):
        assert await store.record_report(f"k{i}", NOW + DAY + i * MIN, "shop", "4001", NOW)
    # The newest keys (latest to expire) are still known; the soonest to expire went first.
    assert not await store.record_report("k199", NOW + DAY, "shop", "4001", NOW)
    assert await store.record_report("k0", NOW + DAY, "shop", "4001", NOW)


async def test_replicas_share_seen_keys_and_counts(stores: Opener) -> None:
    first, second = await stores(), await stores()
    results = await asyncio.gather(
        *[s.record_report("same", NOW + DAY, "shop", "4005", NOW) for s in (first, second) * 5]
    )
    assert sorted(results) == [False] * 9 + [True]
    assert await second.report_counts("shop", NOW, NOW) == {"4005": 1}
