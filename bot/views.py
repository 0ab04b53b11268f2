"""What is known about each scope right now, read from the shared state: the input to every
slash reply, `check` table and gauge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.forecast import Burn, Forecast, decode_burns, decode_forecasts
from bot.quota import (
    QUOTA_TYPES,
    Level,
    QuotaType,
    Scope,
    ScopeKind,
    ScopeReading,
    Status,
    Thresholds,
    evaluate,
)
from bot.quota import scope_status as _scope_status
from bot.store.base import META_BURNS, META_FORECASTS, StateStore

# How much history a sparkline shows.
TREND_WINDOW = timedelta(hours=24)
# How far back a single app's reply counts JPush's delivery reports.
DELIVERY_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ScopeView:
    scope: str
    kind: ScopeKind
    reading: ScopeReading | None  # None: not read yet
    thresholds: Thresholds
    forecasts: Mapping[QuotaType, Forecast] = field(default_factory=dict)
    # Values over the last 24 h, oldest first, for sparklines (single-scope replies only).
    trend: Mapping[QuotaType, Sequence[int]] = field(default_factory=dict)
    # The last hour's burn against the usual hour, where a week of history tells the usual.
    burns: Mapping[QuotaType, Burn] = field(default_factory=dict)
    # Delivery reports of the last hour by status label (single-app replies only).
    deliveries: Mapping[str, int] = field(default_factory=dict)

    # Computed once: renderers ask for levels many times per view.
    levels: dict[QuotaType, Level] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        levels = None if self.reading is None else evaluate(self.reading, self.thresholds)
        object.__setattr__(self, "levels", levels)

    @property
    def status(self) -> Status:
        if self.reading is None:
            return Status.UNKNOWN
        return _scope_status(self.reading, self.levels)


def unread_views(
    scopes: Sequence[Scope],
    readings: Mapping[str, ScopeReading] | None = None,
    forecasts: Mapping[str, Mapping[QuotaType, Forecast]] | None = None,
    trends: Mapping[str, Mapping[QuotaType, Sequence[int]]] | None = None,
    burns: Mapping[str, Mapping[QuotaType, Burn]] | None = None,
    deliveries: Mapping[str, Mapping[str, int]] | None = None,
) -> list[ScopeView]:
    """Every configured scope with only the given readings, forecasts, trends, burns and
    delivery counts: what is known without reading the store."""
    readings = readings or {}
    forecasts = forecasts or {}
    trends = trends or {}
    burns = burns or {}
    deliveries = deliveries or {}
    return [
        ScopeView(
            scope=s.name,
            kind=s.kind,
            reading=readings.get(s.name),
            thresholds=s.thresholds,
            forecasts=forecasts.get(s.name, {}),
            trend=trends.get(s.name, {}),
            burns=burns.get(s.name, {}),
            deliveries=deliveries.get(s.name, {}),
        )
        for s in scopes
    ]


async def load_views(
    store: StateStore,
    scopes: Sequence[Scope],
    now: datetime,
    *,
    trend_for: str | None = None,
    readings: Mapping[str, ScopeReading] | None = None,
) -> list[ScopeView]:
    """Every configured scope from the shared state (no JPush call); `readings` override the
    stored ones, and `trend_for` names the scope that gets a sparkline."""
    latest = dict(await store.latest_readings())
    if readings:
        latest.update(readings)
    forecasts = decode_forecasts(await store.get_meta(META_FORECASTS))
    burns = decode_burns(await store.get_meta(META_BURNS))
    trends: dict[str, dict[QuotaType, list[int]]] = {}
    deliveries: dict[str, dict[str, int]] = {}
    target = next((s for s in scopes if s.name == trend_for), None)
    if target is not None:
        since = now - TREND_WINDOW
        trend = trends[target.name] = {}
        for quota_type in QUOTA_TYPES:
            points = await store.history(target.name, quota_type, since)
            if points:
                trend[quota_type] = [v for _, v in points]
        if target.kind is ScopeKind.APP:
            deliveries[target.name] = await store.report_counts(
                target.name, now - DELIVERY_WINDOW, now
            )
    return unread_views(scopes, latest, forecasts, trends, burns, deliveries)
