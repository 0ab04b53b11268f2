"""bot.incidents: one live conversation per scope (pure, table tests + hypothesis properties)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import incidents
from bot.alerts import Policy
from bot.alerts import step as alerts_step
from bot.alerts_types import AlertBook, AlertKind, Event, EventKind
from bot.forecast import Burn, Drop
from bot.incidents import (
    IncidentBook,
    IncidentPolicy,
    NoIncident,
    Notice,
    NoticeKind,
    Op,
    OpKind,
    act,
)
from bot.quota import (
    QUOTA_TYPES,
    FetchError,
    Level,
    QuotaType,
    ScopeKind,
    ScopeReading,
    Threshold,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
POLICY = IncidentPolicy(channel="C-MAIN", channels={"shop": "C-SHOP"}, mention="<!here>")
B, V = QuotaType.BALANCE, QuotaType.VOICE


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ev(
    kind: EventKind,
    scope: str = "account",
    quota_type: QuotaType | None = B,
    level: Level | None = Level.WARNING,
    value: int = 500,
) -> Event:
    fetch = kind in (EventKind.FETCH_FAILING, EventKind.FETCH_RECOVERED)
    return Event(
        kind=kind,
        scope=scope,
        at=T0,
        quota_type=None if fetch else quota_type,
        level=None if fetch else level,
        value=None if fetch else value,
        threshold=None if fetch else 1000,
        alert=None if fetch else AlertKind.THRESHOLD,
        error=FetchError(code=50019, message="server error", config=False) if fetch else None,
    )


FIRED_W = ev(EventKind.FIRED)
FIRED_C = ev(EventKind.FIRED, level=Level.CRITICAL, value=50)
ESCALATED = ev(EventKind.ESCALATED, level=Level.CRITICAL, value=50)
REPEATED = ev(EventKind.REPEATED)
RESOLVED = ev(EventKind.RESOLVED, value=5000)
VOICE_W = ev(EventKind.FIRED, quota_type=V)
VOICE_RESOLVED = ev(EventKind.RESOLVED, quota_type=V, value=5000)
FAILING = ev(EventKind.FETCH_FAILING)
RECOVERED = ev(EventKind.FETCH_RECOVERED)
DROP = Event(
    kind=EventKind.SUDDEN_DROP,
    scope="account",
    at=T0,
    quota_type=B,
    value=40_000,
    drop=Drop(amount=60_000, percent=60.0, seconds=300.0),
)
BURNING = Event(
    kind=EventKind.BURNING_FAST,
    scope="account",
    at=T0,
    quota_type=B,
    level=Level.WARNING,
    value=40_000,
    alert=AlertKind.BURN,
    burn=Burn(last_hour=6_000.0, usual=100.0),
)
BURN_RESOLVED = replace(BURNING, kind=EventKind.RESOLVED, level=None)


def sig(op: Op) -> str:
    """`root`, `update`, `reply`; `!` broadcast, `@` mention, `+` a notice, `:n` views."""
    text = op.kind.value
    if op.broadcast:
        text += "!"
    if op.mention:
        text += "@"
    if op.notice is not None:
        text += f"+{op.notice.kind.value}"
    return text


@dataclass
class World:
    book: IncidentBook = field(default_factory=IncidentBook)
    n: int = 0
    log: list[list[str]] = field(default_factory=list)

    def cycle(self, events: Sequence[Event], minutes: float = 0) -> list[Op]:
        self.n += 1
        plan = incidents.step(self.book, events, at(minutes), POLICY, f"c{self.n:04d}")
        self.book = plan.book
        self.log.append([sig(op) for op in plan.ops])
        return plan.ops

    def act(self, scope: str, notice: Notice, minutes: float = 0) -> list[Op]:
        self.n += 1
        self.book, ops = act(self.book, scope, notice, at(minutes), f"c{self.n:04d}")
        self.log.append([sig(op) for op in ops])
        return ops


ACK = Notice(NoticeKind.ACK, by="U1")


def snooze_until(minutes: float) -> Notice:
    return Notice(NoticeKind.SNOOZE, by="U2", until=at(minutes))


# Each case: steps of ("events", [...], minute) or ("act", Notice, minute); expected plan
# signatures per step, and which scopes are open at the end.
CASES: dict[str, tuple[list[tuple[str, object, float]], list[list[str]], set[str]]] = {
    "warning opens a root": ([("events", [FIRED_W], 0)], [["root"]], {"account"}),
    "critical root mentions": ([("events", [FIRED_C], 0)], [["root@"]], {"account"}),
    "escalation: update + broadcast with mention": (
        [("events", [FIRED_W], 0), ("events", [ESCALATED], 5)],
        [["root"], ["update", "reply!@"]],
        {"account"},
    ),
    "another type going low: update + quiet reply": (
        [("events", [FIRED_W], 0), ("events", [VOICE_W], 5)],
        [["root"], ["update", "reply"]],
        {"account"},
    ),
    "repeat reminds in the channel": (
        [("events", [FIRED_W], 0), ("events", [REPEATED], 5)],
        [["root"], ["update", "reply!"]],
        {"account"},
    ),
    "fetch failing is broadcast, recovery closes": (
        [("events", [FIRED_W], 0), ("events", [FAILING], 5), ("events", [RESOLVED], 9)],
        [["root"], ["update", "reply!"], ["update", "reply"]],
        {"account"},
    ),
    "resolve: update + reply + resolved notice": (
        [("events", [FIRED_W], 0), ("events", [RESOLVED], 5)],
        [["root"], ["update", "reply", "reply+resolved"]],
        set(),
    ),
    "reopen after resolve: a new root": (
        [("events", [FIRED_W], 0), ("events", [RESOLVED], 5), ("events", [FIRED_W], 9)],
        [["root"], ["update", "reply", "reply+resolved"], ["root"]],
        {"account"},
    ),
    "partial resolve keeps the incident open": (
        [
            ("events", [FIRED_W, VOICE_W], 0),
            ("events", [VOICE_RESOLVED], 5),
            ("events", [RESOLVED], 9),
        ],
        [["root"], ["update", "reply"], ["update", "reply", "reply+resolved"]],
        set(),
    ),
    "ack silences reminders": (
        [("events", [FIRED_W], 0), ("act", ACK, 1), ("events", [REPEATED], 5)],
        [["root"], ["update", "reply+ack"], ["update"]],
        {"account"},
    ),
    "ack cleared by escalation, then reminders again": (
        [
            ("events", [FIRED_W], 0),
            ("act", ACK, 1),
            ("events", [ESCALATED], 5),
            ("events", [REPEATED], 9),
        ],
        [["root"], ["update", "reply+ack"], ["update", "reply!@"], ["update", "reply!"]],
        {"account"},
    ),
    "ack cleared by another type going low": (
        [
            ("events", [FIRED_W], 0),
            ("act", ACK, 1),
            ("events", [VOICE_W], 5),
            ("events", [REPEATED], 9),
        ],
        [["root"], ["update", "reply+ack"], ["update", "reply"], ["update", "reply!"]],
        {"account"},
    ),
    "snooze keeps warnings in the thread, critical breaks through": (
        [
            ("events", [FIRED_W], 0),
            ("act", snooze_until(60), 1),
            ("events", [VOICE_W], 5),
            ("events", [REPEATED], 6),
            ("events", [FAILING], 7),
            ("events", [ESCALATED], 9),
        ],
        [
            ["root"],
            ["update", "reply+snooze"],
            ["update", "reply"],
            ["update", "reply"],
            ["update", "reply"],
            ["update", "reply!@"],
        ],
        {"account"},
    ),
    "snooze expiry reminds once while open": (
        [
            ("events", [FIRED_W], 0),
            ("act", snooze_until(60), 1),
            ("events", [], 30),
            ("events", [], 61),
            ("events", [], 90),
        ],
        [["root"], ["update", "reply+snooze"], [], ["update", "reply!+snooze_over"], []],
        {"account"},
    ),
    "snooze expiry of a critical incident mentions": (
        [("events", [FIRED_C], 0), ("act", snooze_until(60), 1), ("events", [], 61)],
        [["root@"], ["update", "reply+snooze"], ["update", "reply!@+snooze_over"]],
        {"account"},
    ),
    "unsnooze and unack": (
        [
            ("events", [FIRED_W], 0),
            ("act", snooze_until(60), 1),
            ("act", Notice(NoticeKind.UNSNOOZE, by="U1"), 2),
            ("events", [], 61),
        ],
        [["root"], ["update", "reply+snooze"], ["update", "reply+unsnooze"], []],
        {"account"},
    ),
    "a sudden drop alone: a root closed at once": ([("events", [DROP], 0)], [["root"]], set()),
    "a sudden drop in an open incident is a reply and leaves nothing open": (
        [("events", [FIRED_W], 0), ("events", [DROP], 5), ("events", [RESOLVED], 9)],
        [["root"], ["update", "reply"], ["update", "reply", "reply+resolved"]],
        set(),
    ),
    "a sudden drop does not clear an ack": (
        [
            ("events", [FIRED_W], 0),
            ("act", ACK, 1),
            ("events", [DROP], 5),
            ("events", [REPEATED], 9),
        ],
        [["root"], ["update", "reply+ack"], ["update", "reply"], ["update"]],
        {"account"},
    ),
    "burning fast beside a low balance: resolving it keeps the incident open": (
        [("events", [FIRED_W, BURNING], 0), ("events", [BURN_RESOLVED], 5)],
        [["root"], ["update", "reply"]],
        {"account"},
    ),
    "closing events with nothing open: a closed root": (
        [("events", [RECOVERED], 0)],
        [["root"]],
        set(),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_incident_table(name: str) -> None:
    steps, expected, open_scopes = CASES[name]
    world = World()
    for what, payload, minute in steps:
        if what == "events":
            assert isinstance(payload, list)
            world.cycle(payload, minute)
        else:
            assert isinstance(payload, Notice)
            world.act("account", payload, minute)
    assert world.log == expected
    assert set(world.book.open) == open_scopes


def test_resolved_root_update_shows_closed_state() -> None:
    world = World()
    world.cycle([FIRED_W])
    ops = world.cycle([RESOLVED], 5)
    update = ops[0]
    assert update.kind is OpKind.UPDATE
    (view,) = update.views
    assert view.closed_at == at(5) and not view.alerts


def test_ack_is_recorded_and_shown() -> None:
    world = World()
    world.cycle([FIRED_W])
    ops = world.act("account", ACK, 1)
    (view,) = ops[0].views
    assert view.ack is not None and view.ack.by == "U1" and view.ack.at == at(1)
    assert world.book.open["account"].ack == view.ack


def test_act_without_incident() -> None:
    with pytest.raises(NoIncident):
        act(IncidentBook(), "shop", ACK, T0, "x")


def test_snooze_in_the_past_is_refused() -> None:
    world = World()
    world.cycle([FIRED_W])
    with pytest.raises(ValueError, match="future"):
        world.act("account", snooze_until(-1), 0)


def test_per_app_channel() -> None:
    world = World()
    ops = world.cycle([ev(EventKind.FIRED, scope="shop"), FIRED_W])
    assert {(op.views[0].scope, op.channel) for op in ops} == {
        ("account", "C-MAIN"),
        ("shop", "C-SHOP"),
    }


def test_no_mention_configured() -> None:
    plan = incidents.step(IncidentBook(), [FIRED_C], T0, IncidentPolicy(channel="C"), "c1")
    assert [op.mention for op in plan.ops] == [False]


def apps(n: int, kind: EventKind = EventKind.FIRED, level: Level = Level.WARNING) -> list[Event]:
    return [ev(kind, scope=f"app{i:02d}", level=level) for i in range(n)]


def test_flood_five_get_their_own_roots() -> None:
    plan = incidents.step(IncidentBook(), apps(5), T0, IncidentPolicy(channel="C"), "c1")
    assert [sig(op) for op in plan.ops] == ["root"] * 5


def test_flood_guard_one_summary_root() -> None:
    world = World()
    ops = world.cycle(apps(12))
    assert [sig(op) for op in ops] == ["root"]
    assert len(ops[0].views) == 12
    assert {i.root_id for i in world.book.open.values()} == {ops[0].id}
    # One of them escalates: the shared root is updated with every incident it shows.
    ops = world.cycle([ev(EventKind.ESCALATED, scope="app03", level=Level.CRITICAL)], 5)
    assert [sig(op) for op in ops] == ["update", "reply!@"]
    assert len(ops[0].views) == 12 and ops[1].root_id == ops[0].root_id


def test_flood_caps_broadcasts_per_channel() -> None:
    world = World()
    world.cycle(apps(3))
    # Three escalations and six new incidents in one cycle: one summary root + 3 broadcasts.
    ops = world.cycle(
        [ev(EventKind.ESCALATED, scope=f"app{i:02d}", level=Level.CRITICAL) for i in range(3)]
        + [ev(EventKind.FIRED, scope=f"new{i}") for i in range(6)],
        5,
    )
    assert sum(op.top_level for op in ops) == 4
    # Ten escalations after nine new roots would be 19; the cap holds it at six.
    world = World()
    world.cycle(apps(10))
    ops = world.cycle(
        [ev(EventKind.ESCALATED, scope=f"app{i:02d}", level=Level.CRITICAL) for i in range(10)]
        + [ev(EventKind.FIRED, scope=f"new{i}") for i in range(4)],
        5,
    )
    assert sum(op.top_level for op in ops) == 6
    assert [sig(op) for op in ops[:4]] == ["root"] * 4


def test_json_round_trip() -> None:
    world = World()
    world.cycle([FIRED_W, VOICE_W, ev(EventKind.FIRED, scope="shop")])
    world.act("account", ACK, 1)
    world.act("shop", snooze_until(90), 2)
    ops = world.cycle([ESCALATED, FAILING], 5)
    book = world.book.record_root(world.book.open["account"].root_id, "1700000000.000100")
    raw = json.dumps(book.to_json())
    assert IncidentBook.from_json(json.loads(raw)) == book
    for op in ops:
        assert Op.from_json(json.loads(json.dumps(op.to_json()))) == op
    assert IncidentBook.from_json(None) == IncidentBook()


def test_record_root() -> None:
    world = World()
    ops = world.cycle(apps(7))
    book = world.book.record_root(ops[0].id, "123.456")
    assert {i.root_ts for i in book.open.values()} == {"123.456"}
    assert book.record_root("unknown", "1.0") == book


# --- properties: drive the real alert engine, then the incidents ------------------------------

SCOPES = ("account", "shop", "mail")
TH = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
ENGINE = Policy(
    repeat_interval=timedelta(minutes=30),
    failures_before_alert=1,
    forecast_horizon=None,
)

value = st.sampled_from([20, 500, 900, 1050, 5000, None])
poll = st.one_of(
    st.just("fail"),
    st.fixed_dictionaries({t.value: value for t in (B, V)}),
)
cycle_input = st.fixed_dictionaries({s: poll for s in SCOPES})
action = st.tuples(
    st.sampled_from(SCOPES),
    st.sampled_from([NoticeKind.ACK, NoticeKind.UNACK, NoticeKind.SNOOZE, NoticeKind.UNSNOOZE]),
    st.integers(min_value=1, max_value=120),
)
scenario = st.lists(st.tuples(cycle_input, st.lists(action, max_size=2)), max_size=25)


def _reading(scope: str, spec: object, now: datetime) -> ScopeReading:
    kind = ScopeKind.ACCOUNT if scope == "account" else ScopeKind.APP
    if spec == "fail":
        error = FetchError(code=50019, message="server error", config=False)
        return ScopeReading(scope=scope, kind=kind, read_at=now, error=error)
    assert isinstance(spec, dict)
    balances = {t: spec.get(t.value, 50_000) for t in QUOTA_TYPES}
    return ScopeReading(scope=scope, kind=kind, read_at=now, balances=balances)


@settings(max_examples=150, deadline=None)
@given(scenario)
def test_incidents_follow_the_alert_engine(steps: list[tuple[dict[str, object], list]]) -> None:
    alert_book = AlertBook()
    book = IncidentBook()
    posted_roots: set[str] = set()
    thresholds = {s: TH for s in SCOPES}
    policy = IncidentPolicy(channel="C", channels={"shop": "C-SHOP"}, flood_roots=1)
    for n, (polls, actions) in enumerate(steps):
        now = at(10 * n)
        readings = [_reading(s, spec, now) for s, spec in polls.items()]
        alert_book, events = alerts_step(alert_book, readings, thresholds, {}, now, ENGINE)
        # Everything counts as delivered at once, so the engine keeps repeating on time.
        alert_book = alert_book.mark_delivered(sorted(alert_book.alerts), now)
        alert_book = alert_book.mark_delivered(sorted(alert_book.health), now)
        plan = incidents.step(book, events, now, policy, f"c{n:04d}")
        book = plan.book
        ops = list(plan.ops)
        # Ids sort in plan order: each destination sends in id order.
        assert [op.id for op in ops] == sorted(op.id for op in ops)
        for i, (scope, kind, minutes) in enumerate(actions):
            notice = Notice(kind, by="U1", until=now + timedelta(minutes=minutes))
            try:
                book, acted = act(book, scope, notice, now, f"c{n:04d}-a{i}")
            except NoIncident:
                assert scope not in book.open
                continue
            ops.extend(acted)
        # Every reply and update has a root posted before it (earlier in order).
        for op in ops:
            if op.kind is OpKind.ROOT:
                posted_roots.add(op.id)
            else:
                assert op.root_id in posted_roots
        # An incident is open exactly for the scopes with an open alert or failing fetch.
        with_alerts = {k.split("/")[0] for k in alert_book.alerts}
        failing = {s for s, h in alert_book.health.items() if h.failing_since is not None}
        assert set(book.open) == with_alerts | failing
        # Never two open incidents for one scope, and each is filed under its own scope.
        assert all(i.scope == s for s, i in book.open.items())
        assert len({i.id for i in book.open.values()}) == len(book.open)
        for incident in book.open.values():
            assert incident.root_id in posted_roots
        for channel in {"C", "C-SHOP"}:
            assert sum(op.top_level and op.channel == channel for op in ops) <= 6
