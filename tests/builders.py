"""Builders for the values tests feed the pure core: readings, views, events, forecasts, a clock.

Defaults are the usual world: thresholds warn < 1,000 / crit < 100 on every type, `NOW` a
Thursday morning, scope "account" the account and any other name an app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts_types import AlertKind, Event, EventKind
from bot.forecast import Forecast
from bot.quota import (
    QUOTA_TYPES,
    FetchError,
    Level,
    QuotaType,
    ScopeKind,
    ScopeReading,
    Threshold,
    Thresholds,
)
from bot.simulator import JPushSimulator
from bot.views import ScopeView

NOW = datetime(2026, 11, 26, 9, 44, tzinfo=UTC)  # a Thursday
Q = QuotaType
THRESHOLDS: Thresholds = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
HIGH = 50_000


def kind_of(scope: str) -> ScopeKind:
    return ScopeKind.ACCOUNT if scope == "account" else ScopeKind.APP


def values(
    balance: int | None = 5000,
    voice: int | None = 5000,
    industry: int | None = 5000,
    market: int | None = 5000,
) -> dict[QuotaType, int | None]:
    return {Q.BALANCE: balance, Q.VOICE: voice, Q.INDUSTRY: industry, Q.MARKET: market}


def reading(
    scope: str = "account",
    at: datetime = NOW,
    *,
    balances: Mapping[QuotaType, int | None] | None = None,
    error: FetchError | None = None,
    unassigned: bool = False,
) -> ScopeReading:
    return ScopeReading(
        scope, kind_of(scope), at, balances=balances, error=error, unassigned=unassigned
    )


def read_ok(scope: str = "account", at: datetime = NOW, **by_type: int | None) -> ScopeReading:
    """A successful reading: every type HIGH unless given, e.g. read_ok(balance=900)."""
    return reading(scope, at, balances={t: by_type.get(t.value, HIGH) for t in QUOTA_TYPES})


def read_failed(
    scope: str = "account", at: datetime = NOW, *, config: bool = False, message: str = "boom"
) -> ScopeReading:
    error = FetchError(code=50002 if config else 50019, message=message, config=config)
    return reading(scope, at, error=error)


def read_unassigned(scope: str = "shop", at: datetime = NOW) -> ScopeReading:
    return reading(scope, at, unassigned=True)


def view(
    name: str,
    balances: Mapping[QuotaType, int | None] | None = None,
    *,
    error: FetchError | None = None,
    unassigned: bool = False,
    read_ago: timedelta | None = timedelta(minutes=3),
    forecasts: Mapping[QuotaType, Forecast] | None = None,
    trend: Mapping[QuotaType, Sequence[int]] | None = None,
    thresholds: Thresholds = THRESHOLDS,
    now: datetime = NOW,
    deliveries: Mapping[str, int] | None = None,
) -> ScopeView:
    """What the bot knows of one scope; `read_ago=None` means not read yet."""
    read = None
    if read_ago is not None:
        read = reading(name, now - read_ago, balances=balances, error=error, unassigned=unassigned)
    return ScopeView(
        name,
        kind_of(name),
        read,
        thresholds,
        dict(forecasts or {}),
        dict(trend or {}),
        deliveries=dict(deliveries or {}),
    )


def forecast_in(now: datetime, hours: float, per_hour: float = 100.0) -> Forecast:
    return Forecast(per_hour=per_hour, empty_at=now + timedelta(hours=hours))


def fired(
    scope: str,
    quota_type: QuotaType,
    level: Level,
    value: int,
    threshold: int,
    *,
    at: datetime = NOW,
    **more: Any,
) -> Event:
    """A threshold alert that just opened."""
    return Event(
        EventKind.FIRED, scope, at, quota_type, level, value, threshold, AlertKind.THRESHOLD, **more
    )


class FakeClock:
    """A wall clock the test sets and moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


Points = list[tuple[datetime, int]]


def history(values: Sequence[int], *, start: datetime = NOW, every: timedelta) -> Points:
    """Readings of one type at a steady pace, oldest first (the forecaster's input)."""
    return [(start + every * i, v) for i, v in enumerate(values)]


def drain(start: int, per_step: int, steps: int) -> list[int]:
    return [start - per_step * i for i in range(steps)]


# The `start_sim` fixture (conftest.py): starts a simulator, stops it after the test.
StartSim = Callable[[JPushSimulator], Awaitable[JPushSimulator]]
