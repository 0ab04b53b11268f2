"""The alert state machine: one poll's readings in, the new alert book and its events out.

Pure: no I/O, no clock. The book is everything remembered between polls, so deduplication holds
across restarts and replicas as long as the book is stored with the events it produced.

Per (scope, type) at most one alert is open, at its worst level:

    (none) --below a threshold--> THRESHOLD --warning to critical--> (ESCALATED)
      |                             |  ^--still below after the repeat interval (REPEATED)
      |                             +--at/above warning+margin, unassigned, disabled--> (none)
      +--empty within the horizon--> RUNNING_OUT --below a threshold--> THRESHOLD (FIRED)
                                          +--no forecast, beyond horizon+margin--> (none)

Per scope, fetch health: FETCH_FAILING after N consecutive failures (at once for configuration
errors), REPEATED while it lasts, FETCH_RECOVERED on the next successful read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction

from bot.alerts_types import (
    AlertBook,
    AlertKind,
    Event,
    EventKind,
    OpenAlert,
    ScopeHealth,
    alert_key,
)
from bot.anomalies import Signals, account_pool, step_burn, sudden_drop, with_pool_advice
from bot.forecast import Forecast
from bot.quota import QUOTA_TYPES, Level, QuotaType, ScopeReading, Threshold, Thresholds, level_for
from bot.report_alerts import expire, report_keys, resolve_by_reading

_DISABLED = Threshold(0, 0)
_ALERTING = (Level.WARNING, Level.CRITICAL)


@dataclass(frozen=True, slots=True)
class Policy:
    """The alerting knobs of the configuration, as plain values."""

    repeat_interval: timedelta | None = timedelta(hours=24)  # None: never repeat
    resolve_margin_pct: float = 10.0
    failures_before_alert: int = 3
    forecast_horizon: timedelta | None = timedelta(days=3)  # None: no running_out alerts
    drop_percent: float = 30.0  # a fall of more than this in one poll is said once; 0: never
    burn_factor: float = 5.0  # the last hour against the usual hour; 0: no burn alerts


def step(
    book: AlertBook,
    readings: Sequence[ScopeReading],
    thresholds: Mapping[str, Thresholds],
    forecasts: Mapping[str, Mapping[QuotaType, Forecast]],
    now: datetime,
    policy: Policy,
    *,
    signals: Mapping[str, Mapping[QuotaType, Signals]] | None = None,
) -> tuple[AlertBook, list[Event]]:
    """Advance the alert book by one poll.

    `thresholds` names every configured scope; book entries of other scopes (removed from the
    configured) are dropped without an event. Scopes without a reading keep their state, and
    so do scopes whose reading is not newer than the last one the book took in (a late cycle
    or another poller's must never announce a value that newer news has replaced).
    Events come ordered by scope name, then quota type (QUOTA_TYPES order), then fetch health.
    """
    configured = {
        alert_key(s, t, kind)
        for s in thresholds
        for t in QUOTA_TYPES
        for kind in (None, AlertKind.BURN)
    }
    configured |= report_keys(thresholds)
    signals = signals or {}
    pool = account_pool(readings)
    alerts = {key: alert for key, alert in book.alerts.items() if key in configured}
    health = {scope: h for scope, h in book.health.items() if scope in thresholds}
    read_at = {scope: at for scope, at in book.read_at.items() if scope in thresholds}
    events: list[Event] = []
    for reading in sorted(readings, key=lambda r: r.scope):
        scope = reading.scope
        if scope not in thresholds or not book.is_newer(reading):
            continue
        read_at[scope] = reading.read_at
        if reading.error is None:
            # A failed fetch is never read as a value: quota alerts only move on a real reading.
            for quota_type in QUOTA_TYPES:
                key = alert_key(scope, quota_type)
                value = _value_of(reading, quota_type)
                threshold = thresholds[scope].get(quota_type, _DISABLED)
                outcome = _step_quota(
                    _QuotaInput(
                        scope=scope,
                        quota_type=quota_type,
                        value=value,
                        threshold=threshold,
                        forecast=forecasts.get(scope, {}).get(quota_type),
                    ),
                    alerts.get(key),
                    now,
                    policy,
                )
                _store(alerts, key, outcome.alert)
                events.extend(with_pool_advice(outcome.events, reading.kind, threshold, pool))
                events.extend(_step_signals(scope, quota_type, value, signals, alerts, now, policy))
            events.extend(resolve_by_reading(alerts, reading, thresholds[scope], now))
        new_health, fetch_events = _step_health(
            scope, health.get(scope, ScopeHealth()), reading, now, policy
        )
        health[scope] = new_health
        events.extend(fetch_events)
    # Delivery-report alerts that expire with time (rate limiting) close at the next poll too.
    events.extend(expire(alerts, thresholds, now))
    # Incidents ride along untouched: bot.incidents advances them from these events.
    return replace(book, alerts=alerts, health=health, read_at=read_at), events


def _step_signals(
    scope: str,
    quota_type: QuotaType,
    value: int | None,
    signals: Mapping[str, Mapping[QuotaType, Signals]],
    alerts: dict[str, OpenAlert],
    now: datetime,
    policy: Policy,
) -> list[Event]:
    """Sudden drops and burning faster than usual, from the series' running state."""
    found = signals.get(scope, {}).get(quota_type, Signals())
    events = []
    if value is not None:
        drop = sudden_drop(scope, quota_type, value, found.drop, now, policy.drop_percent)
        if drop is not None:
            events.append(drop)
    key = alert_key(scope, quota_type, AlertKind.BURN)
    alert, burn_events = step_burn(
        scope,
        quota_type,
        value,
        found.burn,
        alerts.get(key),
        now,
        burn_factor=policy.burn_factor,
        repeat_interval=policy.repeat_interval,
    )
    _store(alerts, key, alert)
    return events + burn_events


def resolve_bar(threshold: Threshold, margin_pct: float) -> int | None:
    """The smallest value that resolves a threshold alert; None when the type is disabled.

    Computed exactly (margins are decimal percentages) so 1000 at 10 % is 1100, not 1101.
    """
    base = threshold.warning or threshold.critical
    if not base:
        return None
    return math.ceil(base * (100 + Fraction(str(margin_pct))) / 100)


# --- quota alerts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _QuotaInput:
    scope: str
    quota_type: QuotaType
    value: int | None  # None: unassigned
    threshold: Threshold
    forecast: Forecast | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    alert: OpenAlert | None
    events: tuple[Event, ...] = ()


def _step_quota(q: _QuotaInput, alert: OpenAlert | None, now: datetime, policy: Policy) -> _Outcome:
    if q.value is None or q.threshold.disabled:
        if alert is None:
            return _Outcome(None)
        return _Outcome(None, (_resolved(q, alert, now, bar=None),))
    level = level_for(q.value, q.threshold)
    if level in _ALERTING:
        return _below_threshold(q, level, alert, now, policy)
    if alert is not None and alert.alert is AlertKind.THRESHOLD:
        bar = resolve_bar(q.threshold, policy.resolve_margin_pct)
        if bar is not None and q.value < bar:
            # Between warning and warning + margin: still open, silent (no flapping).
            return _Outcome(replace(alert, value=q.value))
        # Recovering past the bar usually means a top-up, which the forecaster confirms only a
        # poll later; opening a running-out alert now would come from the drained segment and
        # close again at once. If the trend holds, the next cycle opens it.
        return _Outcome(None, (_resolved(q, alert, now, bar=bar),))
    return _running_out(q, alert, now, policy)


def _below_threshold(
    q: _QuotaInput, level: Level, alert: OpenAlert | None, now: datetime, policy: Policy
) -> _Outcome:
    if alert is None or alert.alert is not AlertKind.THRESHOLD:
        # A running-out alert is superseded: the threshold alert says more, in one event.
        opened = OpenAlert(
            alert=AlertKind.THRESHOLD,
            level=level,
            opened_at=now,
            announced_at=now,
            pending=True,
            value=q.value,
        )
        return _Outcome(opened, (_threshold_event(EventKind.FIRED, q, level, opened, now),))
    if alert.level is Level.WARNING and level is Level.CRITICAL:
        escalated = replace(
            alert, level=Level.CRITICAL, announced_at=now, pending=True, value=q.value
        )
        return _Outcome(
            escalated, (_threshold_event(EventKind.ESCALATED, q, level, escalated, now),)
        )
    # A critical alert whose value is back in the warning band stays critical until it
    # resolves: no de-escalation, no flapping at the critical boundary.
    if _repeat_due(alert.pending, alert.announced_at, now, policy):
        repeated = replace(alert, announced_at=now, pending=True, value=q.value)
        return _Outcome(repeated, (_threshold_event(EventKind.REPEATED, q, level, repeated, now),))
    return _Outcome(replace(alert, value=q.value))


def _running_out(
    q: _QuotaInput, alert: OpenAlert | None, now: datetime, policy: Policy
) -> _Outcome:
    """The type is above its thresholds and no threshold alert is open."""
    horizon = policy.forecast_horizon
    to_empty = q.forecast.empty_at - now if q.forecast is not None else None
    within = horizon is not None and to_empty is not None and to_empty <= horizon
    if alert is None:
        if not within:
            return _Outcome(None)
        opened = OpenAlert(
            alert=AlertKind.RUNNING_OUT,
            level=Level.WARNING,
            opened_at=now,
            announced_at=now,
            pending=True,
            value=q.value,
        )
        return _Outcome(opened, (_running_out_event(EventKind.RUNNING_OUT, q, opened, now),))
    if horizon is None or to_empty is None or to_empty > _widen(horizon, policy):
        return _Outcome(None, (_resolved(q, alert, now, bar=None),))
    if within and _repeat_due(alert.pending, alert.announced_at, now, policy):
        repeated = replace(alert, announced_at=now, pending=True, value=q.value)
        return _Outcome(repeated, (_running_out_event(EventKind.REPEATED, q, repeated, now),))
    return _Outcome(replace(alert, value=q.value))


def _widen(horizon: timedelta, policy: Policy) -> timedelta:
    # The same hysteresis as for thresholds, applied to time: a projection wobbling around the
    # horizon must not open and close the alert every poll.
    return horizon * (1 + policy.resolve_margin_pct / 100)


def _threshold_event(
    kind: EventKind, q: _QuotaInput, level: Level, alert: OpenAlert, now: datetime
) -> Event:
    crossed = q.threshold.critical if level is Level.CRITICAL else q.threshold.warning
    return Event(
        kind=kind,
        scope=q.scope,
        at=now,
        quota_type=q.quota_type,
        level=level,
        value=q.value,
        threshold=crossed,
        alert=AlertKind.THRESHOLD,
        forecast=q.forecast,
        opened_at=alert.opened_at,
    )


def _running_out_event(kind: EventKind, q: _QuotaInput, alert: OpenAlert, now: datetime) -> Event:
    # No threshold is crossed yet; the warning bar it is still above tells how much room is left.
    return Event(
        kind=kind,
        scope=q.scope,
        at=now,
        quota_type=q.quota_type,
        value=q.value,
        threshold=q.threshold.warning or None,
        alert=AlertKind.RUNNING_OUT,
        forecast=q.forecast,
        opened_at=alert.opened_at,
    )


def _resolved(q: _QuotaInput, alert: OpenAlert, now: datetime, *, bar: int | None) -> Event:
    """`bar` is the resolve bar the value reached; None when it closed for another reason."""
    threshold_alert = alert.alert is AlertKind.THRESHOLD
    return Event(
        kind=EventKind.RESOLVED,
        scope=q.scope,
        at=now,
        quota_type=q.quota_type,
        level=alert.level if threshold_alert else None,
        value=q.value,
        threshold=bar,
        alert=alert.alert,
        opened_at=alert.opened_at,
    )


def _value_of(reading: ScopeReading, quota_type: QuotaType) -> int | None:
    if reading.unassigned or reading.balances is None:
        return None
    return reading.balances.get(quota_type)


def _store(alerts: dict[str, OpenAlert], key: str, alert: OpenAlert | None) -> None:
    if alert is None:
        alerts.pop(key, None)
    else:
        alerts[key] = alert


# --- fetch health ------------------------------------------------------------------------


def _step_health(
    scope: str, health: ScopeHealth, reading: ScopeReading, now: datetime, policy: Policy
) -> tuple[ScopeHealth, list[Event]]:
    error = reading.error
    if error is None:
        if health.failing_since is None:
            return ScopeHealth(), []
        recovered = Event(
            kind=EventKind.FETCH_RECOVERED,
            scope=scope,
            at=now,
            opened_at=health.failing_since,
        )
        return ScopeHealth(), [recovered]
    health = replace(health, consecutive_failures=health.consecutive_failures + 1, last_error=error)
    if health.failing_since is None:
        if health.consecutive_failures < policy.failures_before_alert and not error.config:
            return health, []
        health = replace(health, failing_since=now, announced_at=now, pending=True)
        kind = EventKind.FETCH_FAILING
    elif _repeat_due(health.pending, health.announced_at, now, policy):
        health = replace(health, announced_at=now, pending=True)
        kind = EventKind.REPEATED
    else:
        return health, []
    event = Event(kind=kind, scope=scope, at=now, error=error, opened_at=health.failing_since)
    return health, [event]


def _repeat_due(
    pending: bool, announced_at: datetime | None, now: datetime, policy: Policy
) -> bool:
    # Repeats count from the last delivered message; none is due while one is still queued.
    if policy.repeat_interval is None or pending or announced_at is None:
        return False
    return now - announced_at >= policy.repeat_interval
