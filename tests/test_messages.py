"""Alert messages: one cycle's events -> one readable, valid, escaped Slack message."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from builders import NOW, fired
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts_types import AlertKind, Event, EventKind
from bot.forecast import Burn, Drop, Forecast
from bot.quota import FetchError, Level, QuotaType
from bot.render.alert import render_alert, render_alert_console
from bot.render.format import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    block_texts,
    escape_mrkdwn,
    fmt_duration,
    fmt_int,
    fmt_when,
)


def realistic_cycle() -> list[Event]:
    return [
        Event(
            EventKind.RESOLVED,
            "crm",
            NOW,
            QuotaType.MARKET,
            Level.WARNING,
            value=1250,
            threshold=1100,
            alert=AlertKind.THRESHOLD,
            opened_at=NOW - timedelta(days=1),
        ),
        fired(
            "account",
            QuotaType.BALANCE,
            Level.CRITICAL,
            9,
            100,
            forecast=Forecast(per_hour=0.5, empty_at=NOW + timedelta(hours=18)),
        ),
        Event(
            EventKind.ESCALATED,
            "shop",
            NOW,
            QuotaType.INDUSTRY,
            Level.CRITICAL,
            value=80,
            threshold=100,
            alert=AlertKind.THRESHOLD,
            opened_at=NOW - timedelta(days=2),
            forecast=Forecast(per_hour=50.0, empty_at=NOW + timedelta(hours=1, minutes=36)),
        ),
        Event(
            EventKind.FETCH_FAILING,
            "billing",
            NOW,
            error=FetchError(code=50019, message="server error"),
            opened_at=NOW - timedelta(minutes=15),
        ),
    ]


def assert_valid_blocks(blocks: list[dict[str, Any]]) -> None:
    assert 0 < len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= MAX_HEADER_TEXT
        elif block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= MAX_SECTION_TEXT
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] == "mrkdwn"
                assert 0 < len(element["text"]) <= MAX_SECTION_TEXT
        else:
            pytest.fail(f"unexpected block type {block['type']}")


def assert_no_raw_control_chars(mrkdwn: str) -> None:
    """Only `&amp;`, `&lt;`, `&gt;` entities; never a bare `<`, `>` or a stray `&`."""
    assert "<" not in mrkdwn
    assert ">" not in mrkdwn
    assert not re.search(r"&(?!amp;|lt;|gt;)", mrkdwn)


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    out = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    out += [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    return out


# --- formatting helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0"), (9, "9"), (999, "999"), (1000, "1,000"), (121981, "121,981"), (-1200, "-1,200")],
)
def test_fmt_int(n: int, expected: str) -> None:
    assert fmt_int(n) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "less than a minute"),
        (0, "less than a minute"),
        (59, "less than a minute"),
        (60, "about 1 minute"),
        (40 * 60, "about 40 minutes"),
        (59 * 60 + 40, "about 1 hour"),
        (5 * 3600, "about 5 hours"),
        (23 * 3600 + 50 * 60, "about 1 day"),
        (2 * 86400 + 3 * 3600, "about 2 days"),
        (40 * 86400, "about 40 days"),
    ],
)
def test_fmt_duration(seconds: float, expected: str) -> None:
    assert fmt_duration(seconds) == expected


@pytest.mark.parametrize(
    ("dt", "now", "expected"),
    [
        (datetime(2026, 11, 26, 14, 0, tzinfo=UTC), NOW, "Thu 14:00 UTC"),
        (datetime(2026, 11, 24, 9, 0, tzinfo=UTC), NOW, "Tue 09:00 UTC"),
        (datetime(2026, 12, 1, 8, 0, tzinfo=UTC), NOW, "Tue 08:00 UTC"),
        (datetime(2026, 12, 10, 8, 0, tzinfo=UTC), NOW, "2026-12-10 08:00 UTC"),
        (datetime(2026, 11, 1, 8, 0, tzinfo=UTC), NOW, "2026-11-01 08:00 UTC"),
        # other time zones are shown in UTC; naive datetimes are taken as UTC
        (datetime(2026, 11, 26, 22, 0, tzinfo=timezone(timedelta(hours=8))), NOW, "Thu 14:00 UTC"),
        (datetime(2026, 11, 26, 14, 0), NOW, "Thu 14:00 UTC"),
        # without a `now` there is no "within a week": the unambiguous form
        (datetime(2026, 11, 26, 14, 0, tzinfo=UTC), None, "2026-11-26 14:00 UTC"),
    ],
)
def test_fmt_when(dt: datetime, now: datetime | None, expected: str) -> None:
    assert fmt_when(dt, now) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123> & <http://evil|click>", "&lt;@U123&gt; &amp; &lt;http://evil|click&gt;"),
        ("&lt;", "&amp;lt;"),  # already-escaped text is escaped again, shown literally
    ],
)
def test_escape_mrkdwn(raw: str, expected: str) -> None:
    assert escape_mrkdwn(raw) == expected


# --- the grouped message ----------------------------------------------------------------------


def test_realistic_cycle_reads_well() -> None:
    message = render_alert(realistic_cycle(), NOW)
    assert_valid_blocks(message.blocks)
    text = block_texts(message.blocks)

    assert message.blocks[0]["text"]["text"] == ":rotating_light: SMS quota critical"
    # one section per scope, worst first, account before apps on a tie
    scopes = [t.split("\n")[0] for t in mrkdwn_texts(message.blocks)[:4] if t.startswith("*")]
    assert scopes == ["*account (account)*", "*shop (app)*", "*billing (app)*", "*crm (app)*"]

    account = (
        ":red_circle: *CRITICAL* · *balance (all-purpose)*: 9 left, below critical 100 · new"
        " · runs out in about 18 hours (Fri 03:44 UTC), burning 12/day"
    )
    shop = (
        ":red_circle: *CRITICAL* · *industry (transactional)*: 80 left, below critical 100"
        " · warning → critical · runs out in about 2 hours (Thu 11:20 UTC), burning 1,200/day"
    )
    billing = (
        ":x: *UNKNOWN* · cannot read balance: server error (50019) · failing since Thu 09:29 UTC"
    )
    crm = (
        ":white_check_mark: *RESOLVED* · *market (marketing)*: 1,250 left, back above 1,100,"
        " now ok (was warning)"
    )
    for line in (account, shop, billing, crm):
        assert line in text.split("\n"), f"missing line:\n{line}\nin:\n{text}"
    assert "2 critical · 1 unreadable · 1 resolved · as of Thu 09:44 UTC" in text

    fallback = message.text
    for piece in (
        "SMS quota critical: ",
        "account [CRITICAL] balance (all-purpose): 9 left, below critical 100 · new",
        "shop [CRITICAL] industry (transactional): 80 left, below critical 100",
        "billing [UNKNOWN] cannot read balance: server error (50019)",
        "crm [RESOLVED] market (marketing): 1,250 left, back above 1,100, now ok (was warning)",
    ):
        assert piece in fallback


def test_console_rendering_is_plain_text() -> None:
    out = render_alert_console(realistic_cycle(), NOW)
    lines = out.split("\n")
    assert lines[0].startswith("SMS quota critical — 2 critical")
    assert "  account (account)" in lines
    assert (
        "    [CRITICAL] balance (all-purpose): 9 left, below critical 100 · new"
        " · runs out in about 18 hours (Fri 03:44 UTC), burning 12/day"
    ) in lines
    assert (
        "    [RESOLVED] market (marketing): 1,250 left, back above 1,100, now ok (was warning)"
        in (lines)
    )
    assert "*" not in out
    assert ":red_circle:" not in out


def cfg_error(scope: str, code: int, message: str) -> Event:
    return Event(EventKind.FETCH_FAILING, scope, NOW, error=FetchError(code, message, config=True))


@pytest.mark.parametrize(
    ("events", "header"),
    [
        (realistic_cycle()[:1], ":white_check_mark: SMS quota back to normal"),
        (
            [
                realistic_cycle()[0],
                Event(EventKind.FETCH_RECOVERED, "billing", NOW, opened_at=NOW),
            ],
            ":white_check_mark: SMS quota back to normal",
        ),
        (
            [fired("a", QuotaType.VOICE, Level.WARNING, 700, 1000), realistic_cycle()[0]],
            ":warning: SMS quota low",
        ),
        (
            [
                Event(
                    EventKind.RUNNING_OUT,
                    "a",
                    NOW,
                    QuotaType.MARKET,
                    value=5000,
                    alert=AlertKind.RUNNING_OUT,
                    forecast=Forecast(100.0, NOW + timedelta(days=2)),
                )
            ],
            ":hourglass_flowing_sand: SMS quota running out",
        ),
        (
            [fired("a", QuotaType.VOICE, Level.WARNING, 700, 1000), realistic_cycle()[3]],
            ":x: SMS balance cannot be read",
        ),
        (realistic_cycle(), ":rotating_light: SMS quota critical"),
    ],
)
def test_header_is_the_worst_event(events: list[Event], header: str) -> None:
    assert render_alert(events, NOW).blocks[0]["text"]["text"] == header


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            fired("account", QuotaType.VOICE, Level.WARNING, 702, 1000),
            ":large_orange_circle: *WARNING* · *voice*: 702 left, below warning 1,000 · new",
        ),
        (
            Event(
                EventKind.REPEATED,
                "account",
                NOW,
                QuotaType.BALANCE,
                Level.CRITICAL,
                9,
                100,
                AlertKind.THRESHOLD,
                opened_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
            ),
            ":red_circle: *CRITICAL* · *balance (all-purpose)*: 9 left, below critical 100"
            " · still open since Tue 09:00 UTC (reminder)",
        ),
        (
            Event(
                EventKind.RUNNING_OUT,
                "account",
                NOW,
                QuotaType.INDUSTRY,
                value=121981,
                threshold=1000,
                alert=AlertKind.RUNNING_OUT,
                forecast=Forecast(2500.0, NOW + timedelta(days=2, hours=1)),
            ),
            ":hourglass_flowing_sand: *RUNNING OUT* · *industry (transactional)*: 121,981 left,"
            " still above warning 1,000 · new"
            " · runs out in about 2 days (Sat 10:44 UTC), burning 60,000/day",
        ),
        (
            Event(
                EventKind.RESOLVED,
                "account",
                NOW,
                QuotaType.INDUSTRY,
                value=200000,
                alert=AlertKind.RUNNING_OUT,
            ),
            ":white_check_mark: *RESOLVED* · *industry (transactional)*: 200,000 left,"
            " no longer projected to run out soon",
        ),
        (
            cfg_error("account", 50002, "auth failed"),
            ":x: *UNKNOWN* · cannot read balance: auth failed (50002)"
            " — check JPUSH_DEV_KEY/JPUSH_DEV_SECRET",
        ),
        (
            cfg_error("shop", 50001, "missing auth"),
            ":x: *UNKNOWN* · cannot read balance: missing auth (50001)"
            ' — check app_key/master_secret of "shop" in JPUSH_APPS',
        ),
        (
            cfg_error("shop", 50008, "SMS service not enabled"),
            ":x: *UNKNOWN* · cannot read balance: SMS service not enabled (50008)"
            " — enable the SMS service in the JPush console",
        ),
        (
            Event(
                EventKind.REPEATED,
                "shop",
                NOW,
                error=FetchError(None, "timeout"),
                opened_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
            ),
            ":x: *UNKNOWN* · cannot read balance: timeout"
            " · still open since Wed 08:00 UTC (reminder)",
        ),
        (
            Event(
                EventKind.FETCH_RECOVERED,
                "shop",
                NOW,
                opened_at=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
            ),
            ":large_green_circle: *RECOVERED* · balance readable again, now ok"
            " (was failing since Thu 08:00 UTC)",
        ),
    ],
)
def test_event_lines(event: Event, expected: str) -> None:
    section = render_alert([event], NOW).blocks[2]["text"]["text"]
    assert section.split("\n")[1] == expected


def test_error_messages_and_scope_names_are_escaped() -> None:
    evil = "<!channel> & <http://evil.example|click here>"
    events = [
        Event(EventKind.FETCH_FAILING, "a&b", NOW, error=FetchError(50016, evil)),
        fired("<!here>", QuotaType.BALANCE, Level.WARNING, 5, 10),
    ]
    message = render_alert(events, NOW)
    for text in [*mrkdwn_texts(message.blocks), message.text]:
        assert_no_raw_control_chars(text)
    joined = block_texts(message.blocks)
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|click here&gt; (50016)" in joined
    assert "*a&amp;b (app)*" in joined
    assert "*&lt;!here&gt; (app)*" in joined
    # the terminal gets the text as it is
    assert "<!channel> & <http://evil.example|click here> (50016)" in render_alert_console(
        events, NOW
    )


def test_long_error_message_is_bounded() -> None:
    event = Event(EventKind.FETCH_FAILING, "shop", NOW, error=FetchError(50019, "x" * 10_000))
    message = render_alert([event], NOW)
    assert_valid_blocks(message.blocks)
    assert len(message.text) < 1000


def test_many_scopes_fit_in_fifty_blocks() -> None:
    events = [
        fired(f"app{i:03d}", t, Level.CRITICAL, 5, 100)
        for i in range(120)
        for t in (QuotaType.BALANCE, QuotaType.MARKET)
    ]
    message = render_alert(events, NOW)
    assert_valid_blocks(message.blocks)
    assert len(message.blocks) == MAX_BLOCKS
    last = message.blocks[-1]
    assert last["type"] == "context"
    shown = len(message.blocks) - 3  # header, summary, overflow
    assert last["elements"][0]["text"].startswith(f"…and {120 - shown} more: ")
    assert "app119" in last["elements"][0]["text"]
    assert len(message.text) <= MAX_FALLBACK_TEXT
    assert message.text.endswith(" more")


def test_no_events_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="no events"):
        render_alert([], NOW)
    with pytest.raises(ValueError, match="no events"):
        render_alert_console([], NOW)


# --- properties -------------------------------------------------------------------------------

_kinds = st.sampled_from(list(EventKind))
_levels = st.sampled_from([None, Level.WARNING, Level.CRITICAL])
_types = st.sampled_from(list(QuotaType))


@st.composite
def events_strategy(draw: st.DrawFn) -> Event:
    kind = draw(_kinds)
    fetch = kind in (EventKind.FETCH_FAILING, EventKind.FETCH_RECOVERED)
    return Event(
        kind=kind,
        scope=draw(st.text(min_size=1, max_size=40)),
        at=NOW,
        quota_type=None if fetch else draw(_types),
        level=draw(_levels),
        value=draw(st.none() | st.integers(0, 10**9)),
        threshold=draw(st.none() | st.integers(0, 10**6)),
        alert=draw(st.none() | st.sampled_from(list(AlertKind))),
        forecast=draw(
            st.none()
            | st.builds(
                Forecast,
                per_hour=st.floats(0, 1e6),
                empty_at=st.datetimes(
                    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)
                ).map(lambda d: d.replace(tzinfo=UTC)),
            )
        ),
        error=draw(st.none() | st.builds(FetchError, st.none() | st.integers(), st.text())),
        opened_at=draw(st.none() | st.just(NOW - timedelta(hours=3))),
        drop=draw(
            st.none() | st.builds(Drop, st.integers(0, 10**9), st.floats(0, 100), st.floats(0, 1e8))
        ),
        burn=draw(st.none() | st.builds(Burn, st.floats(0, 1e9), st.floats(1e-3, 1e9))),
        pool=draw(st.none() | st.integers(0, 10**9)),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(events_strategy(), min_size=1, max_size=80))
def test_any_cycle_renders_valid_escaped_blocks(events: list[Event]) -> None:
    message = render_alert(events, NOW)
    assert_valid_blocks(message.blocks)
    for text in [*mrkdwn_texts(message.blocks), message.text]:
        assert_no_raw_control_chars(text)
    assert 0 < len(message.text) <= MAX_FALLBACK_TEXT
    assert render_alert_console(events, NOW)
