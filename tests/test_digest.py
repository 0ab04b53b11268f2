"""The daily summary: due once per local day, caught up the same day only; and end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from botproc import BotProcess, free_port
from builders import StartSim
from fake_chats import FakeRobot
from fake_slack import FakeSlack
from pydantic import SecretStr
from world import APP_KEY, alerting_env, healthy_simulator

from bot.alerts_types import Op, OpKind
from bot.destinations import ChatKind
from bot.digest import DigestPolicy, chat_digest_op, digest_due, digest_op
from bot.forecast import Forecast
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind, Threshold
from bot.render.chat import render_chat_digest
from bot.render.format import DEFAULT, Locale
from bot.simulator import JPushSimulator
from bot.views import unread_views

ROBOT_SECRET = "SECdigest-0123456789"
UTC9 = DigestPolicy(at=time(9, 0), tz=UTC, channel="C")
SHANGHAI = DigestPolicy(at=time(9, 0), tz=ZoneInfo("Asia/Shanghai"), channel="C")


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "policy", "last", "due"),
    [
        (utc(3, 8, 59), UTC9, None, None),  # not yet
        (utc(3, 9, 0), UTC9, None, "2026-12-03"),  # the minute itself
        (utc(3, 9, 0), UTC9, "2026-12-03", None),  # already sent today (restart, replica)
        (utc(3, 15, 0), UTC9, "2026-12-02", "2026-12-03"),  # down at 09:00: caught up today
        (utc(4, 8, 0), UTC9, "2026-12-02", None),  # yesterday's missed one is not sent late
        (utc(4, 9, 1), UTC9, "2026-12-03", "2026-12-04"),  # the next day
        (utc(3, 0, 30), SHANGHAI, None, None),  # 08:30 in Shanghai
        (utc(3, 1, 0), SHANGHAI, None, "2026-12-03"),  # 09:00 in Shanghai
        (utc(3, 23, 0), SHANGHAI, "2026-12-03", None),  # 07:00 on the 4th there
        (utc(4, 1, 0), SHANGHAI, "2026-12-03", "2026-12-04"),  # 09:00 on the 4th there
    ],
)
def test_digest_due(now: datetime, policy: DigestPolicy, last: str | None, due: str | None) -> None:
    assert digest_due(now, policy, last) == due


def test_digest_names_every_scope() -> None:
    th = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
    scopes = [
        Scope(name=n, kind=ScopeKind.APP, key="k", secret=SecretStr("s"), thresholds=th)
        for n in ("alpha", "beta", "gamma")
    ]
    op = digest_op("d1", "2026-12-03", UTC9, unread_views(scopes), {}, utc(3, 9))
    assert op.kind is OpKind.DIGEST and op.channel == "C"
    shown = op.text + str(op.blocks)
    assert all(name in shown for name in ("alpha", "beta", "gamma"))
    assert "no open incidents" in shown


@pytest.mark.parametrize(
    ("loc", "title", "voice", "none"),
    [
        (
            DEFAULT,
            "SMS quota daily summary · 2026-12-03",
            "voice: runs out in about 2 days (Sat 09:00 UTC), burning 1,200/day",
            "no open incidents",
        ),
        (
            Locale.of("zh-CN", UTC),
            "短信余量每日汇总 · 2026-12-03",
            "语音：预计约 2 天后用完（周六 09:00 UTC），消耗 1,200 条/天",
            "没有未关闭的事件",
        ),
    ],
)
def test_chat_digest_is_markdown_in_the_message_language(
    loc: Locale, title: str, voice: str, none: str
) -> None:
    th = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
    scopes = [
        Scope(name=n, kind=ScopeKind.APP, key="k", secret=SecretStr("s"), thresholds=th)
        for n in ("al_pha", "beta")
    ]
    forecast = Forecast(per_hour=50.0, empty_at=utc(5, 9))
    views = unread_views(scopes, forecasts={"beta": {QuotaType.VOICE: forecast}})
    op = chat_digest_op("d1", "2026-12-03", views, {}, utc(3, 9), loc)
    assert op.kind is OpKind.DIGEST and op.text == title
    first, second, runs_out_line, blank, last = op.markdown.splitlines()
    assert first.startswith("- al\\_pha ") and second.startswith("- beta ")  # escaped
    assert runs_out_line == f"  - {voice}"
    assert (blank, last) == ("", none)
    assert Op.from_json(op.to_json()) == op  # it survives the outbox
    payload = render_chat_digest(ChatKind.WECOM, op.text, op.markdown)
    assert payload["markdown"]["content"].startswith(f"#### {title}\n- ")


@pytest.fixture
async def robot() -> AsyncIterator[FakeRobot]:
    made = FakeRobot("dingtalk", secret=ROBOT_SECRET)
    await made.start()
    yield made
    await made.stop()


async def test_digest_once_a_day_end_to_end(
    start_sim: StartSim,
    slack: FakeSlack,
    robot: FakeRobot,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    """Once at Slack and once at a team chat; a restart the same day sends neither again."""
    # DIGEST_AT 00:00 has always passed, so the summary is due at the first cycle (the "caught
    # up the same day" path) instead of after a minute of waiting. The restart must fall on
    # the same day: a run that could straddle midnight starts after it.
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    if midnight - now < timedelta(minutes=2):
        await asyncio.sleep((midnight - now).total_seconds() + 1)
    sim: JPushSimulator = await start_sim(healthy_simulator())
    sim.set_balance(APP_KEY, "voice", 500)
    env = alerting_env(
        sim,
        slack,
        STATE_URL=f"sqlite:///{tmp_path}/state.db",
        POLL_INTERVAL="0.5",
        PORT=str(free_port()),
        DIGEST_AT="00:00",
        DINGTALK_WEBHOOK_URL=robot.url,
        DINGTALK_SECRET=ROBOT_SECRET,
    )
    bot = BotProcess(["serve"], env, tmp_path, name="first")
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()

    def digests(s: FakeSlack) -> list[str]:
        return [m.text for m in s.roots() if "daily summary" in m.text]

    def chat_digests(r: FakeRobot) -> list[str]:
        return [p.text for p in r.accepted() if "daily summary" in p.text]

    await slack.wait_for(lambda s: len(digests(s)) == 1, timeout=30)
    [text] = digests(slack)
    assert "account" in text and "shop" in text
    await robot.wait_for(lambda r: len(chat_digests(r)) == 1, timeout=30)
    [chat_text] = chat_digests(robot)
    assert "account" in chat_text and "shop" in chat_text
    assert "#### SMS quota daily summary" in chat_text and ":sunrise:" not in chat_text
    await bot.kill9()
    again = BotProcess(["serve"], {**env, "PORT": str(free_port())}, tmp_path, name="second")
    bots.append(again)
    await again.start()
    await again.wait_ready()
    start = sim.stats.requests
    await slack.wait_for(lambda s: sim.stats.requests >= start + 12, timeout=30)
    assert len(digests(slack)) == 1, "a second summary the same day"
    assert len(chat_digests(robot)) == 1, "a second summary the same day in the team chat"
