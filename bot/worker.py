"""The long-running part of `serve`: the poll loop, the delivery loop, and their health.

Among replicas sharing a store, only the holder of the poller lease polls; every replica
delivers (messages are claimed one at a time, so none is posted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.clock import Clock, Monotonic
from bot.delivery import Deliverer, DeliveryStatus
from bot.errors import StoreError
from bot.forecast import Burns, Forecasts
from bot.metrics import Metrics
from bot.monitor import Monitor
from bot.quota import ScopeReading
from bot.store.base import META_LAST_CYCLE, StateStore
from bot.views import load_views, unread_views

log = logging.getLogger(__name__)

OPEN_RETRY_CAP_S = 5.0
# A store read or ping the loop makes on its own (not for a request) gives up after this.
STORE_DEADLINE_S = 1.5
# Healthy scopes are committed this long into a cycle at the latest (or one poll interval,
# if shorter); a scope still being read then is committed on its own when it lands.
CYCLE_DEADLINE_S = 5.0
# Between cycles, the store is pinged this often so /healthz notices it going away.
STORE_CHECK_EVERY_S = 5.0
# Polling is considered stuck after this many intervals without a completed cycle.
STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class Health:
    """What /healthz reports, computed by the worker that knows it."""

    last_cycle_at: datetime | None  # this replica's, or the shared one when another polls
    seconds_since_cycle: float  # since the last cycle, or since start when there was none
    poll_interval: timedelta
    poller: bool  # this replica holds the poller lease
    store_error: str | None
    delivery: DeliveryStatus  # the primary destination's
    # Every other destination's (team chats), by name.
    destinations: dict[str, DeliveryStatus] = field(default_factory=dict)
    scopes: int = 0
    scopes_unreadable: int = 0  # scopes whose last reading failed

    @property
    def stale(self) -> bool:
        return self.seconds_since_cycle > STALE_AFTER_INTERVALS * self.poll_interval.total_seconds()

    @property
    def status(self) -> str:
        if self.store_error is not None:
            return "store_unavailable"
        if self.stale:
            return "stale"
        delivering = (self.delivery, *self.destinations.values())
        if any(d.state != "ok" for d in delivering) or self.unreadable:
            # Polling is alive, so the process should not be restarted; say what is wrong.
            return "degraded"
        return "ok"

    @property
    def unreadable(self) -> bool:
        """No configured scope could be read in its last attempt: nothing is being watched."""
        return self.scopes > 0 and self.scopes_unreadable >= self.scopes

    @property
    def serving(self) -> bool:
        """False when a restart or another replica should take over (HTTP 503)."""
        return self.status in ("ok", "degraded")


class Worker:
    """Runs the poll loop and the delivery loop until `shutdown`."""

    def __init__(
        self,
        monitor: Monitor,
        deliverer: Deliverer,
        store: StateStore,
        *,
        others: Sequence[Deliverer] = (),
        poll_interval: timedelta,
        holder: str,
        clock: Clock,
        monotonic: Monotonic = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._monitor = monitor
        self._deliverer = deliverer
        # One loop per destination: a slow or paused one never holds up another.
        self._deliverers = [deliverer, *others]
        self._wakes = [asyncio.Event() for _ in self._deliverers]
        self._store = store
        self.poll_interval = poll_interval
        self.holder = holder
        self._clock = clock
        self._monotonic = monotonic
        self._metrics = metrics
        self.started_at = clock()
        self.last_cycle_at: datetime | None = None
        self.is_poller = False
        self.store_problem: str | None = None
        self.store_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # What /healthz and /metrics report, kept up to date by the loops (never read from
        # the store per request): the shared last cycle (when another replica polls) and the
        # latest reading of each scope.
        self.shared_cycle_at: datetime | None = None
        self._readings: dict[str, ScopeReading] = {}
        self._store_checked = -1e18

    @property
    def lease_ttl(self) -> timedelta:
        return self.poll_interval * 3

    def start(self) -> None:
        """Start both loops in the background, so the caller (the web server) is not held up
        by whatever JPush, Slack or the state store are doing."""
        self._tasks = [
            asyncio.create_task(self.poll_forever(), name="poll-loop"),
            *(
                asyncio.create_task(self._drain(i), name=f"delivery-loop-{d.destination}")
                for i, d in enumerate(self._deliverers)
            ),
        ]

    @property
    def deliverers(self) -> list[Deliverer]:
        """Every destination's, the primary first."""
        return list(self._deliverers)

    def stop(self) -> None:
        self._stop.set()
        self.wake_delivery()

    def wake_delivery(self) -> None:
        """Something was queued: every destination looks at once."""
        for wake in self._wakes:
            wake.set()

    async def shutdown(self, grace: float) -> None:
        """Stop both loops: an in-flight commit or delivery may finish within `grace` seconds
        (each is atomic either way); a cycle still waiting on JPush is cancelled at once,
        since it has written nothing yet."""
        self.stop()
        if not self._tasks:
            return
        poll = self._tasks[0]
        if self._monitor.fetching:
            poll.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._monitor.cancel_fetches()

    async def open_store(self) -> None:
        """Open the store, retrying until it answers: the web server must not wait for it."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self._store.open()
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
            started = self._monotonic()
            try:
                if await self._hold_lease():
                    deadline = min(CYCLE_DEADLINE_S, self.poll_interval.total_seconds())
                    async with self._cycle_lock:
                        await self._monitor.cycle(deadline=deadline)
                    self.last_cycle_at = self._clock()
                    self.wake_delivery()
                    self._observe(
                        self._monitor.latest, self._monitor.forecasts, self._monitor.burns
                    )
                else:
                    await self._follow_the_poller()
                self.store_problem = None
                self._store_checked = self._monotonic()
            except StoreError as exc:
                self.store_problem = str(exc)
                log.error("poll cycle failed: state store unavailable: %s", exc)
            except TimeoutError:
                # Only the shared-state refresh has a deadline of its own.
                self.store_problem = "state store did not answer in time"
                log.error("poll loop: the state store did not answer in time")
            except Exception:
                log.exception("poll cycle failed")
            if self._metrics:
                self._metrics.observe_cycle(self.last_completed_cycle())
            await self._rest_until(started + self.poll_interval.total_seconds())

    async def _rest_until(self, until: float) -> None:
        """Sleep until the next cycle is due, pinging the store now and then so that /healthz
        learns of a store that went away between cycles."""
        while not self._stop.is_set():
            now = self._monotonic()
            if now >= until:
                return
            if now - self._store_checked >= STORE_CHECK_EVERY_S:
                self._store_checked = now
                try:
                    await asyncio.wait_for(self._store.ping(), timeout=STORE_DEADLINE_S)
                    self.store_problem = None
                except (StoreError, TimeoutError) as exc:
                    self.store_problem = str(exc) or "state store did not answer in time"
                continue
            await self._sleep(min(until - now, STORE_CHECK_EVERY_S))

    async def _follow_the_poller(self) -> None:
        """Another replica polls: refresh what /healthz and /metrics report from the shared
        state, once per interval, here rather than per request."""
        now = self._clock()
        views = await asyncio.wait_for(
            load_views(self._store, self._monitor.scopes, now), STORE_DEADLINE_S * 2
        )
        raw = await self._store.get_meta(META_LAST_CYCLE)
        self.shared_cycle_at = datetime.fromisoformat(raw) if raw else None
        readings = {v.scope: v.reading for v in views if v.reading is not None}
        self._observe(
            readings,
            {v.scope: dict(v.forecasts) for v in views if v.forecasts},
            {v.scope: dict(v.burns) for v in views if v.burns},
        )

    def _observe(
        self, readings: Mapping[str, ScopeReading], forecasts: Forecasts, burns: Burns
    ) -> None:
        self._readings = dict(readings)
        if self._metrics is not None:
            views = unread_views(self._monitor.scopes, readings, forecasts, burns=burns)
            self._metrics.observe_views(views, self._clock())

    async def deliver_forever(self) -> None:
        """Drain every destination's queue until stopped."""
        await asyncio.gather(*(self._drain(i) for i in range(len(self._deliverers))))

    async def _drain(self, index: int) -> None:
        deliverer, wake = self._deliverers[index], self._wakes[index]
        if not await self._store_ready_or_stopped():
            return
        idle = min(5.0, self.poll_interval.total_seconds())
        while not self._stop.is_set():
            # Cleared before the work, not after: a wake-up (stop, or a cycle that queued a
            # message) that arrives while delivering must not be lost for `idle` seconds.
            wake.clear()
            try:
                await deliverer.deliver_pending()
            except StoreError as exc:
                log.warning("delivery paused: state store unavailable: %s", exc)
            except Exception:
                log.exception("delivery loop error")
            if self._metrics:
                statuses = [d.status for d in self._deliverers]
                oldest = [s.oldest_at for s in statuses if s.oldest_at is not None]
                self._metrics.observe_outbox(
                    sum(s.queued for s in statuses), min(oldest) if oldest else None
                )
            wait = deliverer.seconds_until_ready() or idle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(0.05, wait))

    def health(self, now: datetime) -> Health:
        """From what the loops already know: no store round trip per request."""
        store_error = self.store_problem
        if store_error is None and not self.store_ready.is_set():
            store_error = "state store not open yet"
        last = self.last_completed_cycle()
        scopes = self._monitor.scopes
        unreadable = sum(
            1
            for s in scopes
            if (r := self._readings.get(s.name)) is not None and r.error is not None
        )
        return Health(
            last_cycle_at=last,
            seconds_since_cycle=(now - (last or self.started_at)).total_seconds(),
            poll_interval=self.poll_interval,
            poller=self.is_poller,
            store_error=store_error,
            delivery=self._deliverer.status,
            destinations={d.destination: d.status for d in self._deliverers[1:]},
            scopes=len(scopes),
            scopes_unreadable=unreadable,
        )

    def last_completed_cycle(self) -> datetime | None:
        """This replica's last cycle, or the shared one when another replica polls."""
        shared = self.shared_cycle_at
        if self.is_poller or shared is None:
            return self.last_cycle_at
        if self.last_cycle_at and self.last_cycle_at > shared:
            return self.last_cycle_at
        return shared

    async def _hold_lease(self) -> bool:
        held = await self._store.acquire_lease(self.holder, self.lease_ttl, self._clock())
        if held != self.is_poller:
            log.info("poller lease %s", "acquired" if held else "held by another replica")
            if held:
                # Another replica may have polled meanwhile: start again from what it stored.
                self._monitor.forget()
        self.is_poller = held
        return held

    async def _release_lease(self) -> None:
        if not self.is_poller:
            return
        with contextlib.suppress(StoreError):
            await self._store.release_lease(self.holder)
        self.is_poller = False

    async def _store_ready_or_stopped(self) -> bool:
        """Whether the store opened; False once stopped first. Waiting on the store alone held
        a SIGTERM for the whole shutdown grace while the store was down."""
        waits = {
            asyncio.ensure_future(self.store_ready.wait()),
            asyncio.ensure_future(self._stop.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return not self._stop.is_set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
