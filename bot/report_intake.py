"""Verified delivery reports -> the state store and the alert engine.

Each report is first recorded by its replay key (nonce and signature) in the state store, so a
JPush retry (or the same report reaching another replica) is answered but not counted again.
Reports that can move an alert (4001, 4005, 4006) are then evaluated together with whatever
else arrived meanwhile: one load of the alert book, one commit, one outbox message, whatever
the rate. A 4005 that opens an alert first reads that app's quotas from JPush (briefly), so the
message shows the numbers behind the failure. If the commit fails the report is forgotten again
and the error goes back to the route (503): JPush will retry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.alerts_types import AlertKind, report_alert_key
from bot.clock import Clock
from bot.delivery_reports import (
    DELIVERED,
    QUOTA_EXHAUSTED,
    RATE_EXCEEDED,
    STATUS_NAMES,
    CallbackApp,
    DeliveryReport,
    Signer,
)
from bot.errors import StoreError
from bot.jpush import JPushClient
from bot.log_hygiene import LogThrottle
from bot.metrics import Metrics
from bot.monitor import Monitor
from bot.quota import Scope, ScopeKind, ScopeReading
from bot.report_alerts import RATE_LIMIT_CLEARS_AFTER
from bot.store.base import StateStore

log = logging.getLogger(__name__)

# Statuses that can open or close an alert; the others are only counted.
ACTIONABLE = frozenset({DELIVERED, QUOTA_EXHAUSTED, RATE_EXCEEDED})
# A rate-limited alert resolves this long after the last 4006 (checked a second later).
EXPIRY_DELAY = RATE_LIMIT_CLEARS_AFTER.total_seconds() + 1.0
# How long a 4005 that opens an alert waits for the app's fresh quotas before the alert goes
# out without them (the next poll brings them).
FETCH_DEADLINE = 2.0
# Failed sends go on until the quota is topped up, reported in batches several times a
# second: the log gets the first batch at once, then a total per app and status this often.
FAILURE_LOG_EVERY_S = 60.0


class _GroupCommit:
    """Runs `commit` on everything submitted while the previous commit was running."""

    def __init__(self, commit: Callable[[list[DeliveryReport]], Awaitable[None]]) -> None:
        self._commit = commit
        self._pending: list[tuple[DeliveryReport, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, report: DeliveryReport) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="report-commit")
        # Shielded: a caller that goes away does not cancel the commit others wait on.
        await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._commit([report for report, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)


class ReportIntake:
    def __init__(
        self,
        scopes: Sequence[Scope],
        store: StateStore,
        monitor: Monitor,
        client: JPushClient,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        wake_delivery: Callable[[], None] = lambda: None,
        fetch_deadline: float = FETCH_DEADLINE,
        expiry_delay: float = EXPIRY_DELAY,
        failure_log: LogThrottle | None = None,
    ) -> None:
        self._scopes = {s.name: s for s in scopes}
        self._store = store
        self._monitor = monitor
        self._client = client
        self._clock = clock
        self._metrics = metrics
        self._wake = wake_delivery
        self._fetch_deadline = fetch_deadline
        self._commits = _GroupCommit(self._commit)
        self._expiry_delay = expiry_delay
        self._expiry: asyncio.Task[None] | None = None
        self._failure_log = failure_log or LogThrottle(every=FAILURE_LOG_EVERY_S)

    async def accept(self, report: DeliveryReport) -> bool:
        now = self._clock()
        outcome = report.status_label
        fresh = await self._store.record_report(
            report.replay_key, report.forget_after, report.scope, outcome, now
        )
        if not fresh:
            log.info("delivery report from %s seen before; not counted again", report.scope)
            return False
        if report.status in ACTIONABLE:
            try:
                await self._commits.submit(report)
            except Exception:
                with contextlib.suppress(StoreError):
                    await self._store.unrecord_report(report.replay_key, report.scope, outcome, now)
                raise
        if self._metrics is not None:
            self._metrics.delivery_reports.labels(report.scope, outcome).inc()
        return True

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        await self._commits.close()

    async def _commit(self, reports: list[DeliveryReport]) -> None:
        readings = await self._fresh_readings(reports)
        events = await self._monitor.commit_reports(reports, readings)
        _log_failures(self._failure_log, reports)
        if events:
            self._wake()
        if any(r.status == RATE_EXCEEDED for r in reports):
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Resolve the rate-limited alert on time even when the next poll is an hour away: a
        commit with no reports expires it, once the last 4006 seen here is old enough."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_later())

    async def _expire_later(self) -> None:
        await asyncio.sleep(self._expiry_delay)
        try:
            events = await self._monitor.commit_reports([])
        except StoreError as exc:
            log.warning("could not expire the rate-limited alert (the next poll will): %s", exc)
            return
        if events:
            self._wake()

    async def _fresh_readings(self, reports: Sequence[DeliveryReport]) -> list[ScopeReading]:
        """The apps whose quota-exhausted alert these reports are about to open, read live."""
        failing = {r.scope for r in reports if r.status == QUOTA_EXHAUSTED}
        if not failing:
            return []
        book, _ = await self._store.load_book()
        opening = [
            self._scopes[name]
            for name in sorted(failing)
            if name in self._scopes
            and report_alert_key(name, AlertKind.SENDS_FAILING) not in book.alerts
        ]
        if not opening:
            return []
        tasks = [asyncio.ensure_future(self._client.fetch(scope)) for scope in opening]
        done, pending = await asyncio.wait(tasks, timeout=self._fetch_deadline)
        for task in pending:
            task.cancel()
        if pending:
            log.info(
                "fresh quotas for the delivery-report alert not read in time; sending it without"
            )
        return [task.result() for task in done if task.exception() is None]


def _log_failures(throttle: LogThrottle, reports: Sequence[DeliveryReport]) -> None:
    """A line per app and failing status when they start, then a total a minute at most."""
    failing: dict[tuple[str, int], int] = {}
    for report in reports:
        if report.status in (QUOTA_EXHAUSTED, RATE_EXCEEDED):
            key = (report.scope, report.status)
            failing[key] = failing.get(key, 0) + 1
    for (scope, status), n in sorted(failing.items()):
        name = STATUS_NAMES[status]

        def emit(count: int, first: bool, scope: str = scope, name: str = name) -> None:
            since = "" if first else " since the last such line"
            log.warning("delivery reports from %s: %d x %s%s", scope, count, name, since)

        throttle.tally(f"{scope}/{status}", n, emit)


def callback_signer(scopes: Sequence[Scope]) -> Signer:
    """Every configured app's credentials: any of them may have signed a report."""
    return Signer(
        CallbackApp(s.name, s.key, s.secret.get_secret_value())
        for s in scopes
        if s.kind is ScopeKind.APP
    )
