"""The poll cycle: fetch -> forecast -> evaluate -> commit (state + outbox) -> deliver.

The decisions are made by the pure `alerts.step` and `forecast`; this module only moves values
between JPush, the state store and the deliverer, and keeps time.

Each series' forecasting state is kept between cycles, so a cycle costs the same however much
history is stored: the history is read only to rebuild a series' state the first time this
process sees it (start-up, a new scope, taking over the poller lease).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bot import forecast as forecasting
from bot.alerts import Policy, step
from bot.alerts_types import AlertBook, Event
from bot.anomalies import Signals
from bot.clock import Clock, Monotonic
from bot.delivery_reports import DeliveryReport
from bot.digest import DigestPolicy, chat_digest_op, digest_due, digest_op
from bot.errors import StoreError
from bot.forecast import Burns, Forecast, Forecasts, SeriesState, encode_burns, encode_forecasts
from bot.jpush import JPushClient
from bot.metrics import Metrics
from bot.outbox import Routing, plan_messages
from bot.quota import QuotaType, Scope, ScopeKind, ScopeReading, Thresholds
from bot.render.format import DEFAULT, Locale
from bot.report_alerts import step_reports
from bot.store.base import (
    META_BURNS,
    META_FORECASTS,
    META_LAST_CYCLE,
    PRIMARY,
    CycleCommit,
    OutboxMessage,
    StateStore,
    history_points,
)
from bot.views import unread_views

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
# What a caller adds to a commit once its events are planned (the daily summary).
Finish = Callable[
    [AlertBook, list[OutboxMessage], Sequence[ScopeReading]],
    tuple[AlertBook, list[OutboxMessage]],
]
SeriesKey = tuple[str, QuotaType]


@dataclass(frozen=True, slots=True)
class Outlook:
    """What every series' running state says after one poll's readings."""

    forecasts: Forecasts
    burns: Burns
    signals: dict[str, dict[QuotaType, Signals]]
    # The states after these readings: kept once the readings are committed, not before, so
    # the running state never holds a reading the store does not.
    states: dict[SeriesKey, SeriesState]


@dataclass(frozen=True, slots=True)
class CycleResult:
    readings: list[ScopeReading]
    events: list[Event]
    forecasts: Forecasts
    at: datetime
    burns: Burns = field(default_factory=dict)


class Monitor:
    def __init__(
        self,
        scopes: Sequence[Scope],
        policy: Policy,
        client: JPushClient,
        store: StateStore,
        *,
        clock: Clock,
        monotonic: Monotonic = time.monotonic,
        metrics: Metrics | None = None,
        forecast_min_span: timedelta = forecasting.MIN_SPAN,
        routing: Routing | None = None,
        digest: DigestPolicy | None = None,
        locale: Locale = DEFAULT,
    ) -> None:
        self._digest = digest
        self._loc = locale
        self.scopes = list(scopes)
        self.routing = routing or Routing()
        self._min_span = forecast_min_span
        self.policy = policy
        self._client = client
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._metrics = metrics
        self._thresholds: dict[str, Thresholds] = {s.name: s.thresholds for s in self.scopes}
        self._apps = [s.name for s in self.scopes if s.kind is ScopeKind.APP]
        # True while waiting on JPush: nothing is written yet, so shutdown may cancel at once.
        self.fetching = False
        self._series: dict[SeriesKey, SeriesState] = {}
        # A cycle and a delivery report's commit each advance the running state from what it
        # was and then replace it: one at a time, or one of them drops the other's reading
        # (and this process no longer agrees with a replica rebuilding from the store).
        self._evaluating = asyncio.Lock()
        # Reads still running past a cycle's deadline, by scope: each lands in a later cycle.
        self._inflight: dict[str, asyncio.Task[ScopeReading]] = {}
        # What this monitor committed last, per scope (kept in memory for /metrics, /healthz).
        self._latest: dict[str, ScopeReading] = {}
        self._forecasts: Forecasts = {}
        self._burns: Burns = {}
        self._rebuild_from = forecasting.history_needed(burn=bool(policy.burn_factor))

    def forget(self) -> None:
        """Drop the running state; the next cycle rebuilds it from the stored history.

        For a replica taking over the poller lease: the readings the previous poller stored
        are not in what this one built before, and rebuilding gives it the very state the
        previous poller had (the state is a function of the stored history alone).
        """
        self._series = {}

    async def cycle(self, deadline: float | None = None) -> CycleResult:
        """One poll of every scope, evaluated and committed atomically with its message.

        With a `deadline` (seconds), the readings in by then are committed at once; a scope
        still being read (a slow or retrying JPush answer) is not read again meanwhile, and
        its reading is committed by the first cycle after it lands. Without one, every scope
        is waited for (`check`).
        """
        started = self._monotonic()
        self.fetching = True
        try:
            readings, slow = await self._fetch(deadline)
        finally:
            self.fetching = False
        async with self._evaluating:
            now = self._clock()
            outlook = await self.outlook(readings, now)
            forecasts = outlook.forecasts

            def with_digest(
                book: AlertBook, messages: list[OutboxMessage], fresh: Sequence[ScopeReading]
            ) -> tuple[AlertBook, list[OutboxMessage]]:
                return self._with_digest(book, messages, fresh, forecasts, now)

            events, taken = await evaluate_and_commit(
                self._store,
                readings,
                self._thresholds,
                forecasts,
                now,
                self.policy,
                self.routing,
                signals=outlook.signals,
                finish=with_digest,
            )
            await self._store.set_meta(META_LAST_CYCLE, now.isoformat())
            # Only what was committed joins the running state (an older reading was not stored).
            taken_scopes = {r.scope for r in taken}
            self._series.update({k: v for k, v in outlook.states.items() if k[0] in taken_scopes})
            for reading in taken:
                self._latest[reading.scope] = reading
                scope = reading.scope
                if scope in forecasts:
                    self._forecasts[scope] = forecasts[scope]
                elif reading.error is None:
                    self._forecasts.pop(scope, None)
                if scope in outlook.burns:
                    self._burns[scope] = outlook.burns[scope]
                elif reading.error is None:
                    self._burns.pop(scope, None)
            await self._store.set_meta(META_FORECASTS, encode_forecasts(self._forecasts))
            await self._store.set_meta(META_BURNS, encode_burns(self._burns))
        if slow:
            log.info(
                "committed %d scope(s); still reading %s", len(readings), ", ".join(sorted(slow))
            )
        self._observe(readings, events, forecasts, now, self._monotonic() - started)
        return CycleResult(
            readings=readings, events=events, forecasts=forecasts, at=now, burns=outlook.burns
        )

    @property
    def latest(self) -> Mapping[str, ScopeReading]:
        """The newest reading of each scope this monitor committed (kept in memory)."""
        return self._latest

    @property
    def forecasts(self) -> Forecasts:
        return self._forecasts

    @property
    def burns(self) -> Burns:
        return self._burns

    def cancel_fetches(self) -> None:
        """Shutdown: drop reads still in flight (nothing of theirs is written yet)."""
        for task in self._inflight.values():
            task.cancel()

    async def _fetch(
        self, deadline: float | None
    ) -> tuple[list[ScopeReading], dict[str, asyncio.Task[ScopeReading]]]:
        """This cycle's readings: every scope read now, within `deadline`, plus any slow read
        from an earlier cycle that has landed since. A scope still being read is not read
        again; its reading joins a later cycle's commit."""
        if deadline is None and not self._inflight:
            # Every scope is waited for anyway (`check`): one read of all of them.
            return list(await self._client.fetch_all(self.scopes)), {}
        readings: list[ScopeReading] = []
        for name, task in list(self._inflight.items()):
            if task.done():
                del self._inflight[name]
                if not task.cancelled():
                    readings.append(task.result())
        landed = {r.scope for r in readings}
        tasks = {
            scope.name: asyncio.ensure_future(self._client.fetch(scope))
            for scope in self.scopes
            if scope.name not in self._inflight and scope.name not in landed
        }
        if tasks:
            await asyncio.wait(tasks.values(), timeout=deadline)
        slow: dict[str, asyncio.Task[ScopeReading]] = {}
        for name, task in tasks.items():
            if not task.done():
                slow[name] = task
            elif not task.cancelled():
                readings.append(task.result())
        self._inflight.update(slow)
        return readings, slow

    def _with_digest(
        self,
        book: AlertBook,
        messages: list[OutboxMessage],
        readings: Sequence[ScopeReading],
        forecasts: Forecasts,
        now: datetime,
    ) -> tuple[AlertBook, list[OutboxMessage]]:
        """The daily summary joins the cycle's commit when it is due (once per local day)."""
        if self._digest is None:
            return book, messages
        day = digest_due(now, self._digest, book.digest_day)
        if day is None:
            return book, messages
        views = unread_views(
            self.scopes, readings={r.scope: r for r in readings}, forecasts=forecasts
        )
        op = digest_op(
            OutboxMessage.new_id(now),
            day,
            self._digest,
            views,
            book.incidents.open,
            now,
            self._loc,
        )
        digest = OutboxMessage(id=op.id, created_at=now, events=(), op=op)
        # Every other destination (team chats) gets its own copy in its own queue, committed
        # with the day it marks: once per day there too, across restarts and replicas.
        chat_op = chat_digest_op(op.id, day, views, book.incidents.open, now, self._loc)
        chats = [
            OutboxMessage(
                id=f"{op.id}-{name}",
                created_at=now,
                events=(),
                destination=name,
                op=replace(chat_op, id=f"{op.id}-{name}", root_id=f"{op.id}-{name}"),
            )
            for name in self.routing.destinations
            if name != PRIMARY
        ]
        log.info("daily summary queued", extra={"day": day})
        return replace(book, digest_day=day), [*messages, digest, *chats]

    async def commit_reports(
        self, reports: Sequence[DeliveryReport], readings: Sequence[ScopeReading] = ()
    ) -> list[Event]:
        """Delivery reports, and the readings they made us take, evaluated and committed
        atomically with their message, exactly as a poll cycle is."""
        async with self._evaluating:
            return await self._commit_reports(reports, readings)

    async def _commit_reports(
        self, reports: Sequence[DeliveryReport], readings: Sequence[ScopeReading]
    ) -> list[Event]:
        now = self._clock()
        # The fresh readings advance the forecasts like a poll's, so running-out alerts stay
        # as they are rather than closing for want of a forecast.
        outlook = await self.outlook(readings, now) if readings else None
        forecasts = outlook.forecasts if outlook is not None else {}
        signals = outlook.signals if outlook is not None else {}
        events: list[Event] = []
        fresh: list[ScopeReading] = []
        for _ in range(COMMIT_ATTEMPTS):
            book, version = await self._store.load_book()
            alerts, events = step_reports(
                book.alerts, reports, self._apps, now, self.policy.repeat_interval
            )
            new_book = replace(book, alerts=alerts)
            # As in a cycle: a reading older than one already taken in (a poll that read
            # later but committed first) is neither evaluated nor stored.
            fresh = [r for r in readings if book.is_newer(r)]
            if fresh:
                new_book, polled = step(
                    new_book,
                    fresh,
                    self._thresholds,
                    forecasts,
                    now,
                    self.policy,
                    signals=signals,
                )
                events.extend(polled)
            elif new_book == book:
                return []  # nothing changed (a 4001 with no alert open): nothing to write
            new_book, messages = plan_messages(
                new_book, events, now, self.routing, OutboxMessage.new_id(now)
            )
            if await self._store.commit_cycle(CycleCommit(fresh, new_book, messages), version):
                break
            log.info("alert state changed underneath these reports; evaluating again")
        else:
            raise StoreError("could not commit delivery reports: the alert state kept changing")
        if outlook is not None:
            taken = {r.scope for r in fresh}
            self._series.update({k: v for k, v in outlook.states.items() if k[0] in taken})
        if events and self._metrics is not None:
            self._metrics.alerts_queued.inc()
        return events

    async def outlook(self, readings: Sequence[ScopeReading], now: datetime) -> Outlook:
        """Each series' state advanced by its new reading, and what the states say.

        O(1) per series, except the first time a series is seen: its state is rebuilt from the
        stored history then.
        """
        forecasts: Forecasts = {}
        burns: Burns = {}
        signals: dict[str, dict[QuotaType, Signals]] = {}
        states: dict[SeriesKey, SeriesState] = {}
        unseen = [
            (reading.scope, quota_type)
            for reading in readings
            for quota_type, _ in history_points(reading)
            if (reading.scope, quota_type) not in self._series
        ]
        stored = await self._store.histories(unseen, now - self._rebuild_from) if unseen else {}
        for reading in readings:
            scope = reading.scope
            for quota_type, value in history_points(reading):
                key = (scope, quota_type)
                state = self._series.get(key)
                if state is None:
                    state = forecasting.rebuild(stored[key])
                state = forecasting.advance(state, reading.read_at, value)
                states[key] = state
                found = forecasting.forecast_of(state, min_span=self._min_span)
                if found is not None:
                    forecasts.setdefault(scope, {})[quota_type] = found
                burn = forecasting.burn_of(state)
                if burn is not None:
                    burns.setdefault(scope, {})[quota_type] = burn
                signals.setdefault(scope, {})[quota_type] = Signals(
                    drop=forecasting.drop_of(state), burn=burn
                )
        return Outlook(forecasts=forecasts, burns=burns, signals=signals, states=states)

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


async def evaluate_and_commit(
    store: StateStore,
    readings: Sequence[ScopeReading],
    thresholds: Mapping[str, Thresholds],
    forecasts: Forecasts,
    now: datetime,
    policy: Policy,
    routing: Routing | None = None,
    *,
    signals: Mapping[str, Mapping[QuotaType, Signals]] | None = None,
    finish: Finish | None = None,
) -> tuple[list[Event], list[ScopeReading]]:
    """Evaluate `readings` against the stored alert state and commit the result atomically.

    Only readings newer than the ones the state has already taken in are evaluated and
    stored: a late cycle (another poller's, or one that outlived its lease) changes nothing.
    Returns the events queued and the readings taken.
    """
    for _ in range(COMMIT_ATTEMPTS):
        book, version = await store.load_book()
        fresh = [r for r in readings if book.is_newer(r)]
        if not fresh:
            return [], []
        new_book, events = step(book, fresh, thresholds, forecasts, now, policy, signals=signals)
        new_book, messages = plan_messages(
            new_book, events, now, routing or Routing(), OutboxMessage.new_id(now)
        )
        if finish is not None:
            new_book, messages = finish(new_book, messages, fresh)
        if await store.commit_cycle(CycleCommit(fresh, new_book, messages), version):
            return events, fresh
        # Another process committed in between (a replica, or `check --notify` from cron):
        # evaluate again against what it wrote, so no transition is recorded twice.
        log.info("alert state changed underneath this cycle; evaluating again")
    raise StoreError("could not commit the poll cycle: the alert state kept changing")
