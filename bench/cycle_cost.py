"""What a poll cycle costs as history accumulates, and what forecasting costs per series.

    .venv/bin/python bench/cycle_cost.py [--quick]

1. Growth: N draining apps (200 and 2,000; 4 quota types each) polled at a 0.5-second interval
   (a fake clock, so no real waiting) by `Monitor.cycle` on the SQLite store, the production
   default, from an empty database, with start-up objects frozen as `serve` does
   (`bot.app.tune_gc`). JPush is a stub that answers at once, so only the bot's own work is
   timed. Mean process CPU time per cycle (the store's thread included; other load on the
   machine inflates it less than wall time, shown too). The first WARM_UP cycles ("warm-up")
   are shown apart: a series' state takes them to reach its working shape (16 polls of
   usual rate, then a forecast, a bigger forecasts record to write), whatever the history.
   The rest of the run is cut in quarters: the first ("early"), the third ("middle") and the
   last ("late"). The store's occasional bulk moves of its journal (bot/store/sqlite.py) fall
   inside the quarters like any other cycle; the run's count of them is shown. "bot" is the
   cycle without the store's write (commit). Goal: the whole cycle's late / early <= 1.2
   for both N.
2. Forecast CPU per cycle per 1,000 series, each with a full 2-day history at a 5-minute poll
   (576 readings): before (commit _common.LEGACY: read each series' window from the store and fit
   it) and after (fold the new reading into the running state and read forecast, drop and burn
   from it). Process CPU time, store threads included. Also the one-off cost of rebuilding the
   state of 1,000 series from that history (start-up, lease takeover).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import legacy_forecaster
from pydantic import SecretStr

from bot import forecast as forecasting
from bot.alerts import Policy
from bot.app import tune_gc
from bot.monitor import Monitor
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind, ScopeReading
from bot.store.base import CycleCommit
from bot.store.sqlite import SqliteStore

GOAL_RATIO = 1.2
WARM_UP = 20  # cycles
POLL = timedelta(seconds=0.5)
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DRAIN_PER_SECOND = 2.0
HISTORY_POLLS = 576  # two days at a 5-minute poll
HISTORY_EVERY = timedelta(minutes=5)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class StubJPush:
    """Answers every scope at once: industry drains 2 a second, the other types stay put."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def fetch_all(self, scopes: Sequence[Scope]) -> list[ScopeReading]:
        now = self.clock()
        drained = int((now - T0).total_seconds() * DRAIN_PER_SECOND)
        return [
            ScopeReading(
                scope=scope.name,
                kind=ScopeKind.APP,
                read_at=now,
                balances={
                    QuotaType.BALANCE: 5_000 + i,
                    QuotaType.VOICE: 1_500,
                    QuotaType.INDUSTRY: 10_000_000 - drained,
                    QuotaType.MARKET: 20_000,
                },
            )
            for i, scope in enumerate(scopes)
        ]


def app_scopes(n: int) -> list[Scope]:
    return [
        Scope(name=f"app{i:04d}", kind=ScopeKind.APP, key=f"k{i}", secret=SecretStr(f"s{i}"))
        for i in range(n)
    ]


async def growth(n: int, cycles: int, workdir: Path) -> dict[str, float]:
    clock = FakeClock(T0)
    store = SqliteStore(workdir / f"growth-{n}.db", clock=clock)
    await store.open()
    try:
        client = StubJPush(clock)
        monitor = Monitor(
            app_scopes(n),
            Policy(),
            client,  # type: ignore[arg-type]
            store,
            clock=clock,
            forecast_min_span=forecasting.min_span_for(POLL),
        )
        # The store's write path (SQLite, in its worker thread) timed apart from the rest.
        commit = store.commit_cycle
        writes: list[float] = []

        async def timed_commit(batch: CycleCommit, version: int) -> bool:
            started = time.process_time()
            try:
                return await commit(batch, version)
            finally:
                writes.append(time.process_time() - started)

        store.commit_cycle = timed_commit  # type: ignore[method-assign]
        wall, cpu = [], []
        for _ in range(cycles):
            started, started_cpu = time.perf_counter(), time.process_time()
            await monitor.cycle()
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            clock.now += POLL
    finally:
        await store.close()
    own = [c - w for c, w in zip(cpu, writes, strict=True)]
    # The first cycle rebuilds the (empty) state: the warm-up starts after it.
    quarter = (cycles - WARM_UP) // 4
    windows = {
        "warm": slice(1, WARM_UP),
        "early": slice(WARM_UP, WARM_UP + quarter),
        "middle": slice(cycles - 2 * quarter, cycles - quarter),
        "late": slice(cycles - quarter, None),
    }
    usual_write = statistics.median(writes)
    found = {"moves": float(sum(1 for w in writes if w > 5 * usual_write))}
    for name, window in windows.items():
        found[f"{name}_cpu"] = statistics.fmean(cpu[window])
        found[f"{name}_own"] = statistics.fmean(own[window])
        found[f"{name}_wall"] = statistics.fmean(wall[window])
    return found


def history_readings(scopes: Sequence[Scope], end: datetime) -> list[list[ScopeReading]]:
    polls = []
    for p in range(HISTORY_POLLS):
        at = end - HISTORY_EVERY * (HISTORY_POLLS - p)
        left = 1_000_000 - p * 600
        polls.append(
            [
                ScopeReading(
                    scope=s.name,
                    kind=ScopeKind.APP,
                    read_at=at,
                    balances={t: left - 10 * i for i, t in enumerate(QUOTA_TYPES)},
                )
                for s in scopes
            ]
        )
    return polls


async def forecast_cpu(workdir: Path, rounds: int) -> dict[str, float]:
    """CPU milliseconds per cycle per 1,000 series (250 apps x 4 types)."""
    scopes = app_scopes(250)
    now = T0 + timedelta(days=3)
    store = SqliteStore(workdir / "cpu.db", clock=lambda: now)
    await store.open()
    try:
        for readings in history_readings(scopes, now):
            await store.save_readings(readings)
        legacy = legacy_forecaster()
        fresh = {
            (s.name, t): 1_000_000 - HISTORY_POLLS * 600 - 10 * i
            for s in scopes
            for i, t in enumerate(QUOTA_TYPES)
        }

        async def before() -> None:
            for (scope, quota_type), value in fresh.items():
                points = await store.history(scope, quota_type, now - forecasting.LOOKBACK)
                points.append((now, value))
                legacy.forecast(points, now, min_span=forecasting.MIN_SPAN)

        started = time.process_time()
        since = now - forecasting.LOOKBACK - timedelta(hours=1)
        # As Monitor does after start-up or a takeover: one bulk read, then a fold per series.
        stored = await store.histories(list(fresh), since)
        states = {key: forecasting.rebuild(points) for key, points in stored.items()}
        rebuild_ms = (time.process_time() - started) * 1000

        def after() -> None:
            for key, value in fresh.items():
                state = forecasting.advance(states[key], now, value)
                forecasting.forecast_of(state)
                forecasting.drop_of(state)
                forecasting.burn_of(state)

        before_ms, after_ms = [], []
        for _ in range(rounds):
            started = time.process_time()
            await before()
            before_ms.append((time.process_time() - started) * 1000)
            started = time.process_time()
            after()
            after_ms.append((time.process_time() - started) * 1000)
    finally:
        await store.close()
    return {
        "before": statistics.median(before_ms),
        "after": statistics.median(after_ms),
        "rebuild": rebuild_ms,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer cycles (about a minute)")
    args = parser.parse_args()
    tune_gc()  # as `serve` does before it runs
    plan = [(200, 100 if args.quick else 620), (2_000, 60 if args.quick else 180)]
    good = True
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("1. Cycle CPU time as history accumulates (SQLite, 0.5 s poll, stub JPush), ms")
        print(
            f"{'apps':>5} {'cycles':>6} {'moves':>5} | {'total: warm-up':>14} {'early':>6} "
            f"{'middle':>7} "
            f"{'late':>6} {'late/early':>10} | {'bot: early':>10} {'late':>6} {'late/early':>10} "
            f"| {'wall: early':>11} {'late':>6}"
        )
        for n, cycles in plan:
            f = await growth(n, cycles, workdir)
            total = f["late_cpu"] / f["early_cpu"]
            own = f["late_own"] / f["early_own"]
            passed = total <= GOAL_RATIO
            good &= passed
            print(
                f"{n:>5} {cycles:>6} {f['moves']:>5.0f} | {f['warm_cpu'] * 1e3:>14.1f} "
                f"{f['early_cpu'] * 1e3:>6.1f} {f['middle_cpu'] * 1e3:>7.1f} "
                f"{f['late_cpu'] * 1e3:>6.1f} {total:>10.2f} | "
                f"{f['early_own'] * 1e3:>10.1f} {f['late_own'] * 1e3:>6.1f} {own:>10.2f} | "
                f"{f['early_wall'] * 1e3:>11.1f} {f['late_wall'] * 1e3:>6.1f}"
                f"  {'ok' if passed else 'GROWS'}"
            )
        print("\n2. Forecast CPU per cycle per 1,000 series, 576 readings of history each")
        cpu = await forecast_cpu(workdir, rounds=3 if args.quick else 5)
        print(
            f"before (history read + fit): {cpu['before']:8.1f} ms\n"
            f"after (running state):       {cpu['after']:8.1f} ms"
            f"   ({cpu['before'] / cpu['after']:.0f}x less)\n"
            f"rebuild from history (once): {cpu['rebuild']:8.1f} ms"
        )
    print(
        f"\ngrowth goal (late / early <= {GOAL_RATIO} for every N): {'met' if good else 'MISSED'}"
    )
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
