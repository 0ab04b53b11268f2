"""Sudden drops, burning faster than usual and pool advice in the alert engine (pure, tables)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from builders import NOW, read_ok
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts import Policy, step
from bot.alerts_types import AlertBook, AlertKind, Event, EventKind, alert_key
from bot.anomalies import Signals
from bot.forecast import Burn, Drop, Forecast
from bot.quota import QUOTA_TYPES, QuotaType, ScopeReading, Threshold, Thresholds

TH: Thresholds = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
CONFIG: dict[str, Thresholds] = {"account": TH, "shop": TH}
POLICY = Policy(drop_percent=30.0, burn_factor=5.0, repeat_interval=timedelta(hours=24))
IND = QuotaType.INDUSTRY


def run(
    readings: list[ScopeReading],
    signals: dict[str, dict[QuotaType, Signals]] | None = None,
    *,
    book: AlertBook | None = None,
    policy: Policy = POLICY,
    forecasts: dict[str, dict[QuotaType, Forecast]] | None = None,
    now: datetime = NOW,
) -> tuple[AlertBook, list[Event]]:
    return step(
        book or AlertBook(),
        readings,
        CONFIG,
        forecasts or {},
        now,
        policy,
        signals=signals or {},
    )


def industry(scope: str, **signal: Drop | Burn | None) -> dict[str, dict[QuotaType, Signals]]:
    return {scope: {IND: Signals(**signal)}}  # type: ignore[arg-type]


# --- sudden drops ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "policy", "expected"),
    [
        pytest.param(Drop(60_000, 60.0, 300.0), POLICY, True, id="60-percent"),
        pytest.param(Drop(30_000, 30.0, 300.0), POLICY, False, id="exactly-the-percent"),
        pytest.param(Drop(30_001, 30.001, 300.0), POLICY, True, id="just-over"),
        pytest.param(Drop(5_000, 5.0, 300.0), POLICY, False, id="small"),
        pytest.param(Drop(60_000, 60.0, 300.0), Policy(drop_percent=0), False, id="disabled"),
        pytest.param(None, POLICY, False, id="no-drop"),
        # The usual pace burns 1,000 in those 5 minutes: 60,000 is a step, 9,000 is not
        # (a quota near empty, 60 % of it gone at ten times its pace or less).
        pytest.param(Drop(60_000, 60.0, 300.0, usual=1_000), POLICY, True, id="a-step"),
        pytest.param(Drop(9_000, 60.0, 300.0, usual=1_000), POLICY, False, id="usual-pace"),
        pytest.param(Drop(10_001, 60.0, 300.0, usual=1_000), POLICY, True, id="just-a-step"),
        pytest.param(Drop(60, 60.0, 300.0, usual=0.0), POLICY, True, id="from-flat"),
    ],
)
def test_a_sudden_drop_is_said_once(drop: Drop | None, policy: Policy, expected: bool) -> None:
    book, events = run(
        [read_ok("account", industry=40_000)], industry("account", drop=drop), policy=policy
    )
    drops = [e for e in events if e.kind is EventKind.SUDDEN_DROP]
    assert len(drops) == (1 if expected else 0)
    if expected:
        assert drops[0].drop == drop
        assert drops[0].value == 40_000
        assert drops[0].quota_type is IND
    # Nothing stays open for a drop: the next poll (no new drop) says nothing.
    assert book.alerts == {}
    _, again = run([read_ok("account", industry=39_990)], book=book)
    assert again == []


def test_a_drop_below_a_threshold_comes_with_the_threshold_alert() -> None:
    _, events = run([read_ok("shop", industry=500)], industry("shop", drop=Drop(49_500, 99.0, 60)))
    assert [e.kind for e in events] == [EventKind.FIRED, EventKind.SUDDEN_DROP]


# --- burning faster than usual -----------------------------------------------------------------


def burn(ratio: float, usual: float = 100.0) -> Burn:
    return Burn(last_hour=ratio * usual, usual=usual)


def test_burn_alert_fires_once_repeats_daily_and_resolves_under_half_the_factor() -> None:
    key = alert_key("shop", IND, AlertKind.BURN)
    ratios = [(0, 4.0, None), (5, 6.0, EventKind.BURNING_FAST), (10, 9.0, None), (15, 3.0, None)]
    book = AlertBook()
    for minute, ratio, expected in ratios:
        book, events = run(
            [read_ok("shop")],
            industry("shop", burn=burn(ratio)),
            book=book,
            now=NOW + timedelta(minutes=minute),
        )
        assert [e.kind for e in events] == ([expected] if expected else [])
    assert key in book.alerts
    opened = book.alerts[key]
    assert opened.alert is AlertKind.BURN
    fired = run([read_ok("shop")], industry("shop", burn=burn(6.0)))[1][0]
    assert fired.burn == burn(6.0)
    assert fired.alert is AlertKind.BURN
    assert fired.key == key
    # Delivered, then still burning a day later: a reminder.
    book = book.mark_delivered([key], NOW + timedelta(minutes=20))
    book, events = run(
        [read_ok("shop")],
        industry("shop", burn=burn(7.0)),
        book=book,
        now=NOW + timedelta(days=1, minutes=30),
    )
    assert [e.kind for e in events] == [EventKind.REPEATED]
    assert events[0].alert is AlertKind.BURN
    # Under half the factor: resolved, naming the rates.
    book, events = run([read_ok("shop")], industry("shop", burn=burn(2.4)), book=book)
    assert [(e.kind, e.alert) for e in events] == [(EventKind.RESOLVED, AlertKind.BURN)]
    assert events[0].burn == burn(2.4)
    assert key not in book.alerts


@pytest.mark.parametrize(
    ("reading", "signal", "policy"),
    [
        pytest.param(read_ok("shop", industry=None), burn(1.0), POLICY, id="unassigned-now"),
        pytest.param(read_ok("shop"), burn(9.0), Policy(burn_factor=0), id="switched-off"),
    ],
)
def test_an_open_burn_alert_resolves_when_there_is_nothing_left_to_watch(
    reading: ScopeReading, signal: Burn, policy: Policy
) -> None:
    book, _ = run([read_ok("shop")], industry("shop", burn=burn(9.0)))
    book, events = run([reading], industry("shop", burn=signal), book=book, policy=policy)
    assert [(e.kind, e.alert) for e in events] == [(EventKind.RESOLVED, AlertKind.BURN)]
    assert book.alerts == {}


def test_no_burn_figure_keeps_the_alert_as_it_is() -> None:
    book, _ = run([read_ok("shop")], industry("shop", burn=burn(9.0)))
    again, events = run([read_ok("shop")], industry("shop", burn=None), book=book)
    assert events == []
    assert set(again.alerts) == set(book.alerts)


def test_a_burn_alert_is_open_beside_a_threshold_alert() -> None:
    book, events = run([read_ok("shop", industry=500)], industry("shop", burn=burn(8.0)))
    assert {e.kind for e in events} == {EventKind.FIRED, EventKind.BURNING_FAST}
    assert set(book.alerts) == {alert_key("shop", IND), alert_key("shop", IND, AlertKind.BURN)}
    # Delivering the message clears both.
    keys = sorted({e.key for e in events})
    delivered = book.mark_delivered(keys, NOW)
    assert not any(a.pending for a in delivered.alerts.values())


def test_a_removed_scope_drops_its_burn_alert() -> None:
    book, _ = run([read_ok("shop")], industry("shop", burn=burn(8.0)))
    after, events = step(book, [], {"account": TH}, {}, NOW, POLICY)
    assert after.alerts == {}
    assert events == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 20), min_size=1, max_size=40))
def test_burn_alert_is_open_exactly_when_the_hysteresis_says(ratios: list[float]) -> None:
    book, is_open = AlertBook(), False
    key = alert_key("shop", IND, AlertKind.BURN)
    for i, ratio in enumerate(ratios):
        book, events = run(
            [read_ok("shop")],
            industry("shop", burn=burn(ratio)),
            book=book,
            now=NOW + timedelta(minutes=5 * i),
        )
        was_open = is_open
        if not is_open and ratio > 5:
            is_open = True
        elif is_open and ratio < 2.5:
            is_open = False
        assert (key in book.alerts) == is_open
        kinds = [e.kind for e in events]
        if is_open and not was_open:
            assert kinds == [EventKind.BURNING_FAST]
        elif was_open and not is_open:
            assert kinds == [EventKind.RESOLVED]
        else:
            assert kinds == []


# --- pool advice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_industry", "shop_industry", "forecast_hours", "pool"),
    [
        pytest.param(54_321, 500, None, 54_321, id="low-app-pool-holds-plenty"),
        pytest.param(54_321, 50, None, 54_321, id="critical-app"),
        pytest.param(54_321, 20_000, 2.0, 54_321, id="running-out-app"),
        pytest.param(1_000, 500, None, None, id="pool-not-above-the-warning"),
        pytest.param(None, 500, None, None, id="pool-unassigned"),
    ],
)
def test_an_app_low_on_a_type_the_pool_holds_is_told_how_much_is_left(
    account_industry: int | None, shop_industry: int, forecast_hours: float | None, pool: int | None
) -> None:
    forecasts = (
        {"shop": {IND: Forecast(1000.0, NOW + timedelta(hours=forecast_hours))}}
        if forecast_hours is not None
        else {}
    )
    _, events = run(
        [read_ok("account", industry=account_industry), read_ok("shop", industry=shop_industry)],
        forecasts=forecasts,
        policy=Policy(forecast_horizon=timedelta(hours=3)),
    )
    shop = [e for e in events if e.scope == "shop"]
    assert len(shop) == 1
    assert shop[0].pool == pool


def test_no_pool_advice_for_the_account_itself_or_without_its_reading() -> None:
    _, events = run([read_ok("account", industry=500)])
    assert [e.pool for e in events] == [None]
    _, events = run([read_ok("shop", industry=500)])
    assert [e.pool for e in events] == [None]


def test_events_with_drops_burns_and_pools_survive_the_store() -> None:
    _, events = run(
        [read_ok("account", industry=60_000), read_ok("shop", industry=500)],
        {"shop": {IND: Signals(drop=Drop(9_500, 95.0, 300), burn=burn(9.0))}},
    )
    assert {e.kind for e in events} == {
        EventKind.FIRED,
        EventKind.SUDDEN_DROP,
        EventKind.BURNING_FAST,
    }
    for event in events:
        assert Event.from_json(event.to_json()) == event
