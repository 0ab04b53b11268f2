"""Chinese output: quota types as JPush names them, times in TZ, columns that line up, and
chat robot messages that fit. (Every surface's full text is in test_render_snapshots.)"""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from builders import NOW, fired, values, view
from hypothesis import given, settings
from hypothesis import strategies as st
from test_messages import events_strategy

from bot.chat_formats import (
    DINGTALK_MARKDOWN_MAX_BYTES,
    FEISHU_CARD_TEXT_MAX_BYTES,
    WECOM_MARKDOWN_MAX_BYTES,
    utf8_len,
)
from bot.destinations import ChatKind
from bot.quota import FetchError, Level, QuotaType
from bot.render.alert import render_alert, render_alert_console
from bot.render.chat import render_chat_alert
from bot.render.check import render_table
from bot.render.format import Locale, display_width, fmt_when

LOCALES = {
    "en": Locale.of("en"),
    "zh-CN": Locale.of("zh-CN", ZoneInfo("Asia/Shanghai")),
}


# --- what Chinese output must hold ------------------------------------------------------------


def test_chinese_names_quota_types_as_the_jpush_console_does() -> None:
    loc = LOCALES["zh-CN"]
    events = [
        fired("account", QuotaType.BALANCE, Level.CRITICAL, 9, 100),
        fired("account", QuotaType.VOICE, Level.WARNING, 702, 1000),
        fired("account", QuotaType.INDUSTRY, Level.WARNING, 900, 1000),
        fired("account", QuotaType.MARKET, Level.WARNING, 121981, 200000),
    ]
    for text in (
        render_alert_console(events, NOW, loc),
        render_alert(events, NOW, loc).text,
        *(json.dumps(render_chat_alert(k, events, NOW, loc), ensure_ascii=False) for k in ChatKind),
    ):
        for name in ("全类型", "语音", "行业", "营销", "剩余 121,981"):
            assert name in text
        for english in ("CRITICAL", "WARNING", "left", "balance", "below"):
            assert english not in text


def test_chinese_times_are_in_tz_with_a_readable_zone() -> None:
    loc = LOCALES["zh-CN"]
    assert fmt_when(NOW, NOW, loc) == "周四 17:44 北京时间"
    assert fmt_when(NOW + timedelta(days=30), NOW, loc) == "2026-12-26 17:44 北京时间"
    # a zone without a Chinese name keeps its abbreviation, or its offset when it has none
    assert fmt_when(NOW, NOW, Locale.of("zh-CN", ZoneInfo("Asia/Tokyo"))) == "周四 18:44 JST"
    assert fmt_when(NOW, NOW, Locale.of("en", ZoneInfo("Asia/Dubai"))) == "Thu 13:44 UTC+4"
    assert fmt_when(NOW, NOW, Locale.of("en", ZoneInfo("Asia/Kathmandu"))) == "Thu 15:29 UTC+5:45"
    assert fmt_when(NOW, NOW, Locale.of("en", UTC)) == "Thu 09:44 UTC"


def test_check_table_columns_line_up_with_chinese_words() -> None:
    views = [
        view("account", values(balance=9, voice=702, industry=121_981, market=11_683)),
        view("shop", error=FetchError(50002, "auth failed", config=True)),
    ]
    table = render_table(views, NOW, LOCALES["zh-CN"])
    rows = table.split("\n")[:-1]
    # the VALUE column is right-aligned: its last digit ends at the same terminal column
    header_end = display_width(rows[0].split("余量")[0] + "余量")
    for row in rows[1:5]:
        value = row.split()[2]
        assert display_width(row.split(value)[0] + value) == header_end, row


# --- any cycle, any robot ---------------------------------------------------------------------

LIMITS = {
    ChatKind.DINGTALK: DINGTALK_MARKDOWN_MAX_BYTES,
    ChatKind.FEISHU: FEISHU_CARD_TEXT_MAX_BYTES,
    ChatKind.WECOM: WECOM_MARKDOWN_MAX_BYTES,
}


def chat_body(kind: ChatKind, payload: dict[str, Any]) -> str:
    if kind is ChatKind.DINGTALK:
        return str(payload["markdown"]["text"])
    if kind is ChatKind.WECOM:
        return str(payload["markdown"]["content"])
    return str(payload["card"]["elements"][0]["text"]["content"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(events_strategy(), min_size=1, max_size=60),
    st.sampled_from(list(LOCALES)),
    st.sampled_from(list(ChatKind)),
)
def test_any_cycle_fits_its_robot(events: list[Any], language: str, kind: ChatKind) -> None:
    body = chat_body(kind, render_chat_alert(kind, events, NOW, LOCALES[language]))
    assert 0 < utf8_len(body) <= LIMITS[kind]
    # event text cannot open a tag (<font>, <at id=all>): every "<" is escaped
    assert body.count("<") == body.count("\\<")


@pytest.mark.parametrize("kind", list(ChatKind))
def test_a_huge_cycle_keeps_the_worst_scopes_and_counts_the_rest(kind: ChatKind) -> None:
    events = [
        fired(f"app-{i:03d}", QuotaType.INDUSTRY, Level.WARNING, 900 - i, 1000) for i in range(400)
    ]
    events.append(fired("account", QuotaType.BALANCE, Level.CRITICAL, 9, 100))
    body = chat_body(kind, render_chat_alert(kind, events, NOW, LOCALES["zh-CN"]))
    assert utf8_len(body) <= LIMITS[kind]
    assert "account（账号）" in body  # the critical scope comes first
    if kind is ChatKind.WECOM:
        assert body.endswith("\n…")  # clipped at a line, and says so
