"""Burn rate and time-to-empty of a quota series, from its recent history.

Pure: points and `now` in, a Forecast (or None) out. The fit is an ordinary least-squares line
over the current falling segment, like Prometheus' `predict_linear`, with the reading times
(not their indexes) as x so irregular polling and gaps weigh correctly.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.quota import QuotaType

Point = tuple[datetime, int]

# A line needs two points; four keep one odd reading from setting the slope on its own, and at
# the default 5-minute poll they are only 15 minutes of history.
MIN_POINTS = 4
# SMS is sent in bursts (a campaign, a batch of verification codes); a rate taken over less than
# half an hour mostly measures one burst. The forecast horizon is days, so waiting 30 minutes
# after a start or a top-up before forecasting costs nothing.
MIN_SPAN = timedelta(minutes=30)
# Two whole days: long enough to average out the daily rhythm of sending (a whole number of
# days, so the window does not over-weight daytime), short enough that a lasting change in the
# sending rate shows in the forecast within a day.
LOOKBACK = timedelta(days=2)
# Beyond ten years the "fall" is integer rounding, not a trend, and datetime arithmetic stays
# far from its limits.
MAX_TIME_TO_EMPTY = timedelta(days=3650)

# A rise smaller than this share of the value is noise (e.g. refunded messages), not a top-up:
# a top-up that small would not change the forecast anyway.
_TOPUP_MIN_SHARE = 0.01
# ... and a rise within this many typical steps of the series is noise too.
_TOPUP_MIN_STEPS = 3
_SECONDS_PER_HOUR = 3600.0
_FLAT_PER_HOUR = 1e-9


@dataclass(frozen=True, slots=True)
class Forecast:
    """Burn rate and projected exhaustion of one quota type."""

    per_hour: float  # units consumed per hour (positive while draining)
    empty_at: datetime

    def seconds_to_empty(self, now: datetime) -> float:
        return max(0.0, (self.empty_at - now).total_seconds())

    def to_json(self) -> dict[str, Any]:
        return {"per_hour": self.per_hour, "empty_at": self.empty_at.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Forecast:
        return cls(
            per_hour=float(data["per_hour"]), empty_at=datetime.fromisoformat(data["empty_at"])
        )


# Per scope, per quota type: what a poll cycle computes and the store shares with replicas.
Forecasts = dict[str, dict[QuotaType, Forecast]]


def encode_forecasts(forecasts: Mapping[str, Mapping[QuotaType, Forecast]]) -> str:
    return json.dumps(
        {s: {t.value: f.to_json() for t, f in fs.items()} for s, fs in forecasts.items()},
        separators=(",", ":"),
    )


def decode_forecasts(raw: str | None) -> Forecasts:
    """The stored forecasts; nothing (rather than an error) when absent or unreadable."""
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


def segment(points: Sequence[Point]) -> list[Point]:
    """The current falling segment: the points since the last top-up, odd readings left out.

    Sending only ever lowers a quota, so a clear rise is either a top-up or an odd reading:
    - a rise the next reading keeps (it stays above the level before the rise) is a top-up,
      and the segment starts again at it;
    - a rise the next reading does not keep is a lone odd reading, dropped from the segment;
    - a rise in the very last reading cannot be judged yet, so it is left out until the next
      reading confirms it; meanwhile the forecast stays on the segment it would end. Waiting one
      poll avoids resolving a running-out alert on a glitch and re-opening it a poll later.
    Small rises (within a few typical steps, or under 1 % of the value) are noise and stay in.
    """
    ordered = sorted(points, key=lambda point: point[0])
    if not ordered:
        return []
    typical_step = _typical_step(ordered)
    current = [ordered[0]]
    for index in range(1, len(ordered)):
        point = ordered[index]
        before = current[-1][1]
        if point[1] - before <= _rise_tolerance(before, typical_step):
            current.append(point)
        elif index == len(ordered) - 1:
            break
        elif ordered[index + 1][1] > before:
            current = [point]
        # else: the next reading fell back, so this one was odd; it is left out.
    return current


def forecast(
    points: Sequence[Point],
    now: datetime,
    *,
    min_points: int = MIN_POINTS,
    min_span: timedelta = MIN_SPAN,
    lookback: timedelta | None = LOOKBACK,
) -> Forecast | None:
    """Burn rate and projected exhaustion, or None when too little history or not falling.

    Only points from `now - lookback` on are used. Points stamped after `now` are kept: a
    cycle may take its `now` just before the reading it evaluates is stamped.
    """
    recent = [p for p in points if lookback is None or p[0] >= now - lookback]
    current = segment(recent)
    if len(current) < max(min_points, 2) or current[-1][0] - current[0][0] < min_span:
        return None
    slope = _slope_per_second(current)
    if slope is None:
        return None
    per_hour = -slope * _SECONDS_PER_HOUR
    if per_hour <= _FLAT_PER_HOUR:
        return None
    last_at, last_value = current[-1]
    # Projected from the latest reading, not from the fitted line: the fitted line lags a change
    # of rate, and "value / rate" then matches the balance the operator is shown.
    if last_value <= 0:
        return Forecast(per_hour=per_hour, empty_at=last_at)
    to_empty = last_value / per_hour * _SECONDS_PER_HOUR
    if to_empty > MAX_TIME_TO_EMPTY.total_seconds():
        return None
    return Forecast(per_hour=per_hour, empty_at=last_at + timedelta(seconds=to_empty))


def min_span_for(poll_interval: timedelta) -> timedelta:
    """MIN_SPAN, or six polls when polling is fast (staging, the demo, tests), whichever is less.

    Six polls still average over more than one reading's rounding, and a demo that polls every
    few seconds should not wait half an hour for its first forecast.
    """
    return min(MIN_SPAN, poll_interval * 6)


def forecast_all(
    history: Mapping[QuotaType, Sequence[Point]],
    now: datetime,
    *,
    min_points: int = MIN_POINTS,
    min_span: timedelta = MIN_SPAN,
    lookback: timedelta | None = LOOKBACK,
) -> dict[QuotaType, Forecast]:
    """The forecast of every type that has one; types without are absent."""
    result: dict[QuotaType, Forecast] = {}
    for quota_type, points in history.items():
        found = forecast(points, now, min_points=min_points, min_span=min_span, lookback=lookback)
        if found is not None:
            result[quota_type] = found
    return result


def _typical_step(ordered: Sequence[Point]) -> float:
    # The median ignores the few top-ups and odd readings that we are trying to find.
    steps = [abs(b[1] - a[1]) for a, b in itertools.pairwise(ordered)]
    return float(statistics.median(steps)) if steps else 0.0


def _rise_tolerance(before: int, typical_step: float) -> float:
    return max(_TOPUP_MIN_STEPS * typical_step, _TOPUP_MIN_SHARE * before)


def _slope_per_second(points: Sequence[Point]) -> float | None:
    origin = points[0][0]
    xs = [(at - origin).total_seconds() for at, _ in points]
    ys = [float(value) for _, value in points]
    x_mean = statistics.fmean(xs)
    y_mean = statistics.fmean(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    if sxx <= 0:
        return None
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx
