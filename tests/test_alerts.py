"""bot.alerts.step: the alert state machine (pure, table tests + hypothesis properties)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from builders import HIGH, NOW, forecast_in, kind_of
from builders import read_failed as failed
from builders import read_ok as reading
from builders import read_unassigned as unassigned
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts import Policy, resolve_bar, step
from bot.alerts_types import (
    AlertBook,
    AlertKind,
    Event,
    EventKind,
    OpenAlert,
    ScopeHealth,
    alert_key,
)
from bot.forecast import Forecast
from bot.quota import (
    QUOTA_TYPES,
    FetchError,
    Level,
    QuotaType,
    ScopeReading,
    Threshold,
    Thresholds,
)

T0 = NOW
DAY = 24 * 60  # minutes
HORIZON_H = 72
POLICY = Policy(
    repeat_interval=timedelta(hours=24),
    resolve_margin_pct=10.0,
    failures_before_alert=3,
    forecast_horizon=timedelta(hours=HORIZON_H),
)
TH: Thresholds = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
CONFIG: dict[str, Thresholds] = {"account": TH, "shop": TH}
BALANCE = QuotaType.BALANCE


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


# --- a tiny scenario language for the tables ------------------------------------------------


@dataclass(frozen=True)
class Op:
    at: float  # minutes after T0
    kind: str  # "value" | "error" | "config" | "unassigned" | "deliver"
    balance: int | None = HIGH
    empty_in_h: float | None = None  # balance forecast: hours from now to empty


def val(at: float, balance: int | None, empty_in_h: float | None = None) -> Op:
    return Op(at, "value", balance, empty_in_h)


def err(at: float) -> Op:
    return Op(at, "error")


def config_err(at: float) -> Op:
    return Op(at, "config")


def unassigned_at(at: float) -> Op:
    return Op(at, "unassigned")


def deliver(at: float) -> Op:
    return Op(at, "deliver")


@dataclass
class Run:
    """Feeds ops through `step` like the monitor would: every delivery clears the outbox."""

    policy: Policy = POLICY
    config: Mapping[str, Thresholds] = field(default_factory=lambda: CONFIG)
    book: AlertBook = field(default_factory=AlertBook)
    outbox: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)

    def apply(self, op: Op, scope: str = "account") -> list[Event]:
        now = minutes(op.at)
        if op.kind == "deliver":
            self.book = self.book.mark_delivered(sorted(self.outbox), now)
            self.outbox.clear()
            return []
        forecasts: dict[str, dict[QuotaType, Forecast]] = {}
        if op.kind == "value":
            read = reading(scope, now, balance=op.balance)
            if op.empty_in_h is not None:
                forecasts[scope] = {BALANCE: forecast_in(now, op.empty_in_h)}
        elif op.kind == "unassigned":
            read = unassigned(scope, now)
        else:
            read = failed(scope, now, config=op.kind == "config")
        self.book, events = step(self.book, [read], self.config, forecasts, now, self.policy)
        self.outbox.update(e.key for e in events)
        self.events.extend(events)
        return events


def summary(event: Event) -> str:
    minute = int((event.at - T0) / timedelta(minutes=1))
    kind = event.kind.value
    if event.alert is AlertKind.RUNNING_OUT and event.kind is not EventKind.RUNNING_OUT:
        kind += "/running_out"
    what = event.quota_type.value if event.quota_type else "fetch"
    level = event.level.value if event.level else "-"
    return f"{minute} {kind} {what} {level}"


def run(ops: Sequence[Op], policy: Policy = POLICY) -> tuple[Run, list[str]]:
    scenario = Run(policy=policy)
    for op in ops:
        scenario.apply(op)
    return scenario, [summary(e) for e in scenario.events]


NO_REPEAT = Policy(
    repeat_interval=None,
    resolve_margin_pct=10.0,
    failures_before_alert=3,
    forecast_horizon=timedelta(hours=HORIZON_H),
)
NO_FORECAST = Policy(repeat_interval=timedelta(hours=24), forecast_horizon=None)


def case(ops: list[Op], expected: list[str], *, id: str, policy: Policy = POLICY) -> object:
    return pytest.param(ops, expected, policy, id=id)


TRANSITIONS = [
    # threshold alerts
    case([val(0, 900)], ["0 fired balance warning"], id="fired-warning"),
    case([val(0, 50)], ["0 fired balance critical"], id="fired-critical-directly"),
    case([val(0, 1000), val(5, 100)], ["5 fired balance warning"], id="strictly-below"),
    case([val(0, 999)], ["0 fired balance warning"], id="just-below-warning"),
    case([val(0, HIGH), val(5, HIGH)], [], id="all-ok-is-silent"),
    case(
        [val(0, 900), val(5, 50)],
        ["0 fired balance warning", "5 escalated balance critical"],
        id="escalated",
    ),
    case(
        [val(0, 900), val(5, 800), val(10, 950), deliver(11), val(20, 700)],
        ["0 fired balance warning"],
        id="still-open-is-silent",
    ),
    case(
        [val(0, 50), val(5, 900), val(10, 50), val(15, 500)],
        ["0 fired balance critical"],
        id="no-de-escalation-no-flapping-at-critical",
    ),
    case(
        [val(0, 900), deliver(1), val(DAY, 900), val(DAY + 1, 900), val(DAY + 2, 900)],
        ["0 fired balance warning", f"{DAY + 1} repeated balance warning"],
        id="repeated-after-interval-from-delivery",
    ),
    case(
        [
            val(0, 900),
            val(3 * DAY, 900),
            deliver(3 * DAY + 1),
            val(4 * DAY, 900),
            val(4 * DAY + 1, 900),
        ],
        ["0 fired balance warning", f"{4 * DAY + 1} repeated balance warning"],
        id="no-repeat-while-pending-then-from-delivery",
    ),
    case(
        [
            val(0, 900),
            deliver(1),
            val(DAY + 1, 900),
            val(2 * DAY + 2, 900),
            deliver(2 * DAY + 3),
            val(3 * DAY + 3, 900),
        ],
        [
            "0 fired balance warning",
            f"{DAY + 1} repeated balance warning",
            f"{3 * DAY + 3} repeated balance warning",
        ],
        id="repeat-waits-for-previous-repeat-delivery",
    ),
    case(
        [val(0, 50), deliver(1), val(DAY + 1, 900)],
        ["0 fired balance critical", f"{DAY + 1} repeated balance warning"],
        id="repeat-tells-the-current-level",
    ),
    case(
        [val(0, 900), deliver(1), val(10 * DAY, 900)],
        ["0 fired balance warning"],
        id="repeat-disabled",
        policy=NO_REPEAT,
    ),
    case(
        [val(0, 900), val(5, 1000), val(10, 1099), val(15, 1100)],
        ["0 fired balance warning", "15 resolved balance warning"],
        id="resolved-only-at-margin",
    ),
    case(
        [
            val(0, 990),
            val(5, 1010),
            val(10, 990),
            val(15, 1050),
            val(20, 995),
            val(25, 1099),
            val(30, 980),
        ],
        ["0 fired balance warning"],
        id="hovering-around-warning-does-not-flap",
    ),
    case(
        [val(0, 50), val(5, 1200)],
        ["0 fired balance critical", "5 resolved balance critical"],
        id="resolved-names-the-open-level",
    ),
    case(
        [val(0, 900), val(5, 2000), val(10, 900)],
        ["0 fired balance warning", "5 resolved balance warning", "10 fired balance warning"],
        id="fires-again-after-resolving",
    ),
    case(
        [val(0, None)],
        [],
        id="null-type-never-alerts",
    ),
    case(
        [val(0, 900), val(5, None)],
        ["0 fired balance warning", "5 resolved balance warning"],
        id="null-type-resolves",
    ),
    # running out
    case([val(0, 5000, 48)], ["0 running_out balance -"], id="running-out"),
    case([val(0, 5000, HORIZON_H + 1)], [], id="beyond-horizon-is-silent"),
    case([val(0, 5000, HORIZON_H)], ["0 running_out balance -"], id="at-the-horizon"),
    case([val(0, 5000, 48)], [], id="running-out-disabled", policy=NO_FORECAST),
    case(
        [val(0, 5000, 48), deliver(1), val(DAY, 4000, 24), val(DAY + 1, 4000, 24)],
        ["0 running_out balance -", f"{DAY + 1} repeated/running_out balance -"],
        id="running-out-repeats",
    ),
    case(
        [val(0, 5000, 48), val(5, 5000, None)],
        ["0 running_out balance -", "5 resolved/running_out balance -"],
        id="running-out-resolves-without-forecast",
    ),
    case(
        [val(0, 5000, 70), val(5, 5000, 75), val(10, 5000, 79), val(15, 5000, 80)],
        ["0 running_out balance -", "15 resolved/running_out balance -"],
        id="running-out-resolves-past-horizon-margin",
    ),
    case(
        [val(0, 5000, 48), val(5, 900, 40), val(10, 50, 30)],
        ["0 running_out balance -", "5 fired balance warning", "10 escalated balance critical"],
        id="running-out-replaced-by-fired",
    ),
    case(
        [val(0, 900, 48), val(5, 1050, 48), val(10, 1100, 48), val(15, 1100, 48)],
        ["0 fired balance warning", "10 resolved balance warning", "15 running_out balance -"],
        id="threshold-alert-holds-back-running-out-until-the-next-poll",
    ),
    case(
        [val(0, 5000, 48), val(5, None, 48)],
        ["0 running_out balance -", "5 resolved/running_out balance -"],
        id="running-out-resolves-when-unassigned",
    ),
    # fetch health
    case([err(0), err(5)], [], id="fewer-failures-than-needed"),
    case([err(0), err(5), err(10), err(15)], ["10 fetch_failing fetch -"], id="failing-after-n"),
    case([config_err(0)], ["0 fetch_failing fetch -"], id="config-error-at-once"),
    case([err(0), err(5), val(10, HIGH), err(15), err(20)], [], id="success-resets-the-count"),
    case(
        [config_err(0), val(5, HIGH)],
        ["0 fetch_failing fetch -", "5 fetch_recovered fetch -"],
        id="recovered",
    ),
    case(
        [config_err(0), unassigned_at(5)],
        ["0 fetch_failing fetch -", "5 fetch_recovered fetch -"],
        id="unassigned-is-a-successful-read",
    ),
    case(
        [config_err(0), deliver(1), err(DAY), err(DAY + 1), err(DAY + 2)],
        ["0 fetch_failing fetch -", f"{DAY + 1} repeated fetch -"],
        id="failing-repeats-from-delivery",
    ),
    case(
        [config_err(0), err(5 * DAY)],
        ["0 fetch_failing fetch -"],
        id="failing-does-not-repeat-while-pending",
    ),
    case(
        [val(0, 900), err(5), err(10), err(15), deliver(16), err(DAY + 16), val(DAY + 20, 900)],
        [
            "0 fired balance warning",
            "15 fetch_failing fetch -",
            f"{DAY + 16} repeated fetch -",
            f"{DAY + 20} repeated balance warning",
            f"{DAY + 20} fetch_recovered fetch -",
        ],
        id="errors-leave-quota-alerts-alone",
    ),
    case(
        [val(0, HIGH), err(5), err(10), config_err(15)],
        ["15 fetch_failing fetch -"],
        id="an-error-is-never-a-zero-balance",
    ),
    # unassigned (50033)
    case([unassigned_at(0), unassigned_at(DAY * 2)], [], id="unassigned-never-alerts"),
    case(
        [val(0, 900), unassigned_at(5)],
        ["0 fired balance warning", "5 resolved balance warning"],
        id="unassigned-resolves-open-alerts",
    ),
]


@pytest.mark.parametrize(("ops", "expected", "policy"), TRANSITIONS)
def test_transitions(ops: list[Op], expected: list[str], policy: Policy) -> None:
    _, events = run(ops, policy)
    assert events == expected


def test_critical_alert_stays_critical_in_the_warning_band() -> None:
    scenario, _ = run([val(0, 50), val(5, 900)])
    alert = scenario.book.alerts["account/balance"]
    assert (alert.level, alert.value, alert.opened_at) == (Level.CRITICAL, 900, T0)


def test_fired_event_carries_what_the_message_needs() -> None:
    now = minutes(0)
    fc = forecast_in(now, 30)
    book, events = step(
        AlertBook(), [reading(balance=900)], CONFIG, {"account": {BALANCE: fc}}, now, POLICY
    )
    assert events == [
        Event(
            kind=EventKind.FIRED,
            scope="account",
            at=now,
            quota_type=BALANCE,
            level=Level.WARNING,
            value=900,
            threshold=1000,
            alert=AlertKind.THRESHOLD,
            forecast=fc,
            opened_at=now,
        )
    ]
    assert book.alerts == {
        "account/balance": OpenAlert(
            alert=AlertKind.THRESHOLD,
            level=Level.WARNING,
            opened_at=now,
            announced_at=now,
            pending=True,
            value=900,
        )
    }


def test_escalated_and_resolved_name_their_thresholds() -> None:
    scenario = Run()
    scenario.apply(val(0, 900))
    [escalated] = scenario.apply(val(5, 50))
    [resolved] = scenario.apply(val(10, 1234))
    assert (escalated.threshold, escalated.value, escalated.opened_at) == (100, 50, T0)
    assert (resolved.level, resolved.threshold, resolved.value) == (Level.CRITICAL, 1100, 1234)
    assert resolved.alert is AlertKind.THRESHOLD
    assert resolved.opened_at == T0
    assert scenario.book.alerts == {}


def test_running_out_event_carries_the_forecast() -> None:
    scenario = Run()
    [event] = scenario.apply(val(0, 5000, 48))
    assert event.kind is EventKind.RUNNING_OUT
    assert event.alert is AlertKind.RUNNING_OUT
    assert event.forecast == forecast_in(T0, 48)
    assert (event.value, event.threshold, event.level) == (5000, 1000, None)
    assert scenario.book.alerts["account/balance"].alert is AlertKind.RUNNING_OUT


def test_fetch_failing_event_carries_the_error() -> None:
    scenario = Run()
    [event] = scenario.apply(config_err(0))
    assert event.error == FetchError(code=50002, message="boom", config=True)
    assert (event.quota_type, event.alert, event.opened_at) == (None, None, T0)
    assert event.key == "account"
    health = scenario.book.health["account"]
    assert (health.consecutive_failures, health.failing_since, health.pending) == (1, T0, True)


def test_scope_removed_from_config_is_dropped_silently() -> None:
    scenario, _ = run([val(0, 900), config_err(5)])
    assert "account/balance" in scenario.book.alerts
    only_shop = {"shop": TH}
    book, events = step(
        scenario.book, [reading("shop", minutes(10))], only_shop, {}, minutes(10), POLICY
    )
    assert events == []
    assert book.alerts == {}
    assert set(book.health) == {"shop"}


def test_reading_of_an_unconfigured_scope_is_ignored() -> None:
    book, events = step(AlertBook(), [reading("gone", balance=5)], CONFIG, {}, T0, POLICY)
    assert (book, events) == (AlertBook(), [])


def test_scope_without_a_reading_keeps_its_state() -> None:
    scenario, _ = run([val(0, 900)])
    before = scenario.book
    book, events = step(
        before, [reading("shop", minutes(DAY * 5))], CONFIG, {}, minutes(DAY * 5), POLICY
    )
    assert events == []
    assert book.alerts == before.alerts


def test_disabling_a_type_resolves_its_alert() -> None:
    scenario, _ = run([val(0, 50)])
    disabled = {**CONFIG, "account": {**TH, BALANCE: Threshold(0, 0)}}
    book, events = step(
        scenario.book, [reading(balance=5, at=minutes(5))], disabled, {}, minutes(5), POLICY
    )
    assert [summary(e) for e in events] == ["5 resolved balance critical"]
    assert events[0].threshold is None
    assert book.alerts == {}
    _, again = step(book, [reading(balance=5, at=minutes(10))], disabled, {}, minutes(10), POLICY)
    assert again == []


def test_turning_forecasts_off_resolves_running_out() -> None:
    scenario, _ = run([val(0, 5000, 48)])
    now = minutes(5)
    _, events = step(
        scenario.book,
        [reading(balance=5000, at=now)],
        CONFIG,
        {"account": {BALANCE: forecast_in(now, 40)}},
        now,
        NO_FORECAST,
    )
    assert [summary(e) for e in events] == ["5 resolved/running_out balance -"]


def test_events_are_ordered_by_scope_type_then_fetch() -> None:
    book = AlertBook(
        health={
            "account": ScopeHealth(
                consecutive_failures=5, failing_since=T0, announced_at=T0, pending=False
            )
        }
    )
    readings = [
        unassigned("shop", T0),
        reading("account", T0, market=10, balance=900, voice=50),
        failed("shop", T0, config=True),
    ]
    _, events = step(book, readings, CONFIG, {}, T0, POLICY)
    assert [summary(e) for e in events] == [
        "0 fired balance warning",
        "0 fired voice critical",
        "0 fired market critical",
        "0 fetch_recovered fetch -",
        "0 fetch_failing fetch -",
    ]
    assert [e.scope for e in events] == ["account"] * 4 + ["shop"]


def test_the_same_input_gives_the_same_output() -> None:
    readings = [reading("shop", T0, industry=10), reading("account", T0, voice=500)]
    first = step(AlertBook(), readings, CONFIG, {}, T0, POLICY)
    second = step(AlertBook(), list(reversed(readings)), CONFIG, {}, T0, POLICY)
    assert first == second


@pytest.mark.parametrize(
    ("threshold", "margin", "bar"),
    [
        (Threshold(1000, 100), 10.0, 1100),
        (Threshold(1000, 100), 0.0, 1000),
        (Threshold(999, 100), 10.0, 1099),
        (Threshold(100, 10), 12.5, 113),
        (Threshold(3, 1), 10.0, 4),
        (Threshold(0, 100), 10.0, 110),  # only a critical level: resolve above it
        (Threshold(0, 0), 10.0, None),
    ],
)
def test_resolve_bar(threshold: Threshold, margin: float, bar: int | None) -> None:
    assert resolve_bar(threshold, margin) == bar


# --- properties --------------------------------------------------------------------------

ANNOUNCING = {
    EventKind.FIRED,
    EventKind.ESCALATED,
    EventKind.REPEATED,
    EventKind.RUNNING_OUT,
    EventKind.FETCH_FAILING,
}
SCOPES = ("account", "shop")
TYPES = (QuotaType.BALANCE, QuotaType.VOICE)

policies = st.builds(
    Policy,
    repeat_interval=st.sampled_from([None, timedelta(hours=1), timedelta(hours=24)]),
    resolve_margin_pct=st.sampled_from([0.0, 10.0, 25.0]),
    failures_before_alert=st.integers(1, 4),
    forecast_horizon=st.sampled_from([None, timedelta(days=3)]),
)
values = st.one_of(st.integers(0, 1500), st.none(), st.just(HIGH))
outcomes = st.one_of(
    st.tuples(
        st.just("value"),
        st.tuples(values, values),
        st.tuples(*[st.none() | st.integers(1, 24 * 5)] * 2),
    ),
    st.tuples(st.sampled_from(["error", "config", "unassigned"]), st.none(), st.none()),
)
steps = st.tuples(
    st.sampled_from(SCOPES),
    outcomes,
    st.sampled_from([1, 5, 30, 60, 61, 12 * 60, DAY - 1, DAY, DAY + 1, 3 * DAY]),
    st.booleans(),  # deliver the outbox after this step
)


def _reading_for(
    scope: str, outcome: tuple[str, object, object], now: datetime
) -> tuple[ScopeReading, dict[QuotaType, Forecast]]:
    kind, vals, hours = outcome
    if kind == "value":
        assert isinstance(vals, tuple)
        assert isinstance(hours, tuple)
        balances = {t: HIGH for t in QUOTA_TYPES} | dict(zip(TYPES, vals, strict=True))
        fcs = {t: forecast_in(now, h) for t, h in zip(TYPES, hours, strict=True) if h is not None}
        read = ScopeReading(scope=scope, kind=kind_of(scope), read_at=now, balances=balances)
        return read, fcs
    if kind == "unassigned":
        return unassigned(scope, now), {}
    return failed(scope, now, config=kind == "config"), {}


@dataclass
class Announced:
    alert: AlertKind | None  # None: fetch health
    at: datetime
    delivered_at: datetime | None = None
    escalated: bool = False


class Model:
    """The announcement rules (fire, escalate, repeat, resolve), restated independently of
    bot.alerts and checked event by event."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.open: dict[str, Announced] = {}

    def deliver(self, keys: set[str], now: datetime) -> None:
        for key in keys:
            if key in self.open and self.open[key].delivered_at is None:
                self.open[key].delivered_at = now

    def see(self, event: Event) -> None:
        key, now = event.key, event.at
        current = self.open.get(key)
        if event.kind in (EventKind.RESOLVED, EventKind.FETCH_RECOVERED):
            assert current is not None, f"{event.kind} of nothing open at {key}"
            del self.open[key]
        elif event.kind in (EventKind.FIRED, EventKind.RUNNING_OUT, EventKind.FETCH_FAILING):
            # Opening is allowed only when nothing is open, except a threshold alert taking
            # over from a running-out alert (a new, more severe condition).
            replacing = current is not None and (
                event.kind is EventKind.FIRED and current.alert is AlertKind.RUNNING_OUT
            )
            assert current is None or replacing, f"{event.kind} while open at {key}"
            self.open[key] = Announced(alert=event.alert, at=now)
        elif event.kind is EventKind.ESCALATED:
            assert current is not None
            assert current.alert is AlertKind.THRESHOLD
            assert not current.escalated, "escalated twice"
            current.escalated, current.at, current.delivered_at = True, now, None
        else:
            assert event.kind is EventKind.REPEATED
            assert current is not None
            assert current.alert is event.alert
            interval = self.policy.repeat_interval
            assert interval is not None, "repeated with repeats off"
            # Never twice within the interval, counted from the delivered message.
            assert current.delivered_at is not None, "repeated while the last is queued"
            assert now - current.delivered_at >= interval
            assert now - current.at >= interval
            current.at, current.delivered_at = now, None


@settings(max_examples=200, deadline=None)
@given(policies, st.lists(steps, min_size=1, max_size=30))
def test_alert_properties(
    policy: Policy, script: list[tuple[str, tuple[str, object, object], int, bool]]
) -> None:
    book, model, outbox = AlertBook(), Model(policy), set[str]()
    now = T0
    fired: set[str] = set()
    for scope, outcome, gap, delivered in script:
        now += timedelta(minutes=gap)
        read, fcs = _reading_for(scope, outcome, now)
        before = book
        book, events = step(book, [read], CONFIG, {scope: fcs}, now, policy)
        for event in events:
            model.see(event)
            assert event.scope == scope
            assert event.at == now
        fired |= {e.key for e in events if e.kind is EventKind.FIRED}
        outbox |= {e.key for e in events}

        # (c) an error changes no quota alert and says nothing but "cannot read".
        if read.error is not None:
            assert book.alerts == before.alerts
            for event in events:
                assert event.kind in (EventKind.FETCH_FAILING, EventKind.REPEATED)
                assert event.quota_type is None
                assert event.alert is None
                assert event.error == read.error
        # unassigned never alerts.
        if read.unassigned:
            assert all(e.kind in (EventKind.RESOLVED, EventKind.FETCH_RECOVERED) for e in events)
        # The book and the announcements agree on what is open.
        assert set(book.alerts) | {s for s in book.health if book.health[s].failing_since} == set(
            model.open
        )
        assert all(a.level in (Level.WARNING, Level.CRITICAL) for a in book.alerts.values())
        # (d) the book survives the store's JSON round trip at every step.
        assert AlertBook.from_json(json.loads(json.dumps(book.to_json()))) == book

        if delivered:
            now += timedelta(seconds=1)
            book = book.mark_delivered(sorted(outbox), now)
            model.deliver(outbox, now)
            outbox.clear()

    # (b) once every value recovers past the margin, everything open resolves.
    still_open = set(book.alerts)
    resolved: set[str] = set()
    for scope in SCOPES:
        now += timedelta(minutes=5)
        book, events = step(book, [reading(scope, now)], CONFIG, {}, now, policy)
        for event in events:
            model.see(event)
        resolved |= {e.key for e in events if e.kind is EventKind.RESOLVED}
        assert {e.kind for e in events} <= {EventKind.RESOLVED, EventKind.FETCH_RECOVERED}
    assert book.alerts == {}
    assert resolved == still_open
    assert model.open == {}
    assert all(h.failing_since is None for h in book.health.values())
    assert fired <= {alert_key(s, t) for s in SCOPES for t in TYPES}
