"""The poll cycle's running forecasting state: O(1) per cycle, and the same as rebuilding it from
the stored history (what a replica taking over the poller lease does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from builders import NOW, FakeClock
from pydantic import SecretStr

from bot.alerts import Policy
from bot.monitor import Monitor
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind, ScopeReading
from bot.store.sqlite import SqliteStore

SCOPES = [
    Scope(name="account", kind=ScopeKind.ACCOUNT, key="k", secret=SecretStr("s")),
    Scope(name="shop", kind=ScopeKind.APP, key="k2", secret=SecretStr("s2")),
]
EVERY = timedelta(minutes=5)


class Drain:
    """JPush as a stub: industry drains 10 a poll, with one step of 50,000 at poll 40."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.polls = 0

    async def fetch_all(self, scopes: Sequence[Scope]) -> list[ScopeReading]:
        self.polls += 1
        industry = 100_000 - 10 * self.polls - (50_000 if self.polls >= 40 else 0)
        return [
            ScopeReading(
                scope=s.name,
                kind=s.kind,
                read_at=self.clock(),
                balances={t: industry if t is QuotaType.INDUSTRY else 5_000 for t in QUOTA_TYPES},
            )
            for s in scopes
        ]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db", clock=lambda: NOW)
    await store.open()
    yield store
    await store.close()


def monitor(store: SqliteStore, client: Drain, clock: FakeClock) -> Monitor:
    return Monitor(SCOPES, Policy(), client, store, clock=clock)  # type: ignore[arg-type]


async def polled(store: SqliteStore, cycles: int) -> tuple[Monitor, Drain, FakeClock]:
    """A poller after `cycles` polls, 5 minutes apart."""
    clock = FakeClock(NOW)
    client = Drain(clock)
    poller = monitor(store, client, clock)
    for _ in range(cycles):
        await poller.cycle()
        clock.advance(EVERY)
    return poller, client, clock


async def test_a_replica_taking_over_rebuilds_the_state_the_poller_had(store: SqliteStore) -> None:
    poller, client, clock = await polled(store, 60)
    readings = await client.fetch_all(SCOPES)
    ours = await poller.outlook(readings, clock())
    taking_over = await monitor(store, client, clock).outlook(readings, clock())
    assert taking_over.states == ours.states
    assert taking_over.forecasts == ours.forecasts
    # ... and the step at poll 40 did not become burn: 10 every 5 minutes.
    forecast = ours.forecasts["account"][QuotaType.INDUSTRY]
    assert forecast.per_hour == pytest.approx(120, rel=0.01)
    # The poller itself, told to forget (it lost and took back the lease), agrees too.
    poller.forget()
    assert (await poller.outlook(readings, clock())).states == ours.states


async def test_a_cycle_reads_history_only_for_series_it_has_not_seen(store: SqliteStore) -> None:
    clock = FakeClock(NOW)
    client = Drain(clock)
    reads: list[tuple[str, QuotaType]] = []
    histories = store.histories

    async def counting(series: list[tuple[str, QuotaType]], since: object) -> object:
        reads.extend(series)
        return await histories(series, since)  # type: ignore[arg-type]

    store.histories = counting  # type: ignore[method-assign]
    poller = monitor(store, client, clock)
    for _ in range(5):
        await poller.cycle()
        clock.advance(EVERY)
    assert len(reads) == len(SCOPES) * len(QUOTA_TYPES)  # the first cycle only
    poller.forget()
    await poller.cycle()
    assert len(reads) == 2 * len(SCOPES) * len(QUOTA_TYPES)


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(30, id="read-after-the-poll"),
        # Older than the poll's reading: once the poll is in, it is neither evaluated nor
        # stored (a replica's rebuild would otherwise hold a reading the poller skipped).
        pytest.param(-30, id="read-before-the-poll"),
    ],
)
async def test_a_report_read_during_a_cycle_stays_in_the_running_state(
    store: SqliteStore, offset: int
) -> None:
    """A delivery report's fresh read, committed while a poll cycle is between its forecast
    and its commit, must not be dropped from the running state by that cycle: the poller
    then still agrees with a replica rebuilding from the store."""
    poller, client, clock = await polled(store, 10)
    shop = next(s for s in SCOPES if s.name == "shop")
    fresh = ScopeReading(
        scope="shop",
        kind=shop.kind,
        read_at=clock() + timedelta(seconds=offset),
        balances={t: 99_800 if t is QuotaType.INDUSTRY else 5_000 for t in QUOTA_TYPES},
    )
    await asyncio.gather(poller.cycle(), poller.commit_reports([], [fresh]))
    clock.advance(EVERY)
    readings = await client.fetch_all(SCOPES)
    ours = await poller.outlook(readings, clock())
    taking_over = await monitor(store, client, clock).outlook(readings, clock())
    assert ours.states == taking_over.states
