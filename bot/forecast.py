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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from bot.quota import QuotaType

Point = tuple[datetime, int]
T = TypeVar("T")

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
    return _encode_by_scope(forecasts)


def decode_forecasts(raw: str | None) -> Forecasts:
    """The stored forecasts; nothing (rather than an error) when absent or unreadable."""
    return _decode_by_scope(raw, Forecast.from_json)


class _Json(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def _encode_by_scope(values: Mapping[str, Mapping[QuotaType, _Json]]) -> str:
    return json.dumps(
        {s: {t.value: v.to_json() for t, v in vs.items()} for s, vs in values.items()},
        separators=(",", ":"),
    )


def _decode_by_scope(
    raw: str | None, from_json: Callable[[Mapping[str, Any]], T]
) -> dict[str, dict[QuotaType, T]]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {s: {QuotaType(t): from_json(v) for t, v in vs.items()} for s, vs in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
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


@dataclass(slots=True)
class SeriesState:
    """Everything remembered about one (scope, type) series between readings.

    A value: `advance` returns a new state and never changes the one it was given (only the
    functions of this module write to a state, and only to a copy they just made).
    """

    # The latest reading and the one before it, as read (sudden drops compare these).
    at: float
    value: int
    prev_at: float | None = None
    prev_value: int | None = None
    prev_typical: float | None = None  # the usual rate before the latest reading
    # The last judged reading: the end of the fitted line, and its value with steps cut out.
    judged_at: float = 0.0
    judged_value: int = 0
    judged_y: float = 0.0
    # Readings after it not judged yet: an unconfirmed rise (one) or drops (up to MAX_STEP_POLLS).
    pending: tuple[tuple[float, int], ...] = ()
    # The segment: its start, and the shift applied to readings after the steps cut out of it
    # (y = value + shift - origin_value).
    origin_at: float = 0.0
    origin_value: int = 0
    shift: float = 0.0
    # The fit: completed hours of the window and their total, then the current hour's sums.
    lookback_hours: int | None = 48
    hours: tuple[_Hour, ...] = ()
    window: Sums = field(default_factory=Sums)
    hour: int = 0
    hour_first_at: float = 0.0
    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    # Usual rate: the last judged polls' rates (units per second) and their median.
    rates: tuple[float, ...] = ()
    typical: float | None = None
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

    def _copy(self) -> SeriesState:
        # The minute ring is written in place, so each state has its own; the hour arrays are
        # replaced, never written, when an hour closes, so states may share them.
        return SeriesState(
            at=self.at,
            value=self.value,
            prev_at=self.prev_at,
            prev_value=self.prev_value,
            prev_typical=self.prev_typical,
            judged_at=self.judged_at,
            judged_value=self.judged_value,
            judged_y=self.judged_y,
            pending=self.pending,
            origin_at=self.origin_at,
            origin_value=self.origin_value,
            shift=self.shift,
            lookback_hours=self.lookback_hours,
            hours=self.hours,
            window=self.window,
            hour=self.hour,
            hour_first_at=self.hour_first_at,
            n=self.n,
            sx=self.sx,
            sy=self.sy,
            sxx=self.sxx,
            sxy=self.sxy,
            rates=self.rates,
            typical=self.typical,
            minutes=array("d", self.minutes),
            minute=self.minute,
            burn_hour=self.burn_hour,
            burn_hour_units=self.burn_hour_units,
            burn_hour_seconds=self.burn_hour_seconds,
            burn_hours=self.burn_hours,
            burn_rates=self.burn_rates,
            usual=self.usual,
        )

    def _current(self) -> Sums:
        return Sums(self.n, self.sx, self.sy, self.sxx, self.sxy)


def start(at: datetime, value: int, *, lookback: timedelta | None = LOOKBACK) -> SeriesState:
    """The state of a series whose first reading is `value` at `at`."""
    t = at.timestamp()
    hours = None if lookback is None else max(1, math.ceil(lookback / timedelta(hours=1)))
    return SeriesState(
        at=t,
        value=value,
        judged_at=t,
        judged_value=value,
        judged_y=float(value),
        origin_at=t,
        origin_value=value,
        lookback_hours=hours,
        hour=_hour(t),
        hour_first_at=t,
        n=1,
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
    new = state._copy()
    _read(new, t, value)
    return new


def rebuild(
    points: Iterable[Point], *, lookback: timedelta | None = LOOKBACK
) -> SeriesState | None:
    """The state after the stored history: what the poller built one reading at a time."""
    ordered = sorted(points, key=lambda point: point[0])
    if not ordered:
        return None
    # One private copy written in place: the same result as advancing reading by reading.
    state = start(*ordered[0], lookback=lookback)
    for at, value in ordered[1:]:
        t = at.timestamp()
        if t > state.at:
            _read(state, t, value)
    return state


# --- judging readings (each writes to the state it is given: a private copy) ------------------


def _read(s: SeriesState, t: float, value: int) -> None:
    s.prev_at, s.prev_value, s.at, s.value = s.at, s.value, t, value
    s.prev_typical = s.typical
    if not s.pending:
        _judge_against_last(s, t, value)
        return
    if s.pending[0][1] > s.judged_value:
        rise_at, rise_value = s.pending[0]
        s.pending = ()
        if value > s.judged_value:
            # The next reading kept the rise: a top-up. The segment starts again at it.
            _restart(s, rise_at, rise_value)
        # else the next reading fell back: the rise was an odd reading, left out.
        _judge_against_last(s, t, value)
        return
    last_at, last_value = s.pending[-1]
    if value - last_value > _rise_tolerance(s, last_at, t, last_value):
        if not _step_like(s, s.judged_at, s.judged_value, t, value):
            # Back near the level before the drops: they were odd low readings.
            s.pending = ()
        else:
            _splice(s)
        _judge_against_last(s, t, value)
        return
    if not _step_like(s, last_at, last_value, t, value):
        # The drain is back to its usual rate: the drops before were one step.
        _splice(s)
        _judge_against_last(s, t, value)
        return
    if len(s.pending) < MAX_STEP_POLLS:
        s.pending = (*s.pending, (t, value))
        return
    # Large drops poll after poll: the burn really is faster. They all count.
    pending, s.pending = s.pending, ()
    for at, pending_value in pending:
        _commit(s, at, pending_value)
    _commit(s, t, value)


def _judge_against_last(s: SeriesState, t: float, value: int) -> None:
    if value - s.judged_value > _rise_tolerance(s, s.judged_at, t, s.judged_value) or _step_like(
        s, s.judged_at, s.judged_value, t, value
    ):
        s.pending = ((t, value),)
    else:
        _commit(s, t, value)


def _rise_tolerance(s: SeriesState, before_at: float, t: float, before: int) -> float:
    typical = s.typical or 0.0
    return max(_TOPUP_MIN_STEPS * typical * (t - before_at), _TOPUP_MIN_SHARE * before)


def _step_like(s: SeriesState, before_at: float, before: int, t: float, value: int) -> bool:
    if s.typical is None:
        # Nothing usual to compare with yet (the series' first poll): burn.
        return False
    bar = max(
        STEP_FACTOR * s.typical * (t - before_at),
        STEP_MIN_SHARE * before,
        float(STEP_MIN_UNITS),
    )
    return before - value > bar


def _splice(s: SeriesState) -> None:
    """Cut the pending drops out of the segment: the last of them continues the line."""
    step_at, step_value = s.pending[-1]
    s.pending = ()
    expected = (s.typical or 0.0) * (step_at - s.judged_at)
    s.shift += (s.judged_value - step_value) - expected
    _commit(s, step_at, step_value, count_rate=False)


def _restart(s: SeriesState, t: float, value: int) -> None:
    """A new segment from a top-up: the fit forgets the drained one; the burn record stays."""
    s.judged_at, s.judged_value, s.judged_y = t, value, float(value)
    s.origin_at, s.origin_value, s.shift = t, value, 0.0
    s.hours, s.window = (), Sums()
    s.hour, s.hour_first_at = _hour(t), t
    s.n, s.sx, s.sy, s.sxx, s.sxy = 1, 0.0, 0.0, 0.0, 0.0


def _commit(s: SeriesState, t: float, value: int, *, count_rate: bool = True) -> None:
    """Add a judged reading to the fit, the usual rate and the burn record."""
    before_at, before_y = s.judged_at, s.judged_y
    y = value + s.shift
    if count_rate:
        s.rates = (*s.rates[-(TYPICAL_WINDOW - 1) :], abs(before_y - y) / (t - before_at))
        s.typical = _median(s.rates)
    _fit_add(s, t, y - s.origin_value)
    _burn_add(s, before_at, t, before_y - y)
    s.judged_at, s.judged_value, s.judged_y = t, value, y


def _fit_add(s: SeriesState, t: float, y: float) -> None:
    x = t - s.origin_at
    hour = _hour(t)
    if hour != s.hour:
        if s.n:
            s.hours = (*s.hours, _Hour(s.hour, s._current(), s.hour_first_at))
            s.window = s.window.plus(s.hours[-1].sums)
        if s.lookback_hours is not None:
            oldest = hour - s.lookback_hours
            dropped = 0
            while dropped < len(s.hours) and s.hours[dropped].index < oldest:
                s.window = s.window.minus(s.hours[dropped].sums)
                dropped += 1
            if dropped:
                s.hours = s.hours[dropped:]
            if not s.hours:
                s.window = Sums()  # exact zero instead of the rounding the subtractions leave
        s.hour, s.hour_first_at = hour, t
        s.n, s.sx, s.sy, s.sxx, s.sxy = 0, 0.0, 0.0, 0.0, 0.0
    s.n += 1
    s.sx += x
    s.sy += y
    s.sxx += x * x
    s.sxy += x * y


def _burn_add(s: SeriesState, t0: float, t1: float, units: float) -> None:
    """Spread the burn of one judged poll evenly over the minutes and hours it spans."""
    per_second = units / (t1 - t0)
    # Minutes: only the last hour is kept (the state's own copy of the ring: see _copy).
    minutes = s.minutes
    newest = _minute(t1)
    for minute in range(s.minute + 1, min(newest, s.minute + 60) + 1):
        minutes[minute % 60] = 0.0
    s.minute = max(s.minute, newest)
    first = max(_minute(t0), newest - 59)
    begin = max(t0, first * _MINUTE)
    for minute in range(first, newest + 1):
        end = min(t1, (minute + 1) * _MINUTE)
        minutes[minute % 60] += per_second * (end - begin)
        begin = end
    # Hours: completed ones become rates for the usual burn.
    first_hour, last_hour = _hour(t0), _hour(t1)
    if first_hour == last_hour == s.burn_hour:
        s.burn_hour_units += units
        s.burn_hour_seconds += t1 - t0
        return
    for hour in range(max(first_hour, last_hour - BURN_DAYS * 24), last_hour + 1):
        if hour > s.burn_hour:
            _close_burn_hour(s, hour)
        if hour == s.burn_hour:
            overlap = min(t1, (hour + 1) * _HOUR) - max(t0, hour * _HOUR)
            s.burn_hour_units += per_second * overlap
            s.burn_hour_seconds += overlap


def _close_burn_hour(s: SeriesState, new_hour: int) -> None:
    hours, rates = array("q", s.burn_hours), array("d", s.burn_rates)
    if s.burn_hour_seconds >= _MIN_HOUR_COVERAGE:
        hours.append(s.burn_hour)
        rates.append(max(0.0, s.burn_hour_units) / s.burn_hour_seconds * _HOUR)
    oldest = new_hour - BURN_DAYS * 24
    keep = 0
    while keep < len(hours) and hours[keep] < oldest:
        keep += 1
    if keep:
        hours, rates = hours[keep:], rates[keep:]
    s.burn_hours, s.burn_rates = hours, rates
    s.usual = statistics.median(rates) if len(rates) >= MIN_USUAL_HOURS else None
    s.burn_hour, s.burn_hour_units, s.burn_hour_seconds = new_hour, 0.0, 0.0


def _median(values: Sequence[float]) -> float:
    # statistics.median without its generality: this runs for every reading.
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
    if state is None:
        return None
    sums = state.window.plus(state._current())
    first_at = state.hours[0].first_at if state.hours else state.hour_first_at
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
    # What the series' usual pace burns in those seconds (None before it has a usual pace).
    usual: float | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "amount": self.amount,
            "percent": self.percent,
            "seconds": self.seconds,
        }
        if self.usual is not None:
            found["usual"] = self.usual
        return found

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Drop:
        usual = data.get("usual")
        return cls(
            int(data["amount"]),
            float(data["percent"]),
            float(data["seconds"]),
            None if usual is None else float(usual),
        )


def drop_of(state: SeriesState | None) -> Drop | None:
    """The fall from the previous reading to the latest one, if it fell."""
    if state is None or state.prev_value is None or state.prev_at is None:
        return None
    amount = state.prev_value - state.value
    if amount <= 0 or state.prev_value <= 0:
        return None
    seconds = state.at - state.prev_at
    return Drop(
        amount=amount,
        percent=amount / state.prev_value * 100,
        seconds=seconds,
        usual=None if state.prev_typical is None else state.prev_typical * seconds,
    )


@dataclass(frozen=True, slots=True)
class Burn:
    """The last hour's burn against the usual hourly burn of the last week."""

    last_hour: float  # units burnt over the last hour
    usual: float  # the median hour of the last week, units per hour

    @property
    def ratio(self) -> float:
        return self.last_hour / self.usual

    def to_json(self) -> dict[str, Any]:
        return {"last_hour": self.last_hour, "usual": self.usual}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Burn:
        return cls(float(data["last_hour"]), float(data["usual"]))


Burns = dict[str, dict[QuotaType, Burn]]


def encode_burns(burns: Mapping[str, Mapping[QuotaType, Burn]]) -> str:
    return _encode_by_scope(burns)


def decode_burns(raw: str | None) -> Burns:
    """The stored burn figures; nothing (rather than an error) when absent or unreadable."""
    return _decode_by_scope(raw, Burn.from_json)


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


def history_needed(*, burn: bool) -> timedelta:
    """How much stored history rebuilds a series' state: the fit's window, and the week of
    hours the usual burn is the median of when that check is on (an hour more for the
    window's partial hour)."""
    days = max(LOOKBACK, timedelta(days=BURN_DAYS)) if burn else LOOKBACK
    return days + timedelta(hours=1)


def min_span_for(poll_interval: timedelta) -> timedelta:
    """MIN_SPAN, or six polls when polling is fast (staging, the demo, tests), whichever is less.

    Six polls still average over more than one reading's rounding, and a demo that polls every
    few seconds should not wait half an hour for its first forecast.
    """
    return min(MIN_SPAN, poll_interval * 6)
