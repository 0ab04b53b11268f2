"""The /sms-balance command: parsing, sparklines and the ephemeral Block Kit replies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import NOW, Q, view
from hypothesis import given
from hypothesis import strategies as st

from bot.commands import Command, parse_command
from bot.forecast import Forecast
from bot.quota import FetchError, QuotaType
from bot.render.format import MAX_BLOCKS, MAX_HEADER_TEXT, MAX_SECTION_TEXT, block_texts
from bot.render.slash import SPARK_CHARS, render_refresh_pending, render_reply, sparkline, usage

KNOWN = ["account", "shop", "crm"]


ACCOUNT = view(
    "account",
    {Q.BALANCE: 9, Q.VOICE: 702, Q.INDUSTRY: 121981, Q.MARKET: 11683},
    forecasts={Q.INDUSTRY: Forecast(50.0, datetime(2026, 11, 28, 14, 0, tzinfo=UTC))},
    trend={
        Q.BALANCE: [400 - 16 * i for i in range(25)],
        Q.VOICE: [702] * 10,
        Q.INDUSTRY: [123181 - 50 * i for i in range(25)],
        Q.MARKET: [11683],
    },
)
SHOP = view("shop", error=FetchError(50002, "auth failed", config=True))
CRM = view("crm", unassigned=True)
VIEWS = [ACCOUNT, SHOP, CRM]


def assert_valid_reply(reply: dict[str, Any]) -> None:
    assert reply["response_type"] == "ephemeral"
    assert isinstance(reply["text"], str)
    assert reply["text"]
    blocks = reply["blocks"]
    assert 0 < len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert len(block["text"]["text"]) <= MAX_HEADER_TEXT
        elif block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= MAX_SECTION_TEXT
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "context":
            for element in block["elements"]:
                assert element["type"] == "mrkdwn"
                assert 0 < len(element["text"]) <= MAX_SECTION_TEXT
        else:
            pytest.fail(f"unexpected block {block}")
    for text in [reply["text"], *_mrkdwn(blocks)]:
        assert "<" not in text
        assert ">" not in text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text)


def _mrkdwn(blocks: list[dict[str, Any]]) -> list[str]:
    out = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    return out + [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]


def lines_of(reply: dict[str, Any]) -> list[str]:
    return block_texts(reply["blocks"]).split("\n")


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command("show")),
        ("   \t ", Command("show")),
        ("all", Command("show")),
        ("  ALL ", Command("show")),
        ("account", Command("show", scope="account")),
        ("Shop", Command("show", scope="shop")),
        ("  crm\u00a0", Command("show", scope="crm")),
        ("refresh", Command("refresh")),
        ("REFRESH all", Command("refresh")),
        ("refresh shop", Command("refresh", scope="shop")),
        ("refresh   Account ", Command("refresh", scope="account")),
        ("help", Command("help")),
        ("HELP", Command("help")),
        ("--help", Command("help")),
        ("bogus", Command("unknown", word="bogus")),
        ("refresh bogus", Command("unknown", word="bogus")),
        ("refresh shop extra", Command("unknown", word="extra")),
        ("shop extra", Command("unknown", word="extra")),
        ("all shop", Command("unknown", word="shop")),
        ("Bogus shop", Command("unknown", word="Bogus")),
        ("help me", Command("unknown", word="me")),
        ("<!channel>", Command("unknown", word="<!channel>")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text, KNOWN) == expected


def test_parse_without_scopes() -> None:
    assert parse_command("account", []) == Command("unknown", word="account")
    assert parse_command("", []) == Command("show")


# --- sparkline --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "width", "expected"),
    [
        ([], 24, ""),
        ([5], 24, "▄"),
        ([7, 7, 7, 7], 24, "▄▄▄▄"),
        ([0, 7], 24, "▁█"),
        ([0, 1, 2, 3, 4, 5, 6, 7], 24, "▁▂▃▄▅▆▇█"),
        ([7, 6, 5, 4, 3, 2, 1, 0], 24, "█▇▆▅▄▃▂▁"),
        # downsampled to 4 buckets of 2, the last value of each bucket, scaled to the whole series
        ([0, 1, 2, 3, 4, 5, 6, 7], 4, "▂▄▆█"),
        ([0, 100, 0, 100], 2, "██"),
        ([100, 0, 100, 0], 2, "▁▁"),
        (list(range(100)), 5, "▂▄▅▇█"),
        ([-10, 0, 10], 24, "▁▅█"),
    ],
)
def test_sparkline(values: list[int], width: int, expected: str) -> None:
    assert sparkline(values, width) == expected


def test_sparkline_rejects_zero_width() -> None:
    with pytest.raises(ValueError, match="width"):
        sparkline([1, 2], 0)


@given(st.lists(st.integers(-(10**9), 10**9), max_size=500), st.integers(1, 60))
def test_sparkline_properties(values: list[int], width: int) -> None:
    line = sparkline(values, width)
    assert len(line) == min(len(values), width)
    assert set(line) <= set(SPARK_CHARS)
    if values:
        # the right end is always the current value: top when it is the maximum, and so on
        if values[-1] == max(values) and len(set(values)) > 1:
            assert line[-1] == "█"
        if len(set(values)) == 1:
            assert set(line) == {"▄"}


# --- show -------------------------------------------------------------------------------------


def test_show_all() -> None:
    reply = render_reply(Command("show"), VIEWS, NOW, stale_after=timedelta(minutes=15))
    assert_valid_reply(reply)
    lines = lines_of(reply)
    assert lines[0] == ":red_circle: SMS quotas: critical"
    expected = [
        "*account (account)* — :red_circle: critical",
        "_read 3 minutes ago (09:41 UTC)_",
        ":red_circle: *balance (all-purpose)*: *9* · critical",
        ":large_orange_circle: *voice*: *702* · warning",
        ":large_green_circle: *industry (transactional)*: *121,981* · ok"
        " · runs out in about 2 days (Sat 14:00 UTC), burning 1,200/day",
        ":large_green_circle: *market (marketing)*: *11,683* · ok",
        "*shop (app)* — :x: unknown",
        "_last tried 3 minutes ago (09:41 UTC)_",
        ":x: cannot read: auth failed (50002) — check app_key/master_secret of"
        ' "shop" in JPUSH_APPS',
        "*crm (app)* — :white_circle: unassigned",
        "_read 3 minutes ago (09:41 UTC)_",
        ":white_circle: quota not assigned to this app (50033)",
    ]
    assert lines[1 : 1 + len(expected)] == expected
    assert lines[-1] == "as of Thu 09:44 UTC · `/sms-balance help` for usage"
    # no sparklines in the overview
    assert not set("".join(lines)) & set(SPARK_CHARS)
    assert reply["text"] == (
        "SMS quotas: critical — account critical (balance 9 critical, voice 702 warning,"
        " industry 121,981 ok, market 11,683 ok); shop unknown (cannot read: auth failed"
        " (50002)); crm unassigned (quota not assigned)"
    )


def test_show_one_scope_has_trend_and_thresholds() -> None:
    reply = render_reply(Command("show", scope="account"), VIEWS, NOW)
    assert_valid_reply(reply)
    lines = lines_of(reply)
    assert lines[0] == ":red_circle: SMS quota for account: critical"
    assert lines[1] == "*account (account)* — :red_circle: critical"
    assert lines[3] == (
        ":red_circle: *balance (all-purpose)*: *9* `█▇▇▇▇▆▆▆▅▅▅▅▄▄▄▃▃▃▂▂▂▂▁▁`"
        " · critical · warn &lt; 1,000 / crit &lt; 100"
    )
    assert lines[4] == (
        ":large_orange_circle: *voice*: *702* `▄▄▄▄▄▄▄▄▄▄` · warning"
        " · warn &lt; 1,000 / crit &lt; 100"
    )
    assert "· runs out in about 2 days (Sat 14:00 UTC), burning 1,200/day" in lines[5]
    assert "shop" not in block_texts(reply["blocks"])
    assert reply["text"].startswith("SMS quota for account: critical — account critical (")


def test_unassigned_type_and_no_forecast() -> None:
    crm = view("crm", {Q.BALANCE: None, Q.VOICE: 5000, Q.INDUSTRY: 4400, Q.MARKET: 50})
    reply = render_reply(Command("show", scope="crm"), [crm], NOW)
    assert_valid_reply(reply)
    lines = lines_of(reply)
    assert lines[3] == ":white_circle: *balance (all-purpose)*: — · unassigned"
    assert (
        lines[6]
        == ":red_circle: *market (marketing)*: *50* · critical · warn &lt; 1,000 / crit &lt; 100"
    )
    assert "runs out" not in block_texts(reply["blocks"])
    assert "balance unassigned" in reply["text"]


def test_stale_reading_says_so() -> None:
    old = view("account", {t: 5000 for t in QuotaType}, read_ago=timedelta(hours=2))
    reply = render_reply(Command("show"), [old], NOW, stale_after=timedelta(minutes=15))
    assert_valid_reply(reply)
    assert ":warning: *last read 2 hours ago (07:44 UTC) — JPush may be unreachable*" in lines_of(
        reply
    )
    fresh = render_reply(Command("show"), [old], NOW, stale_after=timedelta(hours=3))
    assert "_read 2 hours ago (07:44 UTC)_" in lines_of(fresh)
    no_limit = render_reply(Command("show"), [old], NOW)
    assert "JPush may be unreachable" not in block_texts(no_limit["blocks"])


def test_error_scope_shows_last_known_values_from_trend() -> None:
    failing = view(
        "shop",
        error=FetchError(None, "timed out after 10 s"),
        trend={Q.BALANCE: [50, 40], Q.MARKET: [9000]},
    )
    reply = render_reply(Command("show", scope="shop"), [failing], NOW)
    assert_valid_reply(reply)
    lines = lines_of(reply)
    assert ":x: cannot read: timed out after 10 s" in lines
    assert "last known: balance 40 · market 9,000" in lines
    assert lines[0] == ":x: SMS quota for shop: unknown"


def test_not_read_yet() -> None:
    pending = view("shop", read_ago=None)
    reply = render_reply(Command("show"), [pending], NOW)
    assert_valid_reply(reply)
    assert ":hourglass: not read yet — the first poll is on its way" in lines_of(reply)
    assert reply["text"] == "SMS quotas: unknown — shop unknown (not read yet)"
    missing = render_reply(Command("show", scope="crm"), [pending], NOW)
    assert_valid_reply(missing)
    assert "not read yet" in missing["text"]


def test_refresh_renders_like_show() -> None:
    assert render_reply(Command("refresh", scope="account"), VIEWS, NOW) == render_reply(
        Command("show", scope="account"), VIEWS, NOW
    )


def test_many_scopes_fit_in_fifty_blocks() -> None:
    views = [view(f"app{i:03d}", {t: 5000 for t in QuotaType}) for i in range(80)]
    reply = render_reply(Command("show"), views, NOW)
    assert_valid_reply(reply)
    assert len(reply["blocks"]) == MAX_BLOCKS
    overflow = reply["blocks"][-2]["elements"][0]["text"]
    assert overflow.startswith("…and 33 more: app047 (ok), ")
    assert overflow.endswith("app079 (ok)")


# --- help, unknown, store error, refresh pending ----------------------------------------------


def test_help_lists_commands_and_scopes() -> None:
    reply = render_reply(Command("help"), VIEWS, NOW)
    assert_valid_reply(reply)
    text = block_texts(reply["blocks"])
    for piece in ("`/sms-balance refresh [SCOPE]`", "`/sms-balance help`", "`/sms-balance SCOPE`"):
        assert piece in text
    assert "Known scopes: `account`, `shop`, `crm`" in text


def test_unknown_word_is_escaped_and_named() -> None:
    command = parse_command("<!channel> & <@U123|boss>", KNOWN)
    reply = render_reply(command, VIEWS, NOW)
    assert_valid_reply(reply)
    text = block_texts(reply["blocks"])
    assert ':question: I don\'t know "&lt;!channel&gt;".' in text
    assert "Known scopes: `account`, `shop`, `crm`" in text
    assert "<!channel>" not in reply["text"]
    assert "&lt;!channel&gt;" in reply["text"]


def test_unknown_long_word_is_clipped() -> None:
    reply = render_reply(Command("unknown", word="x" * 5000), VIEWS, NOW)
    assert_valid_reply(reply)
    assert len(reply["blocks"][0]["text"]["text"]) < 200


def test_store_error() -> None:
    reply = render_reply(
        Command("show"), [], NOW, store_error="redis://db:6379: Connection refused <x>"
    )
    assert_valid_reply(reply)
    assert reply["text"] == (
        ":warning: The state store is unreachable, so there are no numbers to show right now:"
        " redis://db:6379: Connection refused &lt;x&gt;. The bot keeps retrying; try again in a"
        " minute."
    )
    # help still works, with a note
    helped = render_reply(Command("help"), [], NOW, store_error="down")
    assert_valid_reply(helped)
    assert "state store is unreachable" in block_texts(helped["blocks"])
    assert "/sms-balance refresh" in block_texts(helped["blocks"])


def test_refresh_pending() -> None:
    reply = render_refresh_pending("shop")
    assert_valid_reply(reply)
    assert reply["text"] == (
        ":hourglass_flowing_sand: Reading JPush for *shop* now… fresh numbers follow in a moment"
    )
    everything = render_refresh_pending(None)
    assert everything["text"] == (
        ":hourglass_flowing_sand: Reading JPush now… fresh numbers follow in a moment"
    )


def test_usage_without_scopes() -> None:
    assert "No scopes are configured yet" in usage([])
    assert "Known scopes: `a&amp;b`" in usage(["a&b"])


@given(st.text(max_size=300))
def test_any_text_gets_a_valid_reply(text: str) -> None:
    reply = render_reply(parse_command(text, KNOWN), VIEWS, NOW)
    assert_valid_reply(reply)
