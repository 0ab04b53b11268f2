"""Levels and statuses: the decisions everything else is built on, as tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.quota import (
    QUOTA_TYPES,
    FetchError,
    Level,
    QuotaType,
    ScopeKind,
    ScopeReading,
    Status,
    Threshold,
    evaluate,
    exit_code,
    level_for,
    scope_status,
    worst,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
T = Threshold(warning=1000, critical=100)


@pytest.mark.parametrize(
    ("value", "threshold", "level"),
    [
        (None, T, Level.UNASSIGNED),
        (0, T, Level.CRITICAL),
        (99, T, Level.CRITICAL),
        (100, T, Level.WARNING),  # strictly below: 100 is not below 100
        (999, T, Level.WARNING),
        (1000, T, Level.OK),
        (10**12, T, Level.OK),
        (5, Threshold(0, 0), Level.OK),  # switched off
        (5, Threshold(1000, 0), Level.WARNING),  # no critical level
        (0, Threshold(1000, 1000), Level.CRITICAL),
        (999, Threshold(1000, 1000), Level.CRITICAL),
    ],
)
def test_level_for(value: int | None, threshold: Threshold, level: Level) -> None:
    assert level_for(value, threshold) is level


def reading(**kw: object) -> ScopeReading:
    return ScopeReading(scope="shop", kind=ScopeKind.APP, read_at=NOW, **kw)  # type: ignore[arg-type]


def balances(*values: int | None) -> dict[QuotaType, int | None]:
    return dict(zip(QUOTA_TYPES, values, strict=True))


THRESHOLDS = {t: T for t in QUOTA_TYPES}


@pytest.mark.parametrize(
    ("r", "status"),
    [
        (reading(balances=balances(5000, 5000, 5000, 5000)), Status.OK),
        (reading(balances=balances(5000, 999, 5000, 5000)), Status.WARNING),
        (reading(balances=balances(5000, 999, 99, 5000)), Status.CRITICAL),
        (reading(balances=balances(None, None, None, None)), Status.UNASSIGNED),
        (reading(balances=balances(None, 5000, None, None)), Status.OK),
        (reading(unassigned=True), Status.UNASSIGNED),
        (reading(error=FetchError(50002, "auth failed", config=True)), Status.UNKNOWN),
    ],
)
def test_scope_status(r: ScopeReading, status: Status) -> None:
    assert scope_status(r, evaluate(r, THRESHOLDS)) is status


def test_an_error_has_no_levels_at_all() -> None:
    # A failed read must never be judged as if it were a zero balance.
    assert evaluate(reading(error=FetchError(None, "timeout")), THRESHOLDS) is None


@pytest.mark.parametrize(
    ("statuses", "top", "code"),
    [
        ([], Status.OK, 0),
        ([Status.OK, Status.UNASSIGNED], Status.OK, 0),
        ([Status.UNASSIGNED], Status.OK, 0),
        ([Status.OK, Status.WARNING], Status.WARNING, 1),
        ([Status.WARNING, Status.UNKNOWN], Status.UNKNOWN, 3),
        ([Status.UNKNOWN, Status.CRITICAL, Status.WARNING], Status.CRITICAL, 2),
        ([Status.CRITICAL, Status.OK], Status.CRITICAL, 2),
    ],
)
def test_worst_and_exit_code(statuses: list[Status], top: Status, code: int) -> None:
    assert worst(statuses) is top
    assert exit_code(top) == code


@given(st.lists(st.sampled_from(list(Status)), max_size=8))
def test_worst_is_order_independent_and_never_unassigned(statuses: list[Status]) -> None:
    assert worst(statuses) is worst(list(reversed(statuses)))
    assert worst(statuses) is not Status.UNASSIGNED


@given(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
)
def test_lower_values_are_never_better(value: int, warning: int, critical: int) -> None:
    threshold = Threshold(max(warning, critical), min(warning, critical))
    rank = {Level.OK: 0, Level.WARNING: 1, Level.CRITICAL: 2}
    higher, lower = level_for(value + 1, threshold), level_for(value, threshold)
    assert rank[lower] >= rank[higher]


def test_quota_type_names_are_the_public_ones() -> None:
    # Used in JSON output, metric labels and ALERT_* variable names.
    assert [t.value for t in QuotaType] == ["balance", "voice", "industry", "market"]
