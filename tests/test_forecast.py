"""bot.forecast: burn rate and time-to-empty from history (pure, table tests + properties)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from builders import NOW, Points, drain, history
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.forecast import MIN_POINTS, MIN_SPAN, forecast, forecast_all, segment
from bot.quota import QuotaType

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
    assert segment(TOPPED_UP) == TOPPED_UP[20:]


def test_lone_spike_is_left_out_of_the_segment() -> None:
    assert segment(SPIKED) == SPIKED[:12] + SPIKED[13:]


def test_unconfirmed_rise_in_last_reading_waits_for_the_next() -> None:
    before = series(drain(10_000, 10, 12))
    rise = (before[-1][0] + timedelta(minutes=5), 60_000)
    held = forecast([*before, rise], rise[0])
    assert held == forecast(before, rise[0])
    confirmed = [*before, rise, (rise[0] + timedelta(minutes=5), 59_990)]
    assert segment(confirmed) == confirmed[-2:]
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


def test_forecast_all_keeps_only_types_with_a_forecast() -> None:
    history = {
        QuotaType.BALANCE: STEADY,
        QuotaType.VOICE: series([5_000] * 20),
        QuotaType.MARKET: [],
    }
    result = forecast_all(history, last_now(STEADY))
    assert set(result) == {QuotaType.BALANCE}
    assert result[QuotaType.BALANCE] == forecast(STEADY, last_now(STEADY))


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
    current = segment(points)
    assert len(current) >= MIN_POINTS
    assert found.empty_at >= current[-1][0]


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
