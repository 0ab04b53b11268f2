"""Every alert kind and every /sms-balance reply rendered in each language, compared with
tests/snapshots (`NAME.txt` in English, `NAME.zh-CN.txt` in Chinese, times in Asia/Shanghai).
Alerts include what each chat robot (DingTalk, Feishu, WeCom) receives.

These files are what an operator reads; review a diff in them like a diff in the copy.
Regenerate after a deliberate change with `UPDATE_SNAPSHOTS=1 .venv/bin/pytest
tests/test_render_snapshots.py` and read every changed file before committing it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from builders import NOW, Q, fired, values, view

from bot.alerts_types import AlertKind, Event, EventKind
from bot.commands import Command
from bot.destinations import ChatKind
from bot.errors import JPushConfigError, JPushError
from bot.forecast import Burn, Drop, Forecast
from bot.jpush import interpret_response
from bot.quota import FetchError, Level, QuotaType, ScopeKind
from bot.render.alert import render_alert, render_alert_console
from bot.render.chat import render_chat_alert
from bot.render.check import check_json, render_table
from bot.render.format import DEFAULT, Locale, block_texts
from bot.render.slash import render_refresh_pending, render_reply
from bot.views import ScopeView

SNAPSHOTS = Path(__file__).parent / "snapshots"
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
LOCALES = {"en": DEFAULT, "zh-CN": Locale.of("zh-CN", ZoneInfo("Asia/Shanghai"))}


def jpush_error(status: int, code: int) -> FetchError:
    """The FetchError the JPush client records for this answer, its words included."""
    body = json.dumps({"error": {"code": code, "message": "server says so"}}).encode()
    try:
        interpret_response(status, body, kind=ScopeKind.APP)
    except JPushError as exc:
        return FetchError(exc.code, exc.message, config=isinstance(exc, JPushConfigError))
    raise AssertionError(f"{status}/{code} is not an error")


AUTH_FAILED = jpush_error(401, 50002)
SERVER_ERROR = jpush_error(500, 50019)
RATE_LIMITED = jpush_error(429, 50009)
SMS_DISABLED = jpush_error(403, 50008)


# --- alert events ------------------------------------------------------------------------------


def event(kind: EventKind, scope: str = "account", **kw: Any) -> Event:
    return Event(kind, scope, NOW, **kw)


def quota(
    kind: EventKind,
    t: QuotaType,
    level: Level,
    value: int,
    threshold: int,
    scope: str = "account",
    **kw: Any,
) -> Event:
    return event(
        kind,
        scope,
        quota_type=t,
        level=level,
        value=value,
        threshold=threshold,
        alert=AlertKind.THRESHOLD,
        **kw,
    )


DRAINING = Forecast(per_hour=50.0, empty_at=NOW + 2 * DAY + 4 * HOUR)

ALERTS: dict[str, list[Event]] = {
    "fired_warning": [fired("account", Q.VOICE, Level.WARNING, 702, 1000, opened_at=NOW)],
    "fired_critical": [
        fired(
            "account",
            Q.BALANCE,
            Level.CRITICAL,
            9,
            100,
            opened_at=NOW,
            forecast=Forecast(per_hour=0.5, empty_at=NOW + 18 * HOUR),
        )
    ],
    "escalated": [
        quota(
            EventKind.ESCALATED,
            Q.INDUSTRY,
            Level.CRITICAL,
            80,
            100,
            opened_at=NOW - 2 * DAY,
            forecast=DRAINING,
        )
    ],
    "repeated": [
        quota(EventKind.REPEATED, Q.BALANCE, Level.CRITICAL, 9, 100, opened_at=NOW - 2 * DAY)
    ],
    "resolved": [
        quota(EventKind.RESOLVED, Q.MARKET, Level.WARNING, 1250, 1100, opened_at=NOW - DAY)
    ],
    "running_out": [
        event(
            EventKind.RUNNING_OUT,
            quota_type=Q.INDUSTRY,
            value=121_981,
            threshold=1000,
            alert=AlertKind.RUNNING_OUT,
            forecast=Forecast(per_hour=2500.0, empty_at=NOW + 2 * DAY + HOUR),
        )
    ],
    "running_out_resolved": [
        event(
            EventKind.RESOLVED,
            quota_type=Q.INDUSTRY,
            value=200_000,
            alert=AlertKind.RUNNING_OUT,
            opened_at=NOW - DAY,
        )
    ],
    "fetch_failing_config": [
        event(EventKind.FETCH_FAILING, "shop", error=AUTH_FAILED, opened_at=NOW),
        event(EventKind.FETCH_FAILING, "account", error=SMS_DISABLED, opened_at=NOW),
    ],
    "fetch_failing_transient": [
        event(EventKind.FETCH_FAILING, "shop", error=SERVER_ERROR, opened_at=NOW - 15 * MINUTE),
        event(EventKind.FETCH_FAILING, "crm", error=RATE_LIMITED, opened_at=NOW - 15 * MINUTE),
    ],
    "fetch_repeated": [
        event(EventKind.REPEATED, "shop", error=SERVER_ERROR, opened_at=NOW - DAY - 2 * HOUR)
    ],
    "fetch_recovered": [event(EventKind.FETCH_RECOVERED, "shop", opened_at=NOW - 90 * MINUTE)],
    "sudden_drop": [
        event(
            EventKind.SUDDEN_DROP,
            quota_type=Q.INDUSTRY,
            value=40_000,
            drop=Drop(amount=60_000, percent=60.0, seconds=300.0),
        ),
        event(
            EventKind.SUDDEN_DROP,
            "shop",
            quota_type=Q.MARKET,
            value=2_500,
            drop=Drop(amount=7_500, percent=75.0, seconds=3600.0),
        ),
    ],
    "burning_fast": [
        event(
            EventKind.BURNING_FAST,
            "shop",
            quota_type=Q.INDUSTRY,
            level=Level.WARNING,
            value=48_200,
            alert=AlertKind.BURN,
            burn=Burn(last_hour=5_400.0, usual=120.0),
            opened_at=NOW,
        )
    ],
    "burning_fast_resolved": [
        event(
            EventKind.RESOLVED,
            "shop",
            quota_type=Q.INDUSTRY,
            value=41_000,
            alert=AlertKind.BURN,
            burn=Burn(last_hour=130.0, usual=120.0),
            opened_at=NOW - 3 * HOUR,
        )
    ],
    "pool_advice": [
        fired("shop", Q.INDUSTRY, Level.WARNING, 420, 1000, opened_at=NOW, pool=54_321),
    ],
    "sends_failing": [
        event(
            EventKind.FIRED,
            "shop",
            level=Level.CRITICAL,
            alert=AlertKind.SENDS_FAILING,
            opened_at=NOW,
        ),
        quota(EventKind.FIRED, Q.INDUSTRY, Level.CRITICAL, 0, 100, scope="shop", opened_at=NOW),
    ],
    "sends_failing_resolved": [
        event(
            EventKind.RESOLVED,
            "shop",
            level=Level.CRITICAL,
            alert=AlertKind.SENDS_FAILING,
            opened_at=NOW - 90 * MINUTE,
        )
    ],
    "rate_limited": [
        event(EventKind.FIRED, "crm", level=Level.WARNING, alert=AlertKind.RATE_LIMITED)
    ],
    "rate_limited_repeated_and_resolved": [
        event(
            EventKind.REPEATED,
            "crm",
            level=Level.WARNING,
            alert=AlertKind.RATE_LIMITED,
            opened_at=NOW - DAY - HOUR,
        ),
        event(
            EventKind.RESOLVED,
            "shop",
            level=Level.WARNING,
            alert=AlertKind.RATE_LIMITED,
            opened_at=NOW - 20 * MINUTE,
        ),
    ],
    "grouped": [
        quota(
            EventKind.RESOLVED,
            Q.MARKET,
            Level.WARNING,
            1250,
            1100,
            scope="crm",
            opened_at=NOW - DAY,
        ),
        fired("account", Q.BALANCE, Level.CRITICAL, 9, 100, opened_at=NOW),
        fired("account", Q.VOICE, Level.WARNING, 702, 1000, opened_at=NOW),
        quota(
            EventKind.ESCALATED,
            Q.INDUSTRY,
            Level.CRITICAL,
            80,
            100,
            scope="shop",
            opened_at=NOW - 2 * DAY,
            forecast=DRAINING,
        ),
        event(EventKind.FETCH_FAILING, "billing", error=SERVER_ERROR, opened_at=NOW - 15 * MINUTE),
        event(EventKind.FETCH_RECOVERED, "blog", opened_at=NOW - HOUR),
    ],
}


def alert_text(events: list[Event], loc: Locale) -> str:
    message = render_alert(events, NOW, loc)
    chats = [
        part
        for kind in ChatKind
        for part in (
            f"== {kind.value} ==",
            json.dumps(
                render_chat_alert(kind, events, NOW, loc),
                ensure_ascii=False,
                indent=1,
                sort_keys=True,
            ),
        )
    ]
    return "\n".join(
        [
            "== console ==",
            render_alert_console(events, NOW, loc),
            "== slack blocks ==",
            block_texts(message.blocks),
            "== slack fallback text ==",
            message.text,
            *chats,
        ]
    )


# --- /sms-balance replies and the check table --------------------------------------------------

ACCOUNT_READ = view(
    "account",
    values(balance=9, voice=702, industry=121_981, market=11_683),
    forecasts={Q.INDUSTRY: DRAINING, Q.BALANCE: Forecast(0.5, NOW + 18 * HOUR)},
    trend={
        Q.BALANCE: [400 - 16 * i for i in range(25)],
        Q.VOICE: [702] * 10,
        Q.INDUSTRY: [123_181 - 50 * i for i in range(25)],
        Q.MARKET: [11_683],
    },
)
# Industry burning eight times its usual hour: shown beside its forecast.
ACCOUNT = replace(ACCOUNT_READ, burns={Q.INDUSTRY: Burn(last_hour=400.0, usual=50.0)})
SHOP = view("shop", error=AUTH_FAILED, trend={Q.BALANCE: [5000, 4990], Q.VOICE: [300]})
BILLING = view("billing", error=SERVER_ERROR, read_ago=40 * MINUTE)
CRM = view("crm", unassigned=True)
BLOG = view("blog", values(market=None))
LATER = view("later", read_ago=None)
BLOG_REPORTED = view(
    "blog",
    values(market=None),
    deliveries={"4001": 1204, "4005": 3, "4003": 2, "4100": 1, "4010": 1, "reply": 7},
)
VIEWS = [ACCOUNT, SHOP, BILLING, CRM, BLOG, LATER]
STALE = [view(v.scope, values(voice=702), read_ago=2 * HOUR) for v in (ACCOUNT, BLOG)]
STORE_DOWN = "Error 111 connecting to 127.0.0.1:6379. Connection refused."


def reply_text(reply: dict[str, Any]) -> str:
    return "\n".join(
        [
            "== slack blocks ==",
            block_texts(reply["blocks"]),
            "== slack fallback text ==",
            reply["text"],
        ]
    )


def show(loc: Locale, scope: str | None = None, views: list[ScopeView] = VIEWS, **kw: Any) -> str:
    reply = render_reply(
        Command("show", scope=scope), views, NOW, stale_after=30 * MINUTE, loc=loc, **kw
    )
    return reply_text(reply)


REPLIES: dict[str, Callable[[Locale], str]] = {
    "reply_all": lambda loc: show(loc),
    "reply_scope_with_trend_and_forecast": lambda loc: show(loc, "account"),
    "reply_scope_unreadable": lambda loc: show(loc, "billing", [BILLING]),
    "reply_app_with_delivery_reports": lambda loc: show(loc, "blog", [BLOG_REPORTED]),
    "reply_scope_not_read_yet": lambda loc: show(loc, "later", []),
    "reply_stale": lambda loc: show(loc, views=STALE),
    "reply_no_scopes": lambda loc: show(loc, views=[]),
    "reply_refresh_pending_all": lambda loc: reply_text(render_refresh_pending(None, loc)),
    "reply_refresh_pending_scope": lambda loc: reply_text(render_refresh_pending("shop", loc)),
    "reply_help": lambda loc: reply_text(render_reply(Command("help"), VIEWS, NOW, loc=loc)),
    "reply_unknown_word": lambda loc: reply_text(
        render_reply(Command("unknown", word="balanse"), VIEWS, NOW, loc=loc)
    ),
    "reply_store_down": lambda loc: reply_text(
        render_reply(Command("show"), VIEWS, NOW, store_error=STORE_DOWN, loc=loc)
    ),
    "reply_help_store_down": lambda loc: reply_text(
        render_reply(Command("help"), VIEWS, NOW, store_error=STORE_DOWN, loc=loc)
    ),
    "check_table": lambda loc: render_table(VIEWS, NOW, loc),
}
# Read by programs: the same in every language.
CHECK_JSON = json.dumps(check_json(VIEWS), indent=1, ensure_ascii=False)

CASES: dict[str, Callable[[Locale], str]] = {
    **{
        f"alert_{name}": (lambda loc, events=events: alert_text(events, loc))
        for name, events in ALERTS.items()
    },
    **REPLIES,
}


def snapshot_name(name: str, language: str) -> str:
    return name if language == "en" else f"{name}.{language}"


def assert_snapshot(stem: str, text: str) -> None:
    path = SNAPSHOTS / f"{stem}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and read it"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("language", sorted(LOCALES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_matches_its_snapshot(name: str, language: str) -> None:
    assert_snapshot(snapshot_name(name, language), CASES[name](LOCALES[language]) + "\n")


def test_check_json_matches_its_snapshot() -> None:
    assert_snapshot("check_json", CHECK_JSON + "\n")


def test_every_snapshot_file_has_a_case() -> None:
    expected = {snapshot_name(n, lang) for n in CASES for lang in LOCALES} | {"check_json"}
    stale = {p.stem for p in SNAPSHOTS.glob("*.txt")} - expected
    assert not stale, f"snapshots without a case (delete them): {sorted(stale)}"


@pytest.mark.parametrize("language", sorted(LOCALES))
def test_no_error_code_is_printed_twice(language: str) -> None:
    for name, make in CASES.items():
        for code in ("50002", "50008", "50009", "50019"):
            for line in make(LOCALES[language]).splitlines():
                assert line.count(code) <= 1, f"{name}: {line}"
