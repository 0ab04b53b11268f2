"""ReportIntake against a real Monitor, a SqliteStore and the simulator: replays, concurrent
reports, the fresh read behind a 4005, rate limiting expiring on a timer, failures undone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from builders import NOW, FakeClock
from pydantic import SecretStr

from bot.alerts import Policy
from bot.alerts_types import AlertKind, EventKind
from bot.delivery_reports import DeliveryReport
from bot.errors import StoreError
from bot.jpush import JPushClient
from bot.log_hygiene import LogThrottle
from bot.monitor import Monitor
from bot.quota import QUOTA_TYPES, Scope, ScopeKind, Threshold
from bot.report_intake import ReportIntake
from bot.simulator import JPushSimulator, SimScope
from bot.store.base import CycleCommit
from bot.store.sqlite import SqliteStore

THRESHOLDS = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
SHOP = Scope("shop", ScopeKind.APP, "shop-key", SecretStr("shop-secret"), THRESHOLDS)
StartSim = Callable[[JPushSimulator], Awaitable[JPushSimulator]]


class Harness:
    def __init__(
        self,
        sim: JPushSimulator,
        store: SqliteStore,
        *,
        expiry_delay: float,
        failure_log: LogThrottle | None = None,
    ) -> None:
        assert sim.base_url is not None
        self.sim = sim
        self.store = store
        self.clock = FakeClock(NOW)
        self.client = JPushClient(sim.base_url, clock=self.clock)
        self.woken = 0
        monitor = Monitor([SHOP], Policy(), self.client, store, clock=self.clock)
        self.intake = ReportIntake(
            [SHOP],
            store,
            monitor,
            self.client,
            clock=self.clock,
            wake_delivery=self.wake,
            expiry_delay=expiry_delay,
            failure_log=failure_log,
        )
        self.nonce = 0

    def wake(self) -> None:
        self.woken += 1

    def report(self, status: int) -> DeliveryReport:
        self.nonce += 1
        return DeliveryReport(
            scope="shop",
            nonce=str(self.nonce),
            signature="ab" * 20,
            sent_at=self.clock(),
            type="SMS_REPORT",
            status=status,
            msg_id="m",
        )

    async def events(self) -> list[tuple[EventKind, AlertKind | None]]:
        return [
            (event.kind, event.alert)
            for message in await self.store.pending_messages()
            for event in message.events
        ]

    async def close(self) -> None:
        await self.intake.close()
        await self.client.close()


async def opened(store: SqliteStore) -> SqliteStore:
    await store.open()
    return store


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = JPushSimulator()
    simulator.add_scope(
        SimScope(
            key="shop-key",
            secret="shop-secret",
            kind="app",
            balances={"balance": 5000, "voice": 5000, "industry": 0, "market": 5000},
        )
    )
    return await start_sim(simulator)


async def test_concurrent_4005s_open_one_alert_with_one_fresh_read(sim: JPushSimulator) -> None:
    h = Harness(sim, await opened(SqliteStore(":memory:")), expiry_delay=60)
    try:
        results = await asyncio.gather(*[h.intake.accept(h.report(4005)) for _ in range(50)])
        assert results == [True] * 50
        assert sim.stats.requests_by_key == {"shop-key": 1}
        # One sends-failing alert, and the fresh read's industry 0 in the same message.
        assert await h.events() == [
            (EventKind.FIRED, AlertKind.SENDS_FAILING),
            (EventKind.FIRED, AlertKind.THRESHOLD),
        ]
        assert len(await h.store.pending_messages()) == 1
        assert h.woken == 1
        assert await h.store.report_counts("shop", NOW, NOW) == {"4005": 50}
    finally:
        await h.close()


async def test_failed_sends_log_their_first_batch_then_a_total_a_minute(
    sim: JPushSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    monotonic = [0.0]
    throttle = LogThrottle(every=60.0, monotonic=lambda: monotonic[0])
    h = Harness(sim, await opened(SqliteStore(":memory:")), expiry_delay=60, failure_log=throttle)
    caplog.set_level("WARNING", logger="bot.report_intake")
    try:
        for second in range(0, 130, 2):  # a failing send every 2 s for 130 s
            monotonic[0] = float(second)
            await h.intake.accept(h.report(4005))
        lines = [r.getMessage() for r in caplog.records if "delivery reports" in r.getMessage()]
        assert lines == [
            "delivery reports from shop: 1 x quota exhausted",
            "delivery reports from shop: 30 x quota exhausted since the last such line",
            "delivery reports from shop: 30 x quota exhausted since the last such line",
        ]
    finally:
        await h.close()


async def test_a_replay_is_answered_but_not_handled_again(sim: JPushSimulator) -> None:
    h = Harness(sim, await opened(SqliteStore(":memory:")), expiry_delay=60)
    try:
        report = h.report(4006)
        assert await h.intake.accept(report)
        assert not await h.intake.accept(report)
        assert await h.store.report_counts("shop", NOW, NOW) == {"4006": 1}
        assert await h.events() == [(EventKind.FIRED, AlertKind.RATE_LIMITED)]
    finally:
        await h.close()


async def test_rate_limiting_resolves_on_a_timer_without_a_poll(sim: JPushSimulator) -> None:
    h = Harness(sim, await opened(SqliteStore(":memory:")), expiry_delay=0.05)
    try:
        assert await h.intake.accept(h.report(4006))
        h.clock.advance(timedelta(minutes=15, seconds=1))
        deadline = asyncio.get_running_loop().time() + 5
        while len(await h.events()) < 2:
            assert asyncio.get_running_loop().time() < deadline, await h.events()
            await asyncio.sleep(0.01)
        assert await h.events() == [
            (EventKind.FIRED, AlertKind.RATE_LIMITED),
            (EventKind.RESOLVED, AlertKind.RATE_LIMITED),
        ]
        assert h.woken == 2
    finally:
        await h.close()


class FailingCommits(SqliteStore):
    """A store whose commits fail while `broken` is set."""

    broken = True

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        if self.broken:
            raise StoreError("disk full")
        return await super().commit_cycle(commit, expected_version)


async def test_a_report_that_cannot_be_committed_is_forgotten(sim: JPushSimulator) -> None:
    store = await opened(FailingCommits(":memory:"))
    h = Harness(sim, store, expiry_delay=60)
    try:
        report = h.report(4006)
        with pytest.raises(StoreError):
            await h.intake.accept(report)
        assert await store.report_counts("shop", NOW, NOW) == {}
        store.broken = False
        # JPush's retry of the same report is handled as new.
        assert await h.intake.accept(replace(report))
        assert await h.events() == [(EventKind.FIRED, AlertKind.RATE_LIMITED)]
    finally:
        await h.close()


async def test_counted_only_statuses_write_no_alert_state(sim: JPushSimulator) -> None:
    h = Harness(sim, await opened(SqliteStore(":memory:")), expiry_delay=60)
    try:
        for status in (4001, 4002, 4100):
            assert await h.intake.accept(h.report(status))
        _, version = await h.store.load_book()
        assert version == 0  # a 4001 with nothing open changes nothing
        assert await h.events() == []
        counts = await h.store.report_counts("shop", NOW, NOW)
        assert counts == {"4001": 1, "4002": 1, "4100": 1}
    finally:
        await h.close()
