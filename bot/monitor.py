"""The poll cycle: fetch -> forecast -> evaluate -> commit (state + outbox) -> deliver.

The decisions are made by the pure `alerts.step` and `forecast`; this module only moves values
between JPush, the state store and the deliverer, and keeps time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot import forecast as forecasting
from bot.alerts import step
from bot.alerts_types import Event, Forecast, Policy
from bot.delivery import Deliverer
from bot.errors import StoreError
from bot.jpush import JPushClient
from bot.metrics import Metrics
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeReading, Thresholds
from bot.snapshot import ScopeView
from bot.store.base import CycleCommit, OutboxMessage, StateStore, history_points

log = logging.getLogger(__name__)

# How much history a forecast reads (the forecaster's own look-back) and a sparkline shows.
FORECAST_WINDOW = forecasting.LOOKBACK
TREND_WINDOW = timedelta(hours=24)
LAST_CYCLE_META = "last_cycle_at"
FORECASTS_META = "forecasts"
COMMIT_ATTEMPTS = 5
OPEN_RETRY_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class CycleResult:
    readings: list[ScopeReading]
    events: list[Event]
    forecasts: dict[str, dict[QuotaType, Forecast]]
    at: datetime


class Monitor:
    def __init__(
        self,
        scopes: Sequence[Scope],
        policy: Policy,
        client: JPushClient,
        store: StateStore,
        *,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
        forecast_min_span: timedelta = forecasting.MIN_SPAN,
    ) -> None:
        self.scopes = list(scopes)
        self._min_span = forecast_min_span
        self.policy = policy
        self._client = client
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._thresholds: dict[str, Thresholds] = {s.name: s.thresholds for s in self.scopes}
        # True while waiting on JPush: nothing is written yet, so shutdown may cancel at once.
        self.fetching = False

    async def cycle(self) -> CycleResult:
        """One poll of every scope, evaluated and committed atomically with its message."""
        started = time.monotonic()
        self.fetching = True
        try:
            readings = await self._client.fetch_all(self.scopes)
        finally:
            self.fetching = False
        now = self._clock()
        forecasts = await self.forecasts_for(readings, now)
        events: list[Event] = []
        for _ in range(COMMIT_ATTEMPTS):
            book, version = await self._store.load_book()
            new_book, events = step(book, readings, self._thresholds, forecasts, now, self.policy)
            message = (
                OutboxMessage(id=OutboxMessage.new_id(now), created_at=now, events=tuple(events))
                if events
                else None
            )
            if await self._store.commit_cycle(CycleCommit(readings, new_book, message), version):
                break
            # Another process committed in between (a replica, or `check --notify` from cron):
            # evaluate again against what it wrote, so no transition is recorded twice.
            log.info("alert state changed underneath this cycle; evaluating again")
        else:
            raise StoreError("could not commit the poll cycle: the alert state kept changing")
        await self._store.set_meta(LAST_CYCLE_META, now.isoformat())
        await self._store.set_meta(FORECASTS_META, encode_forecasts(forecasts))
        self._observe(readings, events, forecasts, now, time.monotonic() - started)
        return CycleResult(readings=readings, events=events, forecasts=forecasts, at=now)

    async def forecasts_for(
        self, readings: Sequence[ScopeReading], now: datetime
    ) -> dict[str, dict[QuotaType, Forecast]]:
        result: dict[str, dict[QuotaType, Forecast]] = {}
        since = now - FORECAST_WINDOW
        for reading in readings:
            fresh = dict(history_points(reading))
            if not fresh:
                continue
            series: dict[QuotaType, list[tuple[datetime, int]]] = {}
            for quota_type, value in fresh.items():
                points = await self._store.history(reading.scope, quota_type, since)
                points.append((reading.read_at, value))
                series[quota_type] = points
            found = forecasting.forecast_all(series, now, min_span=self._min_span)
            if found:
                result[reading.scope] = found
        return result

    def _observe(
        self,
        readings: Sequence[ScopeReading],
        events: Sequence[Event],
        forecasts: Mapping[str, Mapping[QuotaType, Forecast]],
        now: datetime,
        duration: float,
    ) -> None:
        failed = [r.scope for r in readings if r.error]
        log.info(
            "poll cycle done",
            extra={
                "scopes": len(readings),
                "failed": len(failed),
                "events": len(events),
                "duration_s": round(duration, 3),
            },
        )
        if self._metrics is None:
            return
        m = self._metrics
        m.polls.inc()
        m.poll_duration.observe(duration)
        for scope in failed:
            m.fetch_errors.labels(scope).inc()
        if events:
            m.alerts_queued.inc()


def encode_forecasts(forecasts: Mapping[str, Mapping[QuotaType, Forecast]]) -> str:
    return json.dumps(
        {s: {t.value: f.to_json() for t, f in fs.items()} for s, fs in forecasts.items()},
        separators=(",", ":"),
    )


def decode_forecasts(raw: str | None) -> dict[str, dict[QuotaType, Forecast]]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {
            s: {QuotaType(t): Forecast.from_json(f) for t, f in fs.items()}
            for s, fs in data.items()
        }
    except (ValueError, KeyError, TypeError):
        return {}


async def load_views(
    store: StateStore,
    scopes: Sequence[Scope],
    now: datetime,
    *,
    trend_for: str | None = None,
    readings: Mapping[str, ScopeReading] | None = None,
) -> list[ScopeView]:
    """Snapshot of every configured scope from the shared state (no JPush call)."""
    latest = dict(await store.latest_readings())
    if readings:
        latest.update(readings)
    forecasts = decode_forecasts(await store.get_meta(FORECASTS_META))
    views = []
    for scope in scopes:
        trend: dict[QuotaType, list[int]] = {}
        if scope.name == trend_for:
            since = now - TREND_WINDOW
            for quota_type in QUOTA_TYPES:
                points = await store.history(scope.name, quota_type, since)
                if points:
                    trend[quota_type] = [v for _, v in points]
        views.append(
            ScopeView(
                scope=scope.name,
                kind=scope.kind,
                reading=latest.get(scope.name),
                thresholds=scope.thresholds,
                forecasts=forecasts.get(scope.name, {}),
                trend=trend,
            )
        )
    return views


class Runner:
    """Runs the poll loop and the delivery loop until told to stop.

    Among replicas sharing a store, only the holder of the poller lease polls; every replica
    delivers (messages are claimed one at a time, so none is posted twice).
    """

    def __init__(
        self,
        monitor: Monitor,
        deliverer: Deliverer,
        store: StateStore,
        *,
        poll_interval: timedelta,
        holder: str,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
    ) -> None:
        self.monitor = monitor
        self.deliverer = deliverer
        self.store = store
        self.poll_interval = poll_interval
        self.holder = holder
        self._clock = clock
        self._metrics = metrics
        self.started_at = clock()
        self.last_cycle_at: datetime | None = None
        self.is_poller = False
        self.store_problem: str | None = None
        self.store_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._wake_delivery = asyncio.Event()
        self._cycle_lock = asyncio.Lock()

    @property
    def lease_ttl(self) -> timedelta:
        return self.poll_interval * 3

    def stop(self) -> None:
        self._stop.set()
        self._wake_delivery.set()

    async def open_store(self) -> None:
        """Open the store, retrying until it answers: the web server must not wait for it."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self.store.open()
            except StoreError as exc:
                self.store_problem = str(exc)
                log.warning("state store unavailable, retrying in %.0f s: %s", delay, exc)
                await self._sleep(delay)
                # Capped low: until it opens, /healthz and every slash command say the store
                # is down, so a Redis that is back must be noticed within seconds.
                delay = min(delay * 2, OPEN_RETRY_CAP_S)
                continue
            self.store_problem = None
            self.store_ready.set()
            return

    async def poll_forever(self) -> None:
        try:
            await self._poll_until_stopped()
        finally:
            # Released on SIGTERM (and on cancellation) so a replica takes over at once.
            await self._release_lease()

    async def _poll_until_stopped(self) -> None:
        await self.open_store()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if await self._hold_lease():
                    async with self._cycle_lock:
                        await self.monitor.cycle()
                    self.last_cycle_at = self._clock()
                    self._wake_delivery.set()
                self.store_problem = None
            except StoreError as exc:
                self.store_problem = str(exc)
                log.error("poll cycle failed: state store unavailable: %s", exc)
            except Exception:
                log.exception("poll cycle failed")
            elapsed = time.monotonic() - started
            await self._sleep(max(0.0, self.poll_interval.total_seconds() - elapsed))

    async def deliver_forever(self) -> None:
        await self.store_ready.wait()
        idle = min(5.0, self.poll_interval.total_seconds())
        while not self._stop.is_set():
            # Cleared before the work, not after: a wake-up (stop, or a cycle that queued a
            # message) that arrives while delivering must not be lost for `idle` seconds.
            self._wake_delivery.clear()
            try:
                await self.deliverer.deliver_pending()
            except StoreError as exc:
                log.warning("delivery paused: state store unavailable: %s", exc)
            except Exception:
                log.exception("delivery loop error")
            if self._metrics:
                self._metrics.outbox_size.set(self.deliverer.status.queued)
            wait = self.deliverer.seconds_until_ready() or idle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_delivery.wait(), timeout=max(0.05, wait))

    async def last_completed_cycle(self) -> datetime | None:
        """This replica's last cycle, or the shared one when another replica polls."""
        if self.is_poller or self.store_problem:
            return self.last_cycle_at
        try:
            raw = await asyncio.wait_for(self.store.get_meta(LAST_CYCLE_META), timeout=2)
        except (StoreError, TimeoutError):
            return self.last_cycle_at
        if not raw:
            return self.last_cycle_at
        shared = datetime.fromisoformat(raw)
        if self.last_cycle_at and self.last_cycle_at > shared:
            return self.last_cycle_at
        return shared

    async def _hold_lease(self) -> bool:
        held = await self.store.acquire_lease(self.holder, self.lease_ttl, self._clock())
        if held != self.is_poller:
            log.info("poller lease %s", "acquired" if held else "held by another replica")
        self.is_poller = held
        return held

    async def _release_lease(self) -> None:
        if not self.is_poller:
            return
        with contextlib.suppress(StoreError):
            await self.store.release_lease(self.holder)
        self.is_poller = False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
