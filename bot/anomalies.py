"""Alerts about how a quota moves rather than where it stands, and where more quota can come from.

Pure, called by `alerts.step` for every (scope, type) it evaluates:

- a *sudden drop*: one informational event when a type loses more than `drop_percent` of its
  value between two polls (quota moved from the account pool to an app, a bulk campaign, or
  abuse), and far more than its usual pace burns in that time (a quota near empty loses a
  large share a poll at its usual pace: that is the running-out alert's news, not abuse);
  nothing is remembered, so it is said once;
- *burning faster than usual*: a warning alert, kept in the book beside the type's threshold or
  running-out alert (its own key), open while the last hour's burn is more than `burn_factor`
  times the usual hourly burn, resolved once it is back under half that factor (no flapping);
- *pool advice*: the account quota is the unallocated pool, so an app that is low or running out
  of a type the pool still holds plenty of is told how much it could be given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.alerts_types import AlertKind, Event, EventKind, OpenAlert
from bot.forecast import STEP_FACTOR, Burn, Drop
from bot.quota import Level, QuotaType, ScopeKind, ScopeReading, Threshold


@dataclass(frozen=True, slots=True)
class Signals:
    """What a series' running state says besides its forecast (bot.forecast.drop_of, burn_of)."""

    drop: Drop | None = None
    burn: Burn | None = None


def sudden_drop(
    scope: str,
    quota_type: QuotaType,
    value: int,
    drop: Drop | None,
    now: datetime,
    drop_percent: float,
) -> Event | None:
    """The one-off event for a fall of more than `drop_percent` in one poll (0 disables) that
    is also a step: more than STEP_FACTOR times what the usual pace burns in that time."""
    if not drop_percent or drop is None or drop.percent <= drop_percent:
        return None
    if drop.usual is not None and drop.amount <= STEP_FACTOR * drop.usual:
        return None
    return Event(
        kind=EventKind.SUDDEN_DROP,
        scope=scope,
        at=now,
        quota_type=quota_type,
        value=value,
        drop=drop,
    )


def step_burn(
    scope: str,
    quota_type: QuotaType,
    value: int | None,
    burn: Burn | None,
    alert: OpenAlert | None,
    now: datetime,
    *,
    burn_factor: float,
    repeat_interval: timedelta | None,
) -> tuple[OpenAlert | None, list[Event]]:
    """The burn alert of one (scope, type) after this poll, and what to say about it."""

    def event(kind: EventKind, opened: OpenAlert) -> Event:
        return Event(
            kind=kind,
            scope=scope,
            at=now,
            quota_type=quota_type,
            level=Level.WARNING if kind is not EventKind.RESOLVED else None,
            value=value,
            alert=AlertKind.BURN,
            burn=burn,
            opened_at=opened.opened_at,
        )

    if value is None or not burn_factor:
        # Unassigned now, or the check was switched off: nothing left to watch.
        return None, [event(EventKind.RESOLVED, alert)] if alert is not None else []
    if burn is None:
        # Too little history (or a type that usually burns nothing): no judgement either way.
        return alert, []
    if alert is None:
        if burn.ratio <= burn_factor:
            return None, []
        opened = OpenAlert(
            alert=AlertKind.BURN,
            level=Level.WARNING,
            opened_at=now,
            announced_at=now,
            pending=True,
            value=value,
        )
        return opened, [event(EventKind.BURNING_FAST, opened)]
    if burn.ratio < burn_factor / 2:
        return None, [event(EventKind.RESOLVED, alert)]
    due = (
        repeat_interval is not None
        and not alert.pending
        and now - alert.announced_at >= repeat_interval
        and burn.ratio > burn_factor
    )
    if due:
        repeated = replace(alert, announced_at=now, pending=True, value=value)
        return repeated, [event(EventKind.REPEATED, repeated)]
    return replace(alert, value=value), []


def account_pool(readings: Sequence[ScopeReading]) -> dict[QuotaType, int]:
    """The account scope's values in this poll: the quota not yet allocated to any app."""
    for reading in readings:
        if reading.kind is ScopeKind.ACCOUNT and reading.error is None and reading.balances:
            return {t: v for t, v in reading.balances.items() if v is not None}
    return {}


_ADVISED = (EventKind.FIRED, EventKind.ESCALATED, EventKind.REPEATED, EventKind.RUNNING_OUT)


def with_pool_advice(
    events: Sequence[Event], kind: ScopeKind, threshold: Threshold, pool: Mapping[QuotaType, int]
) -> list[Event]:
    """An app's low or running-out events, naming the pool when it holds more than the app's
    warning threshold (enough to lift the app out of its alert)."""
    bar = threshold.warning or threshold.critical
    if kind is not ScopeKind.APP or not bar:
        return list(events)
    advised = []
    for event in events:
        left = pool.get(event.quota_type) if event.quota_type is not None else None
        if (
            left is not None
            and left > bar
            and event.kind in _ADVISED
            and event.alert in (AlertKind.THRESHOLD, AlertKind.RUNNING_OUT)
        ):
            event = replace(event, pool=left)
        advised.append(event)
    return advised
