"""Alerts from JPush delivery reports: the alert book moved by reports instead of polls.

Pure: reports, readings and `now` in, the new alerts and their events out. The alerts live in
the same book as the quota alerts (keys `app/sends_failing`, `app/rate_limited`), so they are
deduplicated, committed and delivered exactly like them and join the scope's incident.

    (none) --4005--> SENDS_FAILING (critical) --4005 after the repeat interval--> (REPEATED)
                        +--4001 with no 4005 for QUIET, or a poll above warning--> (none)
    (none) --4006--> RATE_LIMITED (warning) --no 4006 for RATE_LIMIT_CLEARS_AFTER--> (none)

A 4001 resolves a quota-exhausted alert only once no 4005 has come for `QUIET`: an app that
sends with two quota types, one of them empty, gets 4001 and 4005 interleaved, and must not
open and resolve the alert with every pair. A poll resolves it on the same condition, so the
poll triggered by the 4005 itself cannot close what it was triggered to illustrate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bot.alerts_types import REPORT_ALERTS, AlertKind, Event, EventKind, OpenAlert
from bot.alerts_types import report_alert_key as key_of
from bot.delivery_reports import DELIVERED, QUOTA_EXHAUSTED, RATE_EXCEEDED, DeliveryReport
from bot.quota import QUOTA_TYPES, Level, ScopeKind, ScopeReading, Thresholds, level_for

QUIET = timedelta(minutes=1)
RATE_LIMIT_CLEARS_AFTER = timedelta(minutes=15)

_OPENS: Mapping[int, tuple[AlertKind, Level]] = {
    QUOTA_EXHAUSTED: (AlertKind.SENDS_FAILING, Level.CRITICAL),
    RATE_EXCEEDED: (AlertKind.RATE_LIMITED, Level.WARNING),
}


def report_keys(scopes: Iterable[str]) -> set[str]:
    """Every report-alert key the given app scopes may hold."""
    return {key_of(scope, alert) for scope in scopes for alert in REPORT_ALERTS}


def step_reports(
    alerts: Mapping[str, OpenAlert],
    reports: Sequence[DeliveryReport],
    apps: Iterable[str],
    now: datetime,
    repeat_interval: timedelta | None,
) -> tuple[dict[str, OpenAlert], list[Event]]:
    """Apply verified reports (of the configured `apps` only), then expire quiet alerts."""
    known = set(apps)
    result = dict(alerts)
    events: list[Event] = []
    for report in reports:
        if report.scope not in known or report.status is None:
            continue
        if report.status in _OPENS:
            events.extend(_confirm(result, report.scope, report.status, now, repeat_interval))
        elif report.status == DELIVERED:
            events.extend(_delivered(result, report.scope, now))
    events.extend(expire(result, known, now))
    return result, events


def expire(alerts: dict[str, OpenAlert], apps: Iterable[str], now: datetime) -> list[Event]:
    """Resolve (in place) the rate-limited alerts with no 4006 for RATE_LIMIT_CLEARS_AFTER."""
    events = []
    for scope in sorted(apps):
        key = key_of(scope, AlertKind.RATE_LIMITED)
        alert = alerts.get(key)
        if (
            alert is not None
            and now - (alert.last_seen or alert.opened_at) >= RATE_LIMIT_CLEARS_AFTER
        ):
            del alerts[key]
            events.append(_resolved(scope, alert, now))
    return events


def resolve_by_reading(
    alerts: dict[str, OpenAlert],
    reading: ScopeReading,
    thresholds: Thresholds,
    now: datetime,
) -> list[Event]:
    """A poll of an app whose every judged quota is at or above its warning level resolves
    (in place) its quota-exhausted alert, once no 4005 has come for QUIET."""
    key = key_of(reading.scope, AlertKind.SENDS_FAILING)
    alert = alerts.get(key)
    if alert is None or reading.kind is not ScopeKind.APP or not _quiet(alert, now):
        return []
    if reading.error is not None or reading.unassigned or reading.balances is None:
        return []
    for quota_type in QUOTA_TYPES:
        threshold = thresholds.get(quota_type)
        value = reading.balances.get(quota_type)
        if threshold is None or threshold.disabled or value is None:
            continue
        if level_for(value, threshold) in (Level.WARNING, Level.CRITICAL):
            return []
    del alerts[key]
    return [_resolved(reading.scope, alert, now)]


def _confirm(
    alerts: dict[str, OpenAlert],
    scope: str,
    status: int,
    now: datetime,
    repeat_interval: timedelta | None,
) -> list[Event]:
    kind, level = _OPENS[status]
    key = key_of(scope, kind)
    alert = alerts.get(key)
    if alert is None:
        opened = OpenAlert(
            alert=kind, level=level, opened_at=now, announced_at=now, pending=True, last_seen=now
        )
        alerts[key] = opened
        return [_event(EventKind.FIRED, scope, opened, now)]
    if _repeat_due(alert, now, repeat_interval):
        repeated = replace(alert, announced_at=now, pending=True, last_seen=now)
        alerts[key] = repeated
        return [_event(EventKind.REPEATED, scope, repeated, now)]
    alerts[key] = replace(alert, last_seen=now)
    return []


def _delivered(alerts: dict[str, OpenAlert], scope: str, now: datetime) -> list[Event]:
    key = key_of(scope, AlertKind.SENDS_FAILING)
    alert = alerts.get(key)
    if alert is None or not _quiet(alert, now):
        return []
    del alerts[key]
    return [_resolved(scope, alert, now)]


def _quiet(alert: OpenAlert, now: datetime) -> bool:
    return now - (alert.last_seen or alert.opened_at) >= QUIET


def _repeat_due(alert: OpenAlert, now: datetime, repeat_interval: timedelta | None) -> bool:
    # Repeats count from the last delivered message; none is due while one is still queued.
    if repeat_interval is None or alert.pending:
        return False
    return bool(now - alert.announced_at >= repeat_interval)


def _event(kind: EventKind, scope: str, alert: OpenAlert, now: datetime) -> Event:
    return Event(
        kind=kind,
        scope=scope,
        at=now,
        level=alert.level,
        alert=alert.alert,
        opened_at=alert.opened_at,
    )


def _resolved(scope: str, alert: OpenAlert, now: datetime) -> Event:
    return _event(EventKind.RESOLVED, scope, alert, now)
