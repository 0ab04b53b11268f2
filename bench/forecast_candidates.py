"""Which burn-rate method survives steps: the candidates behind bot/forecast.py's choice.

    .venv/bin/python bench/forecast_candidates.py

Each case is a quota series polled every 5 minutes; the rate each method reports after the
series' last reading is compared with the true steady drain (goal: within 10 %, and no forecast
where the series is flat). Candidates:

- `ols` : least squares over the falling segment, the forecaster before steps were handled
          (bot/forecast.py as of commit _common.LEGACY, read from git).
- `theil-sen` : the median of pairwise slopes over the same segment.
- `restart` : least squares over the readings after the last step (a new segment at each step).
- `splice` : bot.forecast (steps cut out, the line continues across them).
"""

from __future__ import annotations

import itertools
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import ModuleType

from _common import legacy_forecaster

from bot import forecast as splice

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
EVERY = timedelta(minutes=5)
Points = list[tuple[datetime, int]]


def series(values: list[int]) -> Points:
    return [(T0 + EVERY * i, v) for i, v in enumerate(values)]


def drain(start: int, per_poll: int, polls: int) -> list[int]:
    return [start - per_poll * i for i in range(polls)]


def with_steps(before: int, after: list[tuple[int, int]], start: int = 100_000) -> list[int]:
    values = drain(start, 10, before)
    for step, polls in after:
        values.append(values[-1] - 10 - step)
        values.extend(drain(values[-1] - 10, 10, polls))
    return values


# name -> (points, true per hour or None when no forecast is right)
CASES: dict[str, tuple[Points, float | None]] = {
    "step, then 6 polls": (series(with_steps(24, [(80_000, 6)])), 120.0),
    "step, then 1 poll": (series(with_steps(24, [(80_000, 1)])), 120.0),
    "step mid-window, 12 polls": (series(with_steps(12, [(80_000, 12)])), 120.0),
    "three steps": (series(with_steps(12, [(30_000, 6), (20_000, 8), (40_000, 6)])), 120.0),
    "bulk send, silence": (series([50_000] * 12 + [30_000] * 12), None),
    "drain, top-up, drain": (series(drain(3_000, 100, 20) + drain(50_000, 10, 12)), 120.0),
    "noisy drain, step": (
        series([v + (7 * i) % 11 - 5 for i, v in enumerate(with_steps(30, [(70_000, 6)]))]),
        120.0,
    ),
    "step, then gaps": (
        [
            (T0 + timedelta(minutes=m), v)
            for m, v in [(m, 90_000 - 2 * m) for m in range(0, 40, 5)]
            + [(m, 10_000 - 2 * m) for m in (40, 45, 180, 185, 190, 300, 305, 310)]
        ],
        120.0,
    ),
    "steady drain": (series(drain(10_000, 10, 24)), 120.0),
}


def ols_rate(points: Points) -> float | None:
    if len(points) < splice.MIN_POINTS or points[-1][0] - points[0][0] < splice.MIN_SPAN:
        return None
    xs = [(at - points[0][0]).total_seconds() for at, _ in points]
    slope = statistics.linear_regression(xs, [float(v) for _, v in points]).slope
    return -slope * 3600 if slope < 0 else None


def theil_sen_rate(points: Points) -> float | None:
    if len(points) < splice.MIN_POINTS or points[-1][0] - points[0][0] < splice.MIN_SPAN:
        return None
    slopes = [
        (b[1] - a[1]) / (b[0] - a[0]).total_seconds()
        for a, b in itertools.combinations(points, 2)
        if b[0] > a[0]
    ]
    slope = statistics.median(slopes)
    return -slope * 3600 if slope < 0 else None


def after_last_step(points: Points) -> Points:
    """The readings after the last drop more than STEP_FACTOR times the median drop per second."""
    rates = [(a[1] - b[1]) / (b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points)]
    usual = statistics.median(rates) if rates else 0.0
    start = 0
    for i, rate in enumerate(rates):
        drop = points[i][1] - points[i + 1][1]
        if drop > splice.STEP_MIN_SHARE * points[i][1] and rate > splice.STEP_FACTOR * usual:
            start = i + 1
    return points[start:]


def candidates(legacy: ModuleType) -> dict[str, Callable[[Points], float | None]]:
    def ols(points: Points) -> float | None:
        found = legacy.forecast(points, points[-1][0])
        return None if found is None else float(found.per_hour)

    def theil_sen(points: Points) -> float | None:
        return theil_sen_rate(legacy.segment(points))

    def restart(points: Points) -> float | None:
        return ols_rate(after_last_step(legacy.segment(points)))

    def spliced(points: Points) -> float | None:
        found = splice.forecast(points, points[-1][0])
        return None if found is None else found.per_hour

    return {"ols": ols, "theil-sen": theil_sen, "restart": restart, "splice": spliced}


def verdict(found: float | None, truth: float | None) -> tuple[str, bool]:
    if truth is None:
        return ("none" if found is None else f"{found:,.0f}/h"), found is None
    if found is None:
        return "none", False
    return f"{found:,.0f}/h", abs(found - truth) <= 0.1 * truth


def main() -> int:
    methods = candidates(legacy_forecaster())
    width = max(len(name) for name in CASES)
    print(f"{'case':<{width}} {'truth':>8} " + " ".join(f"{m:>14}" for m in methods))
    passed = dict.fromkeys(methods, 0)
    for name, (points, truth) in CASES.items():
        cells = []
        for method, rate_of in methods.items():
            text, ok = verdict(rate_of(points), truth)
            passed[method] += ok
            cells.append(f"{text + ('' if ok else ' x'):>14}")
        shown = "none" if truth is None else f"{truth:,.0f}/h"
        print(f"{name:<{width}} {shown:>8} " + " ".join(cells))
    print(
        "\ncases right (within 10 %, or no forecast when flat): "
        + ", ".join(f"{m} {n}/{len(CASES)}" for m, n in passed.items())
    )
    return 0 if passed["splice"] == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
