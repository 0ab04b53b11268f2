"""bot.forecast: burn rate and time-to-empty from history (pure, table tests + properties)."""

from __future__ import annotations

import random
import statistics
from array import array
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from builders import NOW, Points, Q, drain, history
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot import forecast as forecasting
from bot.forecast import MIN_POINTS, MIN_SPAN, forecast, min_span_for

T0 = NOW


def series(values: list[int], *, every: timedelta = timedelta(minutes=5)) -> Points:
    return history(values, start=T0, every=every)


def at_minutes(pairs: list[tuple[float, int]]) -> Points:
    return [(T0 + timedelta(minutes=m), v) for m, v in pairs]


def noisy_drain() -> list[int]:
    rng = random.Random(20260301)
    return [round(10_000 - 10 * i + rng.gauss(0, 5)) for i in range(60)]


def last_now(points: Points) -> datetime:
    return max(at for at, _ in points)


# Every 5 minutes, 10 units a step: 120 units an hour.
STEADY = series(drain(10_000, 10, 24))
TOPPED_UP = series(drain(3_000, 100, 20) + drain(50_000, 10, 12))
SPIKED = series([*drain(10_000, 10, 12), 15_000, *drain(9_870, 10, 12)])
GAPPY = at_minutes([(m, 10_000 - 2 * m) for m in (0, 5, 10, 60, 65, 180, 185, 300, 420)])


@pytest.mark.parametrize(
    ("points", "per_hour", "tolerance"),
    [
        pytest.param(STEADY, 120.0, 0.05, id="steady-drain"),
        pytest.param(TOPPED_UP, 120.0, 0.05, id="top-up-starts-a-new-segment"),
        pytest.param(series(noisy_drain()), 120.0, 0.10, id="noisy-drain"),
        pytest.param(GAPPY, 120.0, 0.01, id="gaps-use-time-not-index"),
        pytest.param(SPIKED, 120.0, 0.05, id="lone-spike-is-ignored"),
        pytest.param(
            series([*drain(10_000, 10, 12), 9_895, *drain(9_870, 10, 12)]),
            120.0,
            0.05,
            id="small-rise-is-noise",
        ),
    ],
)
def test_burn_rate(points: Points, per_hour: float, tolerance: float) -> None:
    found = forecast(points, last_now(points))
    assert found is not None
    assert found.per_hour == pytest.approx(per_hour, rel=tolerance)
    last_at, last_value = max(points)
    # Projected from the latest reading at the fitted rate.
    expected = last_at + timedelta(hours=last_value / found.per_hour)
    assert abs((found.empty_at - expected).total_seconds()) < 1


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(series([5_000] * 20), id="flat"),
        pytest.param(series([100 + 10 * i for i in range(20)]), id="rising"),
        pytest.param(
            series(drain(10_000, 10, MIN_POINTS - 1), every=timedelta(hours=1)),
            id="fewer-than-min-points",
        ),
        pytest.param(
            series(drain(10_000, 10, 20), every=timedelta(minutes=1)),
            id="span-shorter-than-min-span",
        ),
        pytest.param(
            series(drain(3_000, 100, 20) + drain(50_000, 10, 3)), id="too-little-since-the-top-up"
        ),
        pytest.param([], id="no-history"),
        pytest.param(series([0] * 10), id="flat-at-zero"),
    ],
)
def test_no_forecast(points: Points) -> None:
    assert forecast(points, last_now(points) if points else T0) is None


def test_reaching_zero_is_empty_at_that_reading() -> None:
    points = series([400, 300, 200, 100, 0], every=timedelta(minutes=10))
    found = forecast(points, last_now(points))
    assert found is not None
    assert found.per_hour == pytest.approx(600.0)
    assert found.empty_at == points[-1][0]


def test_top_up_segment_uses_only_points_after_it() -> None:
    now = last_now(TOPPED_UP)
    assert forecast(TOPPED_UP, now) == forecast(TOPPED_UP[20:], now)


def test_lone_spike_is_left_out_of_the_segment() -> None:
    now = last_now(SPIKED)
    assert forecast(SPIKED, now) == forecast(SPIKED[:12] + SPIKED[13:], now)


def test_unconfirmed_rise_in_last_reading_waits_for_the_next() -> None:
    before = series(drain(10_000, 10, 12))
    rise = (before[-1][0] + timedelta(minutes=5), 60_000)
    held = forecast([*before, rise], rise[0])
    assert held == forecast(before, rise[0])
    confirmed = [*before, rise, (rise[0] + timedelta(minutes=5), 59_990)]
    assert forecast(confirmed, confirmed[-1][0]) is None


def test_unsorted_and_duplicate_points_are_tolerated() -> None:
    shuffled = STEADY + STEADY[3:6]
    random.Random(7).shuffle(shuffled)
    found = forecast(shuffled, last_now(STEADY))
    assert found is not None
    assert found.per_hour == pytest.approx(120.0, rel=0.01)


def test_old_points_outside_the_lookback_are_ignored() -> None:
    old = series(drain(100_000, 1_000, 20))  # a fast drain, two weeks ago
    recent = [(at + timedelta(days=14), v) for at, v in STEADY]
    found = forecast(old + recent, last_now(recent))
    assert found is not None
    assert found.per_hour == pytest.approx(120.0, rel=0.01)


def test_minimums_can_be_lowered_for_short_demos() -> None:
    points = series(drain(1_000, 10, 3), every=timedelta(seconds=10))
    assert forecast(points, last_now(points)) is None
    found = forecast(points, last_now(points), min_points=3, min_span=timedelta(seconds=20))
    assert found is not None
    assert found.per_hour == pytest.approx(3600.0)


def test_min_span_is_sensible() -> None:
    assert timedelta(minutes=10) <= MIN_SPAN <= timedelta(hours=2)


# --- properties ------------------------------------------------------------------------


def _walk(start: int, moves: list[tuple[int, int]]) -> Points:
    points, minute, value = [(T0, start)], 0, start
    for gap, delta in moves:
        minute, value = minute + gap, max(0, value + delta)
        points.append((T0 + timedelta(minutes=minute), value))
    return points


# Arbitrary points, and walks that mostly drain with the odd top-up or spike (so that forecasts
# actually occur); both within 6 hours so the lookback keeps them all.
scattered = st.lists(
    st.tuples(st.integers(min_value=0, max_value=6 * 60), st.integers(0, 100_000)),
    max_size=40,
).map(lambda pairs: at_minutes([(float(m), v) for m, v in pairs]))
walks = st.builds(
    _walk,
    st.integers(0, 100_000),
    st.lists(
        st.tuples(
            st.integers(1, 9),
            st.one_of(st.integers(-200, 5), st.integers(-200, 0), st.integers(1, 50_000)),
        ),
        max_size=40,
    ),
)
histories = st.one_of(scattered, walks)


@settings(max_examples=200, deadline=None)
@given(histories)
def test_a_forecast_is_falling_and_not_in_the_past_of_its_data(points: Points) -> None:
    now = T0 + timedelta(hours=6)
    found = forecast(points, now)
    if found is None:
        return
    assert found.per_hour > 0
    assert found.empty_at >= min(at for at, _ in points)


@settings(max_examples=200, deadline=None)
@given(histories, st.randoms(use_true_random=False))
def test_the_order_of_the_input_does_not_matter(points: Points, rng: random.Random) -> None:
    # Distinct timestamps: equal ones have no order to recover.
    unique = list({at: (at, v) for at, v in points}.values())
    shuffled = list(unique)
    rng.shuffle(shuffled)
    now = T0 + timedelta(hours=6)
    assert forecast(shuffled, now) == forecast(sorted(unique), now)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 120), min_size=MIN_POINTS - 1, max_size=30),
    st.integers(1, 50),
    st.integers(0, 100_000),
)
def test_a_straight_drain_is_measured_exactly(gaps: list[int], per_minute: int, left: int) -> None:
    offsets = [sum(gaps[:i]) for i in range(len(gaps) + 1)]
    end = offsets[-1]
    points = at_minutes([(m, left + per_minute * (end - m)) for m in offsets])
    found = forecast(points, points[-1][0], min_span=timedelta(0), lookback=None)
    assert found is not None
    assert found.per_hour == pytest.approx(per_minute * 60, rel=1e-9)


# --- steps: a drop far larger than the usual drop per poll is not burn ------------------------

STEADY_PER_HOUR = 120.0  # 10 units every 5 minutes


def with_steps(before: int, after: list[tuple[int, int]], *, start: int = 100_000) -> list[int]:
    """`before` polls of the steady drain, then for each (step, polls): a step down and polls."""
    values = drain(start, 10, before)
    for step, polls in after:
        values.append(values[-1] - 10 - step)
        values.extend(drain(values[-1] - 10, 10, polls))
    return values


def noisy(values: list[int], seed: int) -> list[int]:
    rng = random.Random(seed)
    return [round(v + rng.gauss(0, 3)) for v in values]


@pytest.mark.parametrize(
    ("points", "per_hour", "tolerance"),
    [
        pytest.param(
            series(with_steps(24, [(80_000, 6)])), STEADY_PER_HOUR, 0.10, id="step-6-polls"
        ),
        pytest.param(
            series(with_steps(24, [(80_000, 1)])), STEADY_PER_HOUR, 0.10, id="step-1-poll"
        ),
        pytest.param(
            series(with_steps(12, [(30_000, 6), (20_000, 8), (40_000, 6)])),
            STEADY_PER_HOUR,
            0.10,
            id="several-steps",
        ),
        pytest.param(
            series(with_steps(24, [(60_000, 6)], start=100_000)[:31] + drain(20_000, 10, 12)),
            STEADY_PER_HOUR,
            0.10,
            id="step-then-top-up-then-drain",
        ),
        pytest.param(
            series(noisy(with_steps(30, [(70_000, 6)]), seed=4)),
            STEADY_PER_HOUR,
            0.10,
            id="noisy-step",
        ),
        pytest.param(
            at_minutes(
                [(m, 90_000 - 2 * m) for m in (0, 5, 10, 15, 20, 25, 30, 35)]
                + [(m, 10_000 - 2 * m) for m in (40, 45, 180, 185, 190, 300, 305, 310)]
            ),
            STEADY_PER_HOUR,
            0.01,
            id="step-then-gaps",
        ),
        pytest.param(TOPPED_UP, STEADY_PER_HOUR, 0.05, id="drain-top-up-drain"),
    ],
)
def test_a_step_is_not_burn(points: Points, per_hour: float, tolerance: float) -> None:
    found = forecast(points, last_now(points))
    assert found is not None
    assert found.per_hour == pytest.approx(per_hour, rel=tolerance)
    # Projected from the latest reading: after the step, not before it.
    last_at, last_value = max(points)
    assert found.empty_at - last_at == pytest.approx(
        timedelta(hours=last_value / found.per_hour), abs=timedelta(seconds=1)
    )


def test_an_unconfirmed_drop_keeps_the_rate_and_projects_from_the_lower_value() -> None:
    before = series(drain(100_000, 10, 24))
    step = (before[-1][0] + timedelta(minutes=5), 20_000)
    held = forecast([*before, step], step[0])
    assert held is not None
    assert held.per_hour == pytest.approx(STEADY_PER_HOUR, rel=0.01)
    expected = step[0] + timedelta(hours=20_000 / held.per_hour)
    assert abs((held.empty_at - expected).total_seconds()) < 1


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(series([50_000] * 12 + [30_000] * 12), id="bulk-send-then-silence"),
        pytest.param(series([50_000] * 12 + [30_000]), id="bulk-send-not-confirmed-yet"),
        pytest.param(
            series([50_000] * 12 + [30_000, 10_000] + [10_000] * 6), id="two-poll-campaign"
        ),
    ],
)
def test_a_bulk_send_then_silence_has_no_forecast(points: Points) -> None:
    assert forecast(points, last_now(points)) is None


def test_large_drops_that_go_on_are_a_faster_burn() -> None:
    # 10 a poll, then 2,000 a poll for good: after a few polls the rate follows.
    values = drain(200_000, 10, 24)
    values += drain(values[-1] - 2_000, 2_000, 12)
    found = forecast(series(values), last_now(series(values)))
    assert found is not None
    assert found.per_hour > 10 * STEADY_PER_HOUR


def test_an_odd_low_reading_is_left_out() -> None:
    values = [*drain(10_000, 10, 12), 10, *drain(9_870, 10, 12)]
    points = series(values)
    found = forecast(points, last_now(points))
    assert found is not None
    assert found.per_hour == pytest.approx(STEADY_PER_HOUR, rel=0.05)


@settings(max_examples=300, deadline=None)
@given(
    per_poll=st.integers(1, 500),
    poll_minutes=st.sampled_from([1, 5, 15]),
    polls_before=st.integers(7, 40),
    polls_after=st.integers(6, 30),
    step_factor=st.floats(20, 10_000),
    value_per_step=st.floats(1.2, 60),
    jitter=st.lists(st.floats(-0.3, 0.3), min_size=80, max_size=80),
)
def test_a_single_step_moves_the_rate_by_at_most_30_percent(
    per_poll: int,
    poll_minutes: int,
    polls_before: int,
    polls_after: int,
    step_factor: float,
    value_per_step: float,
    jitter: list[float],
) -> None:
    every = timedelta(minutes=poll_minutes)
    step = round(per_poll * step_factor)
    total = polls_before + polls_after + 1
    # The step is between about 1.6 % and 80 % of the value; the drain never reaches zero.
    start_value = round(step * value_per_step) + 2 * per_poll * (total + 2)
    values, value = [], start_value
    for i in range(total):
        values.append(value)
        value -= round(per_poll * (1 + jitter[i]))
        if i == polls_before - 1:
            value -= step
    points = series(values, every=every)
    steady = per_poll * timedelta(hours=1) / every
    # Beyond ten years there is no forecast at all, whatever the rate.
    assume(values[-1] / steady < 0.9 * forecasting.MAX_TIME_TO_EMPTY / timedelta(hours=1))
    found = forecast(points, last_now(points), min_span=min_span_for(every))
    assert found is not None
    assert found.per_hour == pytest.approx(steady, rel=0.30)


# --- running state: O(1) per reading, and the same as recomputing from the points ----------------


def hourly_drain(
    hours: float, per_hour: float, *, every: timedelta, start: int = 10_000_000
) -> Points:
    polls = int(timedelta(hours=hours) / every)
    per_poll = per_hour * every / timedelta(hours=1)
    return [(T0 + every * i, round(start - per_poll * i)) for i in range(polls + 1)]


def window_points(points: Points, lookback_hours: int = 48) -> Points:
    """The points the running fit keeps: whole hours, the newest `lookback_hours` + the current."""
    last_hour = int(points[-1][0].timestamp() // 3600)
    return [
        (at, v) for at, v in points if int(at.timestamp() // 3600) >= last_hour - lookback_hours
    ]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 240), min_size=5, max_size=150),
    drops=st.lists(st.integers(50, 70), min_size=150, max_size=150),
)
def test_running_sums_equal_a_fit_recomputed_from_the_window(
    gaps: list[int], drops: list[int]
) -> None:
    # A steady, slightly uneven drain (no steps, no rises) over up to ten days of minutes.
    points, minute, value = [(T0, 10_000_000)], 0, 10_000_000
    for gap, drop in zip(gaps, drops, strict=False):
        minute, value = minute + gap, value - drop * gap
        points.append((T0 + timedelta(minutes=minute), value))
    state = forecasting.rebuild(points)
    kept = window_points(points)
    found = forecasting.forecast_of(state, min_points=2, min_span=timedelta(0))
    if len(kept) < 2:
        assert found is None
        return
    xs = [(at - T0).total_seconds() for at, _ in kept]
    ys = [float(v) for _, v in kept]
    if len(set(xs)) < 2:
        return
    slope = statistics.linear_regression(xs, ys).slope
    assert found is not None
    assert found.per_hour == pytest.approx(-slope * 3600, rel=1e-6)


def test_a_replica_rebuilding_from_stored_history_gets_the_same_forecast() -> None:
    # Four days of history; the poller folded all of it, a replica taking over reads only what
    # the fit can use (the look-back and an hour).
    points = series(noisy_drain_long(4 * 288), every=timedelta(minutes=5))
    running: forecasting.SeriesState | None = None
    for at, value in points:
        running = forecasting.advance(running, at, value)
    since = points[-1][0] - forecasting.LOOKBACK - timedelta(hours=1)
    rebuilt = forecasting.rebuild([p for p in points if p[0] >= since])
    ours, theirs = forecasting.forecast_of(running), forecasting.forecast_of(rebuilt)
    assert ours is not None and theirs is not None
    assert theirs.per_hour == pytest.approx(ours.per_hour, rel=1e-6)
    assert abs((theirs.empty_at - ours.empty_at).total_seconds()) < 1


def noisy_drain_long(n: int) -> list[int]:
    rng = random.Random(11)
    return [round(1_000_000 - 10 * i + rng.gauss(0, 3)) for i in range(n)]


def test_advance_does_not_change_the_state_it_was_given() -> None:
    state = forecasting.rebuild(series(with_steps(24, [(50_000, 3)])))
    assert state is not None
    copy = replace(state, minutes=array("d", state.minutes))
    forecasting.advance(state, T0 + timedelta(days=3), 1)
    assert state == copy


def test_old_or_repeated_readings_are_ignored() -> None:
    state = forecasting.rebuild(STEADY)
    assert state is not None
    assert forecasting.advance(state, STEADY[-1][0], 1) is state
    assert forecasting.advance(state, STEADY[0][0], 99_999) is state


# --- sudden drops --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([100_000, 40_000], forecasting.Drop(60_000, 60.0, 300.0), id="drop"),
        pytest.param([100_000, 100_000], None, id="flat"),
        pytest.param([100_000, 120_000], None, id="rise"),
        pytest.param([100_000], None, id="first-reading"),
        pytest.param([0, 0], None, id="empty"),
        pytest.param([100, 0], forecasting.Drop(100, 100.0, 300.0), id="to-zero"),
    ],
)
def test_drop_of_compares_the_last_two_readings(
    values: list[int], expected: forecasting.Drop | None
) -> None:
    assert forecasting.drop_of(forecasting.rebuild(series(values))) == expected


def test_drop_of_says_what_the_usual_pace_burns_meanwhile() -> None:
    # 100 every 5 minutes, then the last poll loses 300.
    state = forecasting.rebuild(series([10_000 - 100 * n for n in range(20)] + [7_800]))
    drop = forecasting.drop_of(state)
    assert drop is not None
    assert (drop.amount, drop.seconds) == (300, 300.0)
    assert drop.usual == pytest.approx(100)
    assert forecasting.Drop.from_json(drop.to_json()) == drop


# --- burning faster than usual ------------------------------------------------------------


def test_usual_burn_is_the_median_hour_of_the_week_and_the_last_hour_is_exact() -> None:
    every = timedelta(minutes=5)
    week = hourly_drain(7 * 24, 100, every=every)
    state = forecasting.rebuild(week)
    burn = forecasting.burn_of(state)
    assert burn is not None
    assert burn.usual == pytest.approx(100, rel=0.01)
    assert burn.last_hour == pytest.approx(100, rel=0.02)
    # An hour at ten times the rate.
    last_at, value = week[-1]
    pumped = [(last_at + every * i, value - 1000 * i // 12) for i in range(1, 13)]
    burn = forecasting.burn_of(forecasting.rebuild(week + pumped))
    assert burn is not None
    assert burn.ratio == pytest.approx(10, rel=0.05)
    assert burn.usual == pytest.approx(100, rel=0.01)


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(hourly_drain(23, 100, every=timedelta(minutes=5)), id="less-than-a-day"),
        pytest.param(series([5_000] * (26 * 12)), id="usually-burns-nothing"),
        pytest.param([], id="no-history"),
    ],
)
def test_no_usual_burn(points: Points) -> None:
    assert forecasting.burn_of(forecasting.rebuild(points)) is None


def test_a_gap_spreads_its_burn_over_the_hours_it_spans() -> None:
    # Polling stopped for 6 hours: the drain over the gap is not one pumped hour.
    every = timedelta(minutes=5)
    day = hourly_drain(30, 100, every=every)
    last_at, value = day[-1]
    after = [
        (last_at + timedelta(hours=6) + every * i, value - 600 - 100 * i // 12) for i in range(13)
    ]
    burn = forecasting.burn_of(forecasting.rebuild(day + after))
    assert burn is not None
    assert burn.ratio == pytest.approx(1.0, rel=0.05)


def test_a_step_is_not_counted_as_burn() -> None:
    every = timedelta(minutes=5)
    day = hourly_drain(30, 120, every=every, start=200_000)
    last_at, value = day[-1]
    after = [(last_at + every * (i + 1), value - 100_000 - 10 * (i + 1)) for i in range(6)]
    burn = forecasting.burn_of(forecasting.rebuild(day + after))
    assert burn is not None
    assert burn.ratio == pytest.approx(1.0, rel=0.1)


@settings(max_examples=200, deadline=None)
@given(histories)
def test_advancing_reading_by_reading_equals_rebuilding_and_changes_nothing_given(
    points: Points,
) -> None:
    ordered = sorted({at: (at, v) for at, v in points}.values())
    state: forecasting.SeriesState | None = None
    for at, value in ordered:
        before = None if state is None else replace(state, minutes=array("d", state.minutes))
        after = forecasting.advance(state, at, value)
        assert state == before  # the state given is left as it was
        state = after
    assert state == forecasting.rebuild(ordered)


@pytest.mark.parametrize(
    "raw", [None, "", "not json", '{"shop": 1}', '{"shop": {"sms": {}}}', "[1]"]
)
def test_unreadable_shared_figures_read_as_none(raw: str | None) -> None:
    assert forecasting.decode_burns(raw) == {}
    assert forecasting.decode_forecasts(raw) == {}


def test_shared_figures_round_trip() -> None:
    burns = {"shop": {Q.INDUSTRY: forecasting.Burn(last_hour=900.0, usual=100.0)}}
    assert forecasting.decode_burns(forecasting.encode_burns(burns)) == burns
