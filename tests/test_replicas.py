"""Replicas on Redis, end to end: several `serve` processes on one STATE_URL behave as one bot.

Each test runs the console script against the JPush simulator and a fake Slack, on loopback.
Tests that stop Redis under the bot get a redis-server of their own, so the session one that
other tests share is never taken away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from botproc import BotProcess, button_press, free_port, post_interaction, post_slash, wait_until
from builders import StartSim
from fake_slack import Answer, FakeSlack
from redis_server import RedisServer, redis_server_binary
from world import APP_KEY, alerting_env, healthy_simulator

from bot.simulator import JPushSimulator

SIGNING_SECRET = "replica-signing-secret-0123456789"
INTERVAL = 0.4
LEASE_TTL = 3 * INTERVAL
# Scheduling noise on a busy test machine: process start-up, loopback HTTP, delivery.
SLACK_S = 1.5

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = healthy_simulator()
    return await start_sim(simulator)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, not started: the test decides when it runs."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir)
    yield server
    server.stop()


def persist_on_shutdown(server: RedisServer) -> None:
    """Make a SIGTERM'd server save its data, as a managed Redis keeps it across a restart."""
    client = redis.Redis(port=server.port, socket_timeout=2)
    try:
        client.config_set("save", "3600 1")
    finally:
        client.close()


def bot_env(
    sim: JPushSimulator, slack: FakeSlack, state_url: str | None, **extra: str
) -> dict[str, str]:
    base = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "POLL_INTERVAL": str(INTERVAL)}
    if state_url is not None:
        base["STATE_URL"] = state_url
    return alerting_env(sim, slack, **{**base, **extra})


async def start_bot(
    bots: list[BotProcess], env: dict[str, str], workdir: Path, name: str
) -> BotProcess:
    bot = BotProcess(["serve"], {**env, "PORT": str(free_port())}, workdir, name=name)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    return bot


async def start_pair(
    bots: list[BotProcess], env: dict[str, str], workdir: Path
) -> tuple[BotProcess, BotProcess]:
    """Two replicas on one store; returns (poller, standby) once the lease has settled."""
    first = await start_bot(bots, env, workdir, "first")
    second = await start_bot(bots, env, workdir, "second")
    roles: dict[str, bool] = {}

    async def one_poller() -> bool:
        for bot in (first, second):
            status, body = await healthz(bot)
            if status != 200:
                return False
            roles[bot.name] = bool(body["poller"])
        return sorted(roles.values()) == [False, True]

    await wait_until(one_poller, what="exactly one replica to hold the poller lease")
    return (first, second) if roles["first"] else (second, first)


async def healthz(bot: BotProcess) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(bot.base_url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        return r.status, await r.json(content_type=None)


async def metrics(bot: BotProcess) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.get(bot.base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        assert r.status == 200
        return await r.text()


async def slash(bot: BotProcess, text: str = "") -> dict[str, Any]:
    """A correctly signed /sms-balance request, answered within Slack's 3 seconds."""
    started = time.monotonic()
    status, reply = await post_slash(bot.base_url, SIGNING_SECRET, text)
    assert status == 200, reply
    assert time.monotonic() - started < 3.0
    assert reply["response_type"] == "ephemeral"
    return reply


async def polls(sim: JPushSimulator, n: int, key: str = APP_KEY, timeout: float = 20) -> None:
    """Wait until `key` has been read n more times (by whichever replica polls)."""
    start = sim.stats.requests_by_key.get(key, 0)
    await wait_until(
        lambda: sim.stats.requests_by_key.get(key, 0) >= start + n,
        timeout=timeout,
        what=f"{n} polls",
    )


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, decode_responses=True)


def claims(url: str) -> list[str]:
    client = redis_client(url)
    try:
        return list(client.scan_iter("sms-balance-bot:outbox:claim:*"))
    finally:
        client.close()


def lease_holder(url: str) -> str | None:
    client = redis_client(url)
    try:
        value = client.get("sms-balance-bot:lease")
        return None if value is None else str(value)
    finally:
        client.close()


def alive(bot: BotProcess) -> bool:
    return bot.proc is not None and bot.proc.returncode is None


# 1 -------------------------------------------------------------------------------------------


async def test_two_replicas_alert_once_and_both_answer_from_shared_state(
    sim: JPushSimulator, slack: FakeSlack, redis_url: str, tmp_path: Path, bots: list[BotProcess]
) -> None:
    poller, standby = await start_pair(bots, bot_env(sim, slack, redis_url), tmp_path)

    sim.set_balance(APP_KEY, "industry", 500)
    sim.set_balance(APP_KEY, "market", 54_321)  # read only by the poller
    await slack.wait_for(lambda s: len(s.accepted()) == 1)
    await polls(sim, 10)
    posts = slack.accepted()
    assert len(posts) == 1, slack.summary()
    assert "industry" in posts[0].text and "500" in posts[0].text

    for bot in (poller, standby):
        text = json.dumps(await slash(bot, "shop"))
        assert "54,321" in text and "500" in text, (bot.name, text)

    exposition = await metrics(standby)
    assert 'sms_balance{scope="shop",type="market"} 54321.0' in exposition
    status, body = await healthz(standby)
    assert status == 200 and body["poller"] is False and body["status"] == "ok"


# 2 -------------------------------------------------------------------------------------------


async def test_killed_poller_is_replaced_within_lease_ttl_plus_one_interval(
    sim: JPushSimulator, slack: FakeSlack, redis_url: str, tmp_path: Path, bots: list[BotProcess]
) -> None:
    poller, standby = await start_pair(bots, bot_env(sim, slack, redis_url), tmp_path)
    await polls(sim, 2)

    await poller.kill9()
    killed_at = time.monotonic()
    sim.set_balance(APP_KEY, "balance", 20)
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=10)
    took = slack.accepted()[0].at - killed_at
    assert took <= LEASE_TTL + INTERVAL + SLACK_S, f"took {took:.2f} s"
    assert "balance" in slack.accepted()[0].text

    # The survivor's /healthz may lag its first cycle as poller by a moment on a loaded
    # machine; it must be healthy and the poller within one more interval or so.
    await wait_until(
        lambda: healthz_poller(standby),
        timeout=LEASE_TTL + 2 * INTERVAL + SLACK_S,
        what="the survivor's /healthz to say 200 and poller",
    )
    await polls(sim, 5)
    assert len(slack.accepted()) == 1, slack.summary()


async def test_sigterm_releases_the_lease_so_the_standby_takes_over_at_once(
    sim: JPushSimulator, slack: FakeSlack, redis_url: str, tmp_path: Path, bots: list[BotProcess]
) -> None:
    poller, standby = await start_pair(bots, bot_env(sim, slack, redis_url), tmp_path)
    holder = lease_holder(redis_url)
    assert holder is not None

    assert await poller.terminate() == 0
    # Released on the way out, not left to expire: nobody, or already the standby, holds it.
    assert lease_holder(redis_url) != holder
    sim.set_balance(APP_KEY, "market", 40)
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=10)
    status, body = await healthz(standby)
    assert status == 200 and body["poller"] is True
    assert "Traceback" not in poller.stderr()


# 3 -------------------------------------------------------------------------------------------


async def test_slack_down_replica_killed_then_back_delivers_exactly_once(
    sim: JPushSimulator, slack: FakeSlack, redis_url: str, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.set_mode(Answer(status=500))
    poller, standby = await start_pair(bots, bot_env(sim, slack, redis_url), tmp_path)
    sim.set_balance(APP_KEY, "voice", 30)
    await slack.wait_for(lambda s: len(s.attempts()) >= 3, timeout=15)
    # Killed between attempts: a replica killed mid-send keeps its claim for the claim TTL
    # (a minute), which delays delivery but is not what this test is about.
    await wait_until(lambda: not claims(redis_url), what="no delivery claim held")
    await poller.kill9()
    assert slack.accepted() == []

    slack.set_mode(Answer())
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=15)
    await polls(sim, 10)
    posts = slack.accepted()
    assert len(posts) == 1, slack.summary()
    assert "voice" in posts[0].text and "30" in posts[0].text

    async def caught_up() -> bool:
        status, body = await healthz(standby)
        return status == 200 and body["delivery"]["queued"] == 0

    await wait_until(caught_up, what="the survivor to report an empty outbox")


# 4 -------------------------------------------------------------------------------------------


async def test_redis_restart_under_running_bots_loses_and_doubles_nothing(
    sim: JPushSimulator,
    slack: FakeSlack,
    own_redis: RedisServer,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    own_redis.start()
    persist_on_shutdown(own_redis)
    poller, standby = await start_pair(bots, bot_env(sim, slack, own_redis.url), tmp_path)
    sim.set_balance(APP_KEY, "voice", 300)
    await slack.wait_for(lambda s: len(s.accepted()) == 1)
    await polls(sim, 3)

    own_redis.stop()

    async def both(status: int) -> bool:
        return all([(await healthz(bot))[0] == status for bot in (poller, standby)])

    await wait_until(lambda: both(503), what="/healthz 503 on both replicas")
    _, body = await healthz(standby)
    assert body["status"] == "store_unavailable" and body["store"]["error"]
    # The drop happens while nothing can be recorded: several poll loop turns fail on it.
    sim.set_balance(APP_KEY, "industry", 50)
    failed_before = poller.stderr().count("state store unavailable")
    await wait_until(
        lambda: poller.stderr().count("state store unavailable") >= failed_before + 3,
        what="the poll loop to keep running while Redis is down",
    )
    reply = json.dumps(await slash(standby, "shop"))
    assert "state store is unreachable" in reply
    assert len(slack.accepted()) == 1

    own_redis.start()
    await wait_until(lambda: both(200), what="/healthz 200 on both replicas")
    await slack.wait_for(lambda s: len(s.accepted()) == 2, timeout=15)
    await polls(sim, 10)
    posts = slack.accepted()
    assert len(posts) == 2, slack.summary()
    assert "industry" in posts[1].text and "critical" in posts[1].text.lower()
    assert "voice" not in posts[1].text, "an alert announced before the outage came again"
    for bot in (poller, standby):
        assert alive(bot), bot.stderr()
        assert "Traceback" not in bot.stderr(), bot.stderr()


# 5 -------------------------------------------------------------------------------------------


async def test_redis_url_down_at_start_binds_fast_then_recovers_by_itself(
    sim: JPushSimulator,
    slack: FakeSlack,
    own_redis: RedisServer,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    env = bot_env(sim, slack, None, REDIS_URL=own_redis.url)
    sim.set_balance(APP_KEY, "market", 70)
    started = time.monotonic()
    bot = BotProcess(["serve"], {**env, "PORT": str(free_port())}, tmp_path, name="late-redis")
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(timeout=5)
    assert time.monotonic() - started < 5

    async def says_unreachable() -> bool:
        status, body = await healthz(bot)
        assert status == 503 and body["status"] == "store_unavailable", body
        return "redis: unreachable" in str(body["store"]["error"])

    await wait_until(says_unreachable, timeout=3, what="/healthz to name the Redis problem")
    reply = json.dumps(await slash(bot))
    assert "state store is unreachable" in reply and "redis: unreachable" in reply
    # Down for a while (several failed attempts to open the store), then it comes up.
    await wait_until(
        lambda: bot.stderr().count("state store unavailable") >= 3,
        what="the bot to keep retrying the store",
    )
    assert slack.attempts() == []

    own_redis.start()
    await wait_until(lambda: _status(bot, 200), timeout=10, what="/healthz 200 once Redis runs")
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=10)
    assert "market" in slack.accepted()[0].text
    assert "70" in json.dumps(await slash(bot, "shop"))
    # REDIS_URL was the store: the state is in Redis and no SQLite file was made.
    client = redis.Redis(port=own_redis.port, socket_timeout=2)
    try:
        assert client.exists("sms-balance-bot:book")
    finally:
        client.close()
    assert not (tmp_path / "sms-balance-bot.db").exists()
    assert alive(bot) and "Traceback" not in bot.stderr(), bot.stderr()


async def _status(bot: BotProcess, expected: int) -> bool:
    return (await healthz(bot))[0] == expected


# incidents -----------------------------------------------------------------------------------


async def test_ack_stored_by_one_replica_is_honoured_by_the_other_after_a_kill(
    sim: JPushSimulator, slack: FakeSlack, redis_url: str, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = bot_env(sim, slack, redis_url, ALERT_REPEAT_INTERVAL="2s")
    poller, standby = await start_pair(bots, env, tmp_path)
    sim.set_balance(APP_KEY, "voice", 500)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    [root] = slack.roots()

    def reminders() -> int:
        return sum("(reminder)" in m.text for m in slack.thread(root))

    await slack.wait_for(lambda s: reminders() >= 1)
    # The standby takes the press; the poller must honour it, and so must the standby once
    # it polls itself after the poller is killed.
    status, _ = await post_interaction(
        standby.base_url, SIGNING_SECRET, button_press("shop", "ack")
    )
    assert status == 200
    await slack.wait_for(lambda s: "acknowledged by" in root.text + json.dumps(root.blocks))
    before = reminders()
    await polls(sim, 10)
    await poller.kill9()
    await wait_until(
        lambda: healthz_poller(standby), timeout=LEASE_TTL + 10, what="the standby to poll"
    )
    await polls(sim, 12)
    assert reminders() == before, "a reminder after the acknowledgement"
    assert len(slack.roots()) == 1


async def healthz_poller(bot: BotProcess) -> bool:
    status, body = await healthz(bot)
    return status == 200 and bool(body["poller"])
