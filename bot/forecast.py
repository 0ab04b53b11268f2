"""Burn rate, time-to-empty, sudden drops and unusual burn of a quota series, kept as running state.

Pure: `advance(state, at, value)` folds one reading into a `SeriesState`; `forecast_of`,
`drop_of` and `burn_of` read the state. Nothing here touches a clock, a store or the network, so
a replica that rebuilds the state from the stored history (`rebuild`) gets the same state the
poller built one reading at a time.

How the burn rate is measured, and why this way
-----------------------------------------------
Sending only ever lowers a quota, yet not every fall is sending: moving quota from the account
pool to an app, or one bulk campaign, drops a series in one poll. A least-squares line through
such a step (Prometheus' `predict_linear`) reads it as a steady burn: 100,000 -> 20,000 followed
by 2 a second was forecast at 16 million an hour. Candidates were run against the same cases
(`bench/forecast_candidates.py`: steps, several steps, bulk send then silence, drain/top-up/drain,
noise, gaps):

- Theil-Sen (median of pairwise slopes) over the falling segment: robust to odd *points* but not
  to a *level shift*: once the readings after a step are about as many as those before it, half
  of all pairs straddle the step and the median slope is the step's (120/h read as 16,000/h; with
  several steps or after a gap, at once). It also costs O(n log n) a cycle.
- Restarting the segment at a step: right once the new segment is long enough, but until then
  (`MIN_POINTS`, `MIN_SPAN`) there is no forecast at all, just when the operator looks at it.
- Splicing (chosen): a step is cut out of the series (the later readings are shifted up by the
  step, less the drain expected over that poll) and the line continues across it. The rate
  after a step is the steady drain on both sides at once, the forecast never disappears, and the
  fit stays a running sum.

Of the nine cases, splicing gets 9 right, restarting 8, Theil-Sen 5, plain least squares 2.

A drop is a *step* when it is far larger than the usual drop per poll of the series: more than
`STEP_FACTOR` times the median rate of the last `TYPICAL_WINDOW` judged polls times the poll's
length (so a poll after a gap is not a step), and at least 1 % of the value. Like a rise (a
top-up), a step is judged one poll late: the next reading must fall back to the usual rate. If the
large drops go on for more than `MAX_STEP_POLLS` polls they are burn (the rate really changed,
e.g. SMS pumping), and are counted as such. A rise the next reading keeps is a top-up and starts
a new segment; a rise the next reading does not keep is an odd reading and is left out.

Running state and cost
----------------------
The fit is least squares over the segment's readings of the last `LOOKBACK`, with the reading
times as x so irregular polling and gaps weigh correctly. Its sufficient statistics (n, sums of
x, y, x², xy) are kept per hour of the window, so adding a reading and dropping the oldest hour
are O(1); the window is whole hours (between `LOOKBACK` and `LOOKBACK` + 1 hour). Burn is kept
per minute for the last hour (the "last hour's burn") and per hour for `BURN_DAYS` days (the
median "usual" hourly burn), so the anomaly check is O(1) too. A cycle's cost does not depend on
how much history is stored.
"""

from __future__ import annotations

import json
import math
import statistics
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
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

# A drop more than ten times the usual drop for the poll's length is a step, not burn: noisy
# sending varies by a factor of two or three from poll to poll, an allocation or a campaign by
# orders of magnitude.
STEP_FACTOR = 10.0
# ... and it must be at least 1 % of the value (and 10 units): smaller "steps" would not move the
# forecast anyway, and a series that just started draining has no usual rate yet.
STEP_MIN_SHARE = 0.01
STEP_MIN_UNITS = 10
# Large drops in more polls in a row than this are a faster burn, not a step.
MAX_STEP_POLLS = 2
# The usual rate is the median over this many judged polls: long enough to ignore a few odd
# polls, short enough to follow a change of rate within a couple of hours at a 5-minute poll.
TYPICAL_WINDOW = 16
# A rise smaller than this share of the value is noise (e.g. refunded messages), not a top-up:
# a top-up that small would not change the forecast anyway.
_TOPUP_MIN_SHARE = 0.01
# ... and a rise within this many usual drops of the series is noise too.
_TOPUP_MIN_STEPS = 3

# Burning faster than usual: the last hour against the median hour of the last week, judged only
# with at least a day of hours to take the median of (a week covers both weekdays and weekends).
BURN_DAYS = 7
MIN_USUAL_HOURS = 24
# An hour counts towards the usual burn only if half of it was observed (the bot was up).
_MIN_HOUR_COVERAGE = 1800.0

_HOUR = 3600.0
_MINUTE = 60.0
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


# --- least squares from running sums ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sums:
    """Sufficient statistics of a least-squares line; x in seconds from the segment's start."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float) -> Sums:
        return Sums(self.n + 1, self.sx + x, self.sy + y, self.sxx + x * x, self.sxy + x * y)

    def plus(self, other: Sums) -> Sums:
        return Sums(
            self.n + other.n,
            self.sx + other.sx,
            self.sy + other.sy,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
        )

    def minus(self, other: Sums) -> Sums:
        return Sums(
            self.n - other.n,
            self.sx - other.sx,
            self.sy - other.sy,
            self.sxx - other.sxx,
            self.sxy - other.sxy,
        )

    def slope(self) -> float | None:
        if self.n < 2:
            return None
        sxx = self.sxx - self.sx * self.sx / self.n
        # Relative to the spread of x: below this the points share one time (up to rounding).
        if sxx <= 1e-9 * max(1.0, self.sxx):
            return None
        return (self.sxy - self.sx * self.sy / self.n) / sxx


@dataclass(frozen=True, slots=True)
class _Hour:
    """The segment's readings of one hour: their sums and the first one's time."""

    index: int  # hours since the epoch
    sums: Sums
    first_at: float


# --- the state --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesState:
    """Everything remembered about one (scope, type) series between readings."""

    # The latest reading and the one before it, as read (sudden drops compare these).
    at: float
    value: int
    prev_at: float | None = None
    prev_value: int | None = None
    # The last judged reading: the end of the fitted line.
    judged_at: float = 0.0
    judged_value: int = 0
    judged_y: float = 0.0  # its value with the steps before it cut out
    # Readings after it not judged yet: an unconfirmed rise (one) or drops (up to MAX_STEP_POLLS).
    pending: tuple[tuple[float, int], ...] = ()
    # The segment: its start, and the shift applied to readings after the steps cut out of it
    # (y = value + shift - origin_value).
    origin_at: float = 0.0
    origin_value: int = 0
    shift: float = 0.0
    # The fit: completed hours of the window, their total, and the current hour.
    hours: tuple[_Hour, ...] = ()
    window: Sums = field(default_factory=Sums)
    current: _Hour | None = None
    lookback_hours: int | None = 48
    # Usual rate: the last judged polls' rates, units per second.
    rates: tuple[float, ...] = ()
    # Burn per minute over the last hour (slot = minute % 60) and the minute of the newest slot.
    minutes: array[float] = field(default_factory=lambda: array("d", bytes(8 * 60)))
    minute: int = 0
    # The current hour's burn and the seconds of it observed; completed hours' rates per hour.
    burn_hour: int = 0
    burn_hour_units: float = 0.0
    burn_hour_seconds: float = 0.0
    burn_hours: array[int] = field(default_factory=lambda: array("q"))
    burn_rates: array[float] = field(default_factory=lambda: array("d"))
    usual: float | None = None  # median of burn_rates, when there are enough of them


def start(at: datetime, value: int, *, lookback: timedelta | None = LOOKBACK) -> SeriesState:
    """The state of a series whose first reading is `value` at `at`."""
    t = at.timestamp()
    hours = None if lookback is None else max(1, math.ceil(lookback / timedelta(hours=1)))
    first = _Hour(_hour(t), Sums().add(0.0, 0.0), t)
    return SeriesState(
        at=t,
        value=value,
        judged_at=t,
        judged_value=value,
        judged_y=float(value),
        origin_at=t,
        origin_value=value,
        current=first,
        lookback_hours=hours,
        minute=_minute(t),
        burn_hour=_hour(t),
    )


def advance(
    state: SeriesState | None,
    at: datetime,
    value: int,
    *,
    lookback: timedelta | None = LOOKBACK,
) -> SeriesState:
    """The state after one more reading. Readings not newer than the last one are ignored."""
    if state is None:
        return start(at, value, lookback=lookback)
    t = at.timestamp()
    if t <= state.at:
        return state
    moved = replace(state, prev_at=state.at, prev_value=state.value, at=t, value=value)
    return _judge(moved, t, value)


def rebuild(
    points: Iterable[Point], *, lookback: timedelta | None = LOOKBACK
) -> SeriesState | None:
    """The state after the stored history: what the poller built one reading at a time."""
    state: SeriesState | None = None
    for at, value in sorted(points, key=lambda point: point[0]):
        state = advance(state, at, value, lookback=lookback)
    return state


# --- judging readings -----------------------------------------------------------------------


def _judge(state: SeriesState, t: float, value: int) -> SeriesState:
    if not state.pending:
        return _judge_against_last(state, t, value)
    if state.pending[0][1] > state.judged_value:
        rise_at, rise_value = state.pending[0]
        if value > state.judged_value:
            # The next reading kept the rise: a top-up. The segment starts again at it.
            return _judge_against_last(_restart(state, rise_at, rise_value), t, value)
        # The next reading fell back: the rise was an odd reading, left out.
        return _judge_against_last(replace(state, pending=()), t, value)
    last_at, last_value = state.pending[-1]
    if value - last_value > _rise_tolerance(state, last_at, t, last_value):
        if not _step_like(state, state.judged_at, state.judged_value, t, value):
            # Back near the level before the drops: they were odd low readings.
            return _judge_against_last(replace(state, pending=()), t, value)
        return _judge_against_last(_splice(state), t, value)
    if not _step_like(state, last_at, last_value, t, value):
        # The drain is back to its usual rate: the drops before were one step.
        return _judge_against_last(_splice(state), t, value)
    if len(state.pending) < MAX_STEP_POLLS:
        return replace(state, pending=(*state.pending, (t, value)))
    # Large drops poll after poll: the burn really is faster. They all count.
    for at, pending_value in state.pending:
        state = _commit(state, at, pending_value)
    return _commit(replace(state, pending=()), t, value)


def _judge_against_last(state: SeriesState, t: float, value: int) -> SeriesState:
    judged_at, judged_value = state.judged_at, state.judged_value
    if value - judged_value > _rise_tolerance(state, judged_at, t, judged_value):
        return replace(state, pending=((t, value),))
    if _step_like(state, judged_at, judged_value, t, value):
        return replace(state, pending=((t, value),))
    return _commit(state, t, value)


def _typical_rate(state: SeriesState) -> float | None:
    return statistics.median(state.rates) if state.rates else None


def _rise_tolerance(state: SeriesState, before_at: float, t: float, before: int) -> float:
    typical = _typical_rate(state) or 0.0
    return max(_TOPUP_MIN_STEPS * typical * (t - before_at), _TOPUP_MIN_SHARE * before)


def _step_like(state: SeriesState, before_at: float, before: int, t: float, value: int) -> bool:
    typical = _typical_rate(state)
    if typical is None:
        # Nothing usual to compare with yet (the series' first poll): burn.
        return False
    bar = max(
        STEP_FACTOR * typical * (t - before_at), STEP_MIN_SHARE * before, float(STEP_MIN_UNITS)
    )
    return before - value > bar


def _splice(state: SeriesState) -> SeriesState:
    """Cut the pending drops out of the segment: the last of them continues the line."""
    step_at, step_value = state.pending[-1]
    # A step is only recognised once there is a usual rate.
    expected = (_typical_rate(state) or 0.0) * (step_at - state.judged_at)
    cut = (state.judged_value - step_value) - expected
    spliced = replace(state, pending=(), shift=state.shift + cut)
    return _commit(spliced, step_at, step_value, count_rate=False)


def _restart(state: SeriesState, t: float, value: int) -> SeriesState:
    """A new segment from a top-up: the fit forgets the drained one; the burn record stays."""
    return replace(
        state,
        pending=(),
        judged_at=t,
        judged_value=value,
        judged_y=float(value),
        origin_at=t,
        origin_value=value,
        shift=0.0,
        hours=(),
        window=Sums(),
        current=_Hour(_hour(t), Sums().add(0.0, 0.0), t),
    )


def _commit(state: SeriesState, t: float, value: int, *, count_rate: bool = True) -> SeriesState:
    """Add a judged reading to the fit, the usual rate and the burn record."""
    before_at, before_y = state.judged_at, state.judged_y
    y = value + state.shift
    dt = t - before_at
    rates = state.rates
    if count_rate and dt > 0:
        rates = (*rates[-(TYPICAL_WINDOW - 1) :], abs(before_y - y) / dt)
    fitted = _fit_add(state, t, y - state.origin_value)
    burned = _burn_add(fitted, before_at, t, before_y - y)
    return replace(burned, judged_at=t, judged_value=value, judged_y=y, rates=rates)


def _fit_add(state: SeriesState, t: float, y: float) -> SeriesState:
    x = t - state.origin_at
    hour = _hour(t)
    current = state.current
    if current is not None and current.index == hour:
        return replace(state, current=replace(current, sums=current.sums.add(x, y)))
    hours, window = state.hours, state.window
    if current is not None and current.sums.n:
        hours, window = (*hours, current), window.plus(current.sums)
    if state.lookback_hours is not None:
        oldest = hour - state.lookback_hours
        dropped = 0
        while dropped < len(hours) and hours[dropped].index < oldest:
            window = window.minus(hours[dropped].sums)
            dropped += 1
        hours = hours[dropped:]
        if not hours:
            window = Sums()  # exact zero instead of the rounding left by the subtractions
    return replace(state, hours=hours, window=window, current=_Hour(hour, Sums().add(x, y), t))


def _burn_add(state: SeriesState, t0: float, t1: float, units: float) -> SeriesState:
    """Spread the burn of one judged poll evenly over the minutes and hours it spans."""
    if t1 <= t0:
        return state
    per_second = units / (t1 - t0)
    # Minutes: only the last hour is kept.
    minutes = array("d", state.minutes)
    newest = _minute(t1)
    for minute in range(state.minute + 1, min(newest, state.minute + 60) + 1):
        minutes[minute % 60] = 0.0
    first_minute = max(_minute(t0), newest - 59)
    for minute in range(first_minute, newest + 1):
        overlap = _overlap(t0, t1, minute * _MINUTE, (minute + 1) * _MINUTE)
        minutes[minute % 60] += per_second * overlap
    state = replace(state, minutes=minutes, minute=max(state.minute, newest))
    # Hours: completed ones become rates for the usual burn.
    first_hour = max(_hour(t0), _hour(t1) - BURN_DAYS * 24)
    for hour in range(first_hour, _hour(t1) + 1):
        overlap = _overlap(t0, t1, hour * _HOUR, (hour + 1) * _HOUR)
        if hour > state.burn_hour:
            state = _close_burn_hour(state, hour)
        if hour == state.burn_hour:
            state = replace(
                state,
                burn_hour_units=state.burn_hour_units + per_second * overlap,
                burn_hour_seconds=state.burn_hour_seconds + overlap,
            )
    return state


def _close_burn_hour(state: SeriesState, new_hour: int) -> SeriesState:
    hours = array("q", state.burn_hours)
    rates = array("d", state.burn_rates)
    if state.burn_hour_seconds >= _MIN_HOUR_COVERAGE:
        hours.append(state.burn_hour)
        rates.append(max(0.0, state.burn_hour_units) / state.burn_hour_seconds * _HOUR)
    oldest = new_hour - BURN_DAYS * 24
    keep = 0
    while keep < len(hours) and hours[keep] < oldest:
        keep += 1
    if keep:
        hours, rates = hours[keep:], rates[keep:]
    usual = statistics.median(rates) if len(rates) >= MIN_USUAL_HOURS else None
    return replace(
        state,
        burn_hours=hours,
        burn_rates=rates,
        usual=usual,
        burn_hour=new_hour,
        burn_hour_units=0.0,
        burn_hour_seconds=0.0,
    )


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _hour(t: float) -> int:
    return math.floor(t / _HOUR)


def _minute(t: float) -> int:
    return math.floor(t / _MINUTE)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# --- what the state says ------------------------------------------------------------------


def forecast_of(
    state: SeriesState | None,
    *,
    min_points: int = MIN_POINTS,
    min_span: timedelta = MIN_SPAN,
) -> Forecast | None:
    """Burn rate and projected exhaustion, or None when too little history or not falling."""
    if state is None or state.current is None:
        return None
    sums = state.window.plus(state.current.sums)
    first_at = state.hours[0].first_at if state.hours else state.current.first_at
    if sums.n < max(min_points, 2) or state.judged_at - first_at < min_span.total_seconds():
        return None
    slope = sums.slope()
    if slope is None:
        return None
    per_hour = -slope * _HOUR
    if per_hour <= _FLAT_PER_HOUR:
        return None
    # Projected from the latest reading, not from the fitted line: the fitted line lags a change
    # of rate, and "value / rate" then matches the balance the operator is shown. Readings not
    # judged yet count only if lower: an unconfirmed rise must not postpone the projection, an
    # unconfirmed drop must not hide it.
    last_at, last_value = state.judged_at, state.judged_value
    for at, value in state.pending:
        if value < last_value:
            last_at, last_value = at, value
    if last_value <= 0:
        return Forecast(per_hour=per_hour, empty_at=_dt(last_at))
    to_empty = last_value / per_hour * _HOUR
    if to_empty > MAX_TIME_TO_EMPTY.total_seconds():
        return None
    return Forecast(per_hour=per_hour, empty_at=_dt(last_at + to_empty))


@dataclass(frozen=True, slots=True)
class Drop:
    """How much a series lost between its last two readings."""

    amount: int
    percent: float
    seconds: float  # between the two readings


def drop_of(state: SeriesState | None) -> Drop | None:
    """The fall from the previous reading to the latest one, if it fell."""
    if state is None or state.prev_value is None or state.prev_at is None:
        return None
    amount = state.prev_value - state.value
    if amount <= 0 or state.prev_value <= 0:
        return None
    return Drop(
        amount=amount,
        percent=amount / state.prev_value * 100,
        seconds=state.at - state.prev_at,
    )


@dataclass(frozen=True, slots=True)
class Burn:
    """The last hour's burn against the usual hourly burn of the last week."""

    last_hour: float
    usual: float

    @property
    def ratio(self) -> float:
        return self.last_hour / self.usual


def burn_of(state: SeriesState | None) -> Burn | None:
    """None until a day of hours is known, or when the series usually burns nothing."""
    if state is None or state.usual is None or state.usual <= 0:
        return None
    return Burn(last_hour=max(0.0, math.fsum(state.minutes)), usual=state.usual)


# --- from a list of points (check, tests) ---------------------------------------------------


def forecast(
    points: Sequence[Point],
    now: datetime,
    *,
    min_points: int = MIN_POINTS,
    min_span: timedelta = MIN_SPAN,
    lookback: timedelta | None = LOOKBACK,
) -> Forecast | None:
    """The forecast after these points (any order), counting only those from `now - lookback` on.

    Points stamped after `now` are kept: a cycle may take its `now` just before the reading it
    evaluates is stamped.
    """
    recent = [p for p in points if lookback is None or p[0] >= now - lookback]
    return forecast_of(rebuild(recent, lookback=lookback), min_points=min_points, min_span=min_span)


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
