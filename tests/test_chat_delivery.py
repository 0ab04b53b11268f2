"""Team chats as alert destinations, end to end: the bot, a fake Slack and fake DingTalk, Feishu
and WeCom robots that verify signatures. Each destination gets each alert exactly once, one that
is rate limited or misconfigured never holds up another, and no secret is ever shown.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botproc import BotProcess, free_port, run_cli, wait_until
from builders import StartSim
from fake_chats import FakeRobot
from fake_slack import FakeSlack
from pytest_aiohttp import AiohttpClient
from world import APP_KEY, DEV_SECRET, alerting_env, healthy_simulator

from bot.alerts_types import AlertBook, AlertKind, Event, EventKind
from bot.app import build_services
from bot.chat_notify import ChatDestination
from bot.chat_webhooks import DEFAULT_LIMITS, ChatWebhookNotifier
from bot.delivery import Deliverer
from bot.destinations import ChatKind
from bot.notify import make_notifier
from bot.outbox import Routing, plan_messages
from bot.pacing import RateLimit
from bot.quota import Level, QuotaType
from bot.settings import Settings
from bot.simulator import JPushSimulator
from bot.store.base import CycleCommit, OutboxMessage
from bot.store.factory import make_store
from bot.store.sqlite import SqliteStore
from bot.web import SERVICES, create_app

DINGTALK_SECRET = "SECding0123456789abcdefTopSecret"
FEISHU_SECRET = "feishuSecret0123456789abcdef"
TOKENS = {
    "dingtalk": "dtk0f1e2d3c4b5a69788796a5b4c3d2e1f0aa",
    "feishu": "fsh-7c0e2f52-1b4d-4e9a-9b1c-2f7a55e0c0de",
    "wecom": "wck-693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa",
}
SECRETS = {"dingtalk": DINGTALK_SECRET, "feishu": FEISHU_SECRET, "wecom": None}


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    return await start_sim(healthy_simulator())


@pytest.fixture
async def robots() -> AsyncIterator[dict[str, FakeRobot]]:
    made = {kind: FakeRobot(kind, token=TOKENS[kind], secret=SECRETS[kind]) for kind in TOKENS}
    for robot in made.values():
        await robot.start()
    yield made
    for robot in made.values():
        await robot.stop()


def chat_env(robots: dict[str, FakeRobot], **extra: str) -> dict[str, str]:
    env = {
        "DINGTALK_WEBHOOK_URL": robots["dingtalk"].url,
        "DINGTALK_SECRET": DINGTALK_SECRET,
        "FEISHU_WEBHOOK_URL": robots["feishu"].url,
        "FEISHU_SECRET": FEISHU_SECRET,
        "WECOM_WEBHOOK_URL": robots["wecom"].url,
    }
    env.update(extra)
    return env


def secrets_of(env: dict[str, str]) -> list[str]:
    return [
        DINGTALK_SECRET,
        FEISHU_SECRET,
        *TOKENS.values(),
        env["SLACK_BOT_TOKEN"],
        env["DINGTALK_SECRET"],
        DEV_SECRET,
    ]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}…) was shown"


async def start_bot(
    bots: list[BotProcess], sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, **env: str
) -> tuple[BotProcess, dict[str, str]]:
    full = alerting_env(
        sim,
        slack,
        STATE_URL=f"sqlite:///{tmp_path}/state.db",
        POLL_INTERVAL="0.3",
        PORT=str(free_port()),
        LOG_LEVEL="DEBUG",
        **env,
    )
    bot = BotProcess(["serve"], full, tmp_path)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    return bot, full


async def polls(sim: JPushSimulator, n: int) -> None:
    start = sim.stats.requests_by_key.get(APP_KEY, 0)
    await wait_until(
        lambda: sim.stats.requests_by_key.get(APP_KEY, 0) >= start + n, timeout=30, what="polls"
    )


# --- every destination, exactly once -----------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh-CN"])
async def test_one_alert_reaches_every_destination_exactly_once(
    sim: JPushSimulator,
    slack: FakeSlack,
    robots: dict[str, FakeRobot],
    tmp_path: Path,
    bots: list[BotProcess],
    language: str,
) -> None:
    bot, env = await start_bot(
        bots,
        sim,
        slack,
        tmp_path,
        MESSAGE_LANGUAGE=language,
        TZ="Asia/Shanghai",
        **chat_env(robots),
    )
    await polls(sim, 2)
    sim.set_balance(APP_KEY, "industry", 500)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    for robot in robots.values():
        await robot.wait_for(lambda r: len(r.accepted()) == 1)
    # More cycles, nothing new: nobody hears about it again.
    await polls(sim, 5)
    assert len(slack.roots()) == 1
    for robot in robots.values():
        assert robot.codes() == [0], robot.kind

    slack_text = slack.roots()[0].text + json.dumps(slack.roots()[0].blocks, ensure_ascii=False)
    texts = {kind: robot.posts[0].text for kind, robot in robots.items()}
    for text in [slack_text, *texts.values()]:
        assert "shop" in text and "500" in text
    if language == "zh-CN":
        for text in [slack_text, *texts.values()]:
            assert "行业" in text and "预警" in text, text
        assert "北京时间" in texts["wecom"]
    else:
        assert "industry" in texts["wecom"] and "warning" in texts["wecom"].lower()

    _, health = await bot.get_json("/healthz")
    destinations = health["delivery"]["destinations"]
    assert {name: d["status"] for name, d in destinations.items()} == dict.fromkeys(TOKENS, "ok")
    assert destinations["dingtalk"]["url"].endswith("/robot/send?access_token=***")
    assert destinations["feishu"]["url"].endswith("/open-apis/bot/v2/hook/***")
    assert destinations["wecom"]["url"].endswith("/cgi-bin/webhook/send?key=***")
    secrets = secrets_of(env)
    assert_no_secret(json.dumps(health), secrets)
    assert_no_secret(bot.stderr() + bot.stdout(), secrets)
    assert "alert delivered" in bot.stderr()  # the logs were read, at DEBUG


async def test_a_wrong_secret_is_a_configuration_error_not_a_retry_storm(
    sim: JPushSimulator,
    slack: FakeSlack,
    robots: dict[str, FakeRobot],
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    bot, env = await start_bot(
        bots, sim, slack, tmp_path, **chat_env(robots, DINGTALK_SECRET="SECnot-the-right-one-42")
    )
    sim.set_balance(APP_KEY, "industry", 500)
    await robots["dingtalk"].wait_for(lambda r: len(r.posts) == 1)
    for kind in ("feishu", "wecom"):
        await robots[kind].wait_for(lambda r: len(r.accepted()) == 1)
    await slack.wait_for(lambda s: len(s.roots()) == 1)

    async def refused() -> bool:
        _, health = await bot.get_json("/healthz")
        return bool(health["delivery"]["destinations"]["dingtalk"]["status"] == "refused")

    await wait_until(refused, what="/healthz to show DingTalk refused")
    _, health = await bot.get_json("/healthz")
    assert health["status"] == "degraded"
    dingtalk = health["delivery"]["destinations"]["dingtalk"]
    assert "310000" in dingtalk["error"] and "DINGTALK_SECRET" in dingtalk["error"]
    assert dingtalk["queued"] == 1
    assert health["delivery"]["destinations"]["feishu"]["status"] == "ok"
    # Many cycles and delivery passes later: still the one attempt.
    await polls(sim, 8)
    assert robots["dingtalk"].codes() == [310000]
    secrets = [*secrets_of(env), "SECnot-the-right-one-42"]
    assert_no_secret(json.dumps(health), secrets)
    assert_no_secret(bot.stderr() + bot.stdout(), secrets)
    assert "configuration error: DingTalk refused" in bot.stderr()


# --- a rate-limited robot delays only itself ---------------------------------------------------


async def test_dingtalk_send_too_fast_delays_only_dingtalk(
    sim: JPushSimulator,
    slack: FakeSlack,
    robots: dict[str, FakeRobot],
    aiohttp_client: AiohttpClient,
) -> None:
    settings = Settings(
        _env_file=None,
        **{k.lower(): v for k, v in alerting_env(sim, slack, POLL_INTERVAL="0.3").items()},
    )
    destinations = {
        kind: ChatDestination(
            ChatWebhookNotifier(
                ChatKind(kind), robot.url, secret=SECRETS[kind], rate_limited_retry=1.5
            )
        )
        for kind, robot in robots.items()
    }
    robots["dingtalk"].answer_next(130101)
    app = create_app(
        build_services(
            settings,
            store=SqliteStore(":memory:"),
            notifier=make_notifier(settings),
            destinations=destinations,
        )
    )
    client = await aiohttp_client(app)
    sim.set_balance(APP_KEY, "industry", 500)
    await robots["dingtalk"].wait_for(lambda r: r.codes() == [130101])
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    for kind in ("feishu", "wecom"):
        await robots[kind].wait_for(lambda r: len(r.accepted()) == 1)
    health = await (await client.get("/healthz")).json()
    dingtalk = health["delivery"]["destinations"]["dingtalk"]
    if robots["dingtalk"].codes() == [130101]:  # not yet retried: the pause shows
        assert dingtalk["status"] == "failing" and "rate limited" in dingtalk["error"]
    assert health["delivery"]["destinations"]["wecom"]["status"] == "ok"

    await robots["dingtalk"].wait_for(lambda r: len(r.accepted()) == 1)
    await app[SERVICES].worker.deliverers[1].deliver_pending()
    assert robots["dingtalk"].codes() == [130101, 0]
    assert [len(r.accepted()) for r in robots.values()] == [1, 1, 1]
    assert len(slack.roots()) == 1


# --- pacing: WeCom's 20 a minute, scaled down ----------------------------------------------------


def _event(i: int, at: datetime) -> Event:
    return Event(
        EventKind.FIRED,
        f"app-{i:02d}",
        at,
        QuotaType.VOICE,
        Level.WARNING,
        500 + i,
        1000,
        AlertKind.THRESHOLD,
        opened_at=at,
    )


def test_the_documented_limits_are_the_defaults() -> None:
    assert DEFAULT_LIMITS[ChatKind.WECOM] == (RateLimit(20, 60.0),)
    assert DEFAULT_LIMITS[ChatKind.DINGTALK] == (RateLimit(20, 60.0),)
    assert DEFAULT_LIMITS[ChatKind.FEISHU] == (RateLimit(100, 60.0), RateLimit(5, 1.0))


async def test_thirty_alerts_reach_wecom_in_order_none_dropped_within_its_limit() -> None:
    # WeCom takes 20 a minute; the same limit over 2 s keeps the test short. The fake answers
    # 45009 beyond it, as WeCom does, so any burst over the limit would show in its codes.
    window = 2.0
    robot = FakeRobot("wecom", limit=(20, window))
    await robot.start()
    store = make_store("memory://")
    await store.open()
    wecom = ChatDestination(
        ChatWebhookNotifier(ChatKind.WECOM, robot.url, limits=[RateLimit(20, window)])
    )
    try:
        book = AlertBook()
        base = datetime.now(UTC)
        for i in range(30):
            at = base + timedelta(milliseconds=i)
            book, messages = plan_messages(
                book,
                [_event(i, at)],
                at,
                Routing(destinations=("wecom",)),
                OutboxMessage.new_id(at),
            )
            assert await store.commit_cycle(CycleCommit([], book, messages[1:]), i)
        deliverer = Deliverer(
            store, wecom, holder="h", clock=lambda: datetime.now(UTC), destination="wecom"
        )
        deadline = time.monotonic() + 30
        while len(robot.accepted()) < 30 and time.monotonic() < deadline:
            await deliverer.deliver_pending()
            await asyncio.sleep(max(0.01, deliverer.seconds_until_ready()))
        assert len(robot.accepted()) == 30, robot.codes()
    finally:
        await wecom.close()
        await store.close()
        await robot.stop()
    assert robot.codes() == [0] * 30  # never over the limit, never refused
    order = [int(p.text.split("app-")[1][:2]) for p in robot.posts]
    assert order == list(range(30))
    times = [p.at for p in robot.posts]
    for i in range(len(times) - 20):
        assert times[i + 20] - times[i] >= window * 0.95  # any 21 span at least one window
    assert deliverer.status.queued == 0 and deliverer.status.problem is None


# --- check --notify ------------------------------------------------------------------------------


async def test_check_notify_sends_to_every_destination_once(
    sim: JPushSimulator, slack: FakeSlack, robots: dict[str, FakeRobot], tmp_path: Path
) -> None:
    sim.set_balance(APP_KEY, "industry", 500)
    env = alerting_env(sim, slack, STATE_URL=f"sqlite:///{tmp_path}/state.db", **chat_env(robots))
    for _ in range(2):  # the second run finds nothing new to say
        rc, out, err = await run_cli(["check", "--notify"], env, tmp_path)
        assert rc == 1, err
        assert_no_secret(out + err, secrets_of(env))
    assert len(slack.roots()) == 1
    assert [r.codes() for r in robots.values()] == [[0], [0], [0]]
