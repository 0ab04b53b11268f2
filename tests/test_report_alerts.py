"""bot.report_alerts: delivery reports moving the alert book (pure, tables + properties)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts import Policy, step
from bot.alerts_types import AlertBook, AlertKind, Event, EventKind, OpenAlert
from bot.delivery_reports import DeliveryReport
from bot.quota import QUOTA_TYPES, Level, ScopeKind, ScopeReading, Threshold
from bot.report_alerts import QUIET, RATE_LIMIT_CLEARS_AFTER, resolve_by_reading, step_reports

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
POLICY = Policy(repeat_interval=timedelta(hours=24))
REPEAT = POLICY.repeat_interval
APPS = ("crm", "shop")
THRESHOLDS = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
FAILING = "shop/sends_failing"
LIMITED = "shop/rate_limited"


def report(status: int | None, scope: str = "shop", type_: str = "SMS_REPORT") -> DeliveryReport:
    return DeliveryReport(
        scope=scope, nonce="1", signature="s", sent_at=T0, type=type_, status=status
    )


def run(
    steps: list[tuple[timedelta, list[int]]], alerts: dict[str, OpenAlert] | None = None
) -> tuple[dict[str, OpenAlert], list[list[tuple[EventKind, AlertKind | None]]]]:
    """Feed batches of statuses at offsets from T0; the events of each batch, in short form."""
    current = dict(alerts or {})
    seen = []
    for offset, statuses in steps:
        current, events = step_reports(
            current, [report(s) for s in statuses], APPS, T0 + offset, REPEAT
        )
        seen.append([(e.kind, e.alert) for e in events])
    return current, seen


FIRED_FAILING = (EventKind.FIRED, AlertKind.SENDS_FAILING)
RESOLVED_FAILING = (EventKind.RESOLVED, AlertKind.SENDS_FAILING)
FIRED_LIMITED = (EventKind.FIRED, AlertKind.RATE_LIMITED)
RESOLVED_LIMITED = (EventKind.RESOLVED, AlertKind.RATE_LIMITED)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # One 4005 opens a critical alert; more of them (and replays) say nothing more.
        ([(0 * S, [4005]), (2 * S, [4005, 4005])], [[FIRED_FAILING], []]),
        # A 4001 right after a 4005 (another quota type still works) does not resolve...
        ([(0 * S, [4005]), (5 * S, [4001])], [[FIRED_FAILING], []]),
        # ...a 4001 after QUIET without a 4005 does.
        ([(0 * S, [4005]), (QUIET, [4001])], [[FIRED_FAILING], [RESOLVED_FAILING]]),
        # Interleaved 4001/4005 keep it open; it resolves once the 4005s stop.
        (
            [(0 * S, [4005]), (50 * S, [4001, 4005]), (100 * S, [4001]), (111 * S, [4001])],
            [[FIRED_FAILING], [], [], [RESOLVED_FAILING]],
        ),
        # A new 4005 after resolving opens a new alert.
        (
            [(0 * S, [4005]), (QUIET, [4001]), (QUIET + S, [4005])],
            [[FIRED_FAILING], [RESOLVED_FAILING], [FIRED_FAILING]],
        ),
        # 4006 opens a warning; it resolves after 15 minutes without one, not before.
        (
            [(0 * S, [4006]), (10 * S, [4006]), (RATE_LIMIT_CLEARS_AFTER, [])],
            [[FIRED_LIMITED], [], []],
        ),
        (
            [(0 * S, [4006]), (10 * S, [4006]), (RATE_LIMIT_CLEARS_AFTER + 10 * S, [])],
            [[FIRED_LIMITED], [], [RESOLVED_LIMITED]],
        ),
        # A 4001 does not end rate limiting; both alerts live side by side.
        (
            [(0 * S, [4006, 4005]), (QUIET, [4001])],
            [[FIRED_LIMITED, FIRED_FAILING], [RESOLVED_FAILING]],
        ),
        # Other statuses and no status at all change nothing.
        ([(0 * S, [4002, 4003, 4004, 4100, 4007, 9999])], [[]]),
        ([(0 * S, [4001])], [[]]),
    ],
)
def test_report_alert_table(
    steps: list[tuple[timedelta, list[int]]],
    expected: list[list[tuple[EventKind, AlertKind | None]]],
) -> None:
    assert run(steps)[1] == expected


def test_fired_event_names_scope_level_and_key() -> None:
    alerts, events = step_reports({}, [report(4005)], APPS, T0, REPEAT)
    (event,) = events
    assert event == Event(
        kind=EventKind.FIRED,
        scope="shop",
        at=T0,
        level=Level.CRITICAL,
        alert=AlertKind.SENDS_FAILING,
        opened_at=T0,
    )
    assert event.key == FAILING
    assert alerts[FAILING].pending
    _, (limited,) = step_reports({}, [report(4006)], APPS, T0, REPEAT)
    assert (limited.key, limited.level) == (LIMITED, Level.WARNING)


def test_unknown_scope_and_replies_are_ignored() -> None:
    reports = [report(4005, scope="gone"), report(None, type_="SMS_REPLY")]
    assert step_reports({}, reports, APPS, T0, REPEAT) == ({}, [])


def test_repeat_only_after_delivery_and_the_repeat_interval() -> None:
    alerts, _ = step_reports({}, [report(4005)], APPS, T0, REPEAT)
    later = T0 + timedelta(hours=25)
    # Still queued (pending): no repeat however long it waits.
    _, events = step_reports(alerts, [report(4005)], APPS, later, REPEAT)
    assert events == []
    delivered = AlertBook(alerts=alerts).mark_delivered([FAILING], T0 + S).alerts
    _, events = step_reports(delivered, [report(4005)], APPS, T0 + timedelta(hours=2), REPEAT)
    assert events == []
    _, events = step_reports(delivered, [report(4005)], APPS, later, REPEAT)
    assert [e.kind for e in events] == [EventKind.REPEATED]


def reading(**values: int | None) -> ScopeReading:
    balances = {t: values.get(t.value, 5000) for t in QUOTA_TYPES}
    return ScopeReading(scope="shop", kind=ScopeKind.APP, read_at=T0, balances=balances)


@pytest.mark.parametrize(
    ("poll", "offset", "resolves"),
    [
        (reading(), QUIET, True),
        (reading(), 10 * S, False),  # the poll the 4005 itself triggered
        (reading(industry=0), QUIET, False),
        (reading(industry=999), QUIET, False),
        (reading(industry=1000), QUIET, True),
        (reading(voice=None), QUIET, True),  # unassigned is not judged
        (
            ScopeReading(scope="shop", kind=ScopeKind.APP, read_at=T0, unassigned=True),
            QUIET,
            False,
        ),
    ],
)
def test_poll_resolves_when_quotas_are_above_warning(
    poll: ScopeReading, offset: timedelta, resolves: bool
) -> None:
    alerts, _ = step_reports({}, [report(4005)], APPS, T0, REPEAT)
    events = resolve_by_reading(alerts, poll, THRESHOLDS, T0 + offset)
    assert ([e.kind for e in events] == [EventKind.RESOLVED]) is resolves
    assert (FAILING not in alerts) is resolves


def test_alert_engine_step_keeps_report_alerts_and_resolves_them_by_poll() -> None:
    alerts, _ = step_reports({}, [report(4005), report(4006)], APPS, T0, REPEAT)
    book = AlertBook(alerts=alerts)
    thresholds = {"shop": THRESHOLDS, "crm": THRESHOLDS}
    # A poll soon after: both kept (not dropped as unknown keys), nothing said.
    kept, events = step(book, [reading()], thresholds, {}, T0 + 10 * S, POLICY)
    assert set(kept.alerts) == {FAILING, LIMITED}
    assert events == []
    # A poll after QUIET resolves the quota alert; after 15 minutes the rate limit ends too.
    later, events = step(kept, [reading()], thresholds, {}, T0 + RATE_LIMIT_CLEARS_AFTER, POLICY)
    assert [(e.kind, e.key) for e in events] == [
        (EventKind.RESOLVED, FAILING),
        (EventKind.RESOLVED, LIMITED),
    ]
    assert later.alerts == {}
    # A scope removed from the configuration takes its report alerts with it.
    gone, _ = step(book, [], {"crm": THRESHOLDS}, {}, T0, POLICY)
    assert gone.alerts == {}


def test_book_round_trips_report_alerts() -> None:
    alerts, _ = step_reports({}, [report(4005)], APPS, T0, REPEAT)
    book = AlertBook(alerts=alerts)
    assert AlertBook.from_json(book.to_json()) == book


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1200),
            st.lists(st.sampled_from([4001, 4005, 4006, 4002]), max_size=4),
        ),
        max_size=25,
    )
)
def test_events_alternate_and_state_matches(batches: list[tuple[int, list[int]]]) -> None:
    """Per alert: fired and resolved strictly alternate starting with fired, and an alert is
    open exactly when its last event was fired (or repeated)."""
    alerts: dict[str, OpenAlert] = {}
    now = T0
    last: dict[str, EventKind] = {}
    for gap, statuses in batches:
        now += timedelta(seconds=gap)
        alerts, events = step_reports(alerts, [report(s) for s in statuses], APPS, now, REPEAT)
        for event in events:
            previous = last.get(event.key, EventKind.RESOLVED)
            if event.kind is EventKind.FIRED:
                assert previous is EventKind.RESOLVED
            else:
                assert previous is not EventKind.RESOLVED
            last[event.key] = event.kind
        for key in (FAILING, LIMITED):
            assert (key in alerts) is (last.get(key, EventKind.RESOLVED) is not EventKind.RESOLVED)
        assert all(a.level is Level.CRITICAL for k, a in alerts.items() if k == FAILING)
        assert set(alerts) <= {FAILING, LIMITED}
