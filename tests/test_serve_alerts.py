"""End to end through the console script: simulator -> `serve` -> fake Slack."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from botproc import BotProcess, run_cli, wait_until
from builders import StartSim
from fake_slack import Answer, FakeSlack
from world import APP_KEY, DEV_KEY, healthy_simulator, serve_env, start_serve

from bot.simulator import JPushSimulator


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = healthy_simulator()
    return await start_sim(simulator)


def bot_env(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    return serve_env(sim, slack, tmp_path, "0.3", **extra)


start_bot = start_serve


async def polls(sim: JPushSimulator, n: int, key: str = APP_KEY) -> None:
    """Wait until the bot has polled `key` n more times."""
    start = sim.stats.requests_by_key.get(key, 0)
    await wait_until(
        lambda: sim.stats.requests_by_key.get(key, 0) >= start + n,
        timeout=30,
        what=f"{n} polls",
    )


def webhook_env(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path) -> dict[str, str]:
    env = bot_env(sim, slack, tmp_path)
    del env["SLACK_BOT_TOKEN"], env["SLACK_CHANNEL"]
    env["SLACK_WEBHOOK_URL"] = slack.url + "/webhook/T000/B000/XXXX"
    return env


async def test_webhook_fired_escalated_resolved_exactly_once_each(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    await start_bot(bots, webhook_env(sim, slack, tmp_path), tmp_path)
    await polls(sim, 3)
    assert slack.accepted("/webhook") == []

    sim.set_balance(APP_KEY, "industry", 500)
    await slack.wait_for(lambda s: len(s.accepted("/webhook")) == 1)
    await polls(sim, 8)
    sim.set_balance(APP_KEY, "industry", 50)
    await slack.wait_for(lambda s: len(s.accepted("/webhook")) == 2)
    await polls(sim, 8)
    sim.set_balance(APP_KEY, "industry", 5000)
    await slack.wait_for(lambda s: len(s.accepted("/webhook")) == 3)
    await polls(sim, 8)

    posts = slack.accepted("/webhook")
    assert len(posts) == 3, slack.summary()
    first, second, third = (p.text.lower() for p in posts)
    assert "shop" in first and "industry" in first and "500" in first and "warning" in first
    assert "critical" in second and "50" in second
    assert "5,000" in third or "5000" in third


async def test_webhook_low_types_across_scopes_in_one_cycle_are_one_message(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim.set_balance(DEV_KEY, "balance", 9)
    sim.set_balance(DEV_KEY, "voice", 702)
    sim.set_balance(APP_KEY, "industry", 44)
    sim.set_balance(APP_KEY, "market", 14)
    await start_bot(bots, webhook_env(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.accepted("/webhook")) >= 1)
    await polls(sim, 6)
    posts = slack.accepted("/webhook")
    assert len(posts) == 1, slack.summary()
    rendered = json.dumps(posts[0].body["blocks"]) + posts[0].text
    for needle in ("account", "shop", "balance", "voice", "industry", "market", "702"):
        assert needle in rendered


async def test_kill_and_restart_sends_nothing_new_for_unchanged_condition(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim.set_balance(APP_KEY, "voice", 300)
    env = bot_env(sim, slack, tmp_path)
    first = await start_bot(bots, env, tmp_path, "first")
    await slack.wait_for(lambda s: len(s.accepted()) == 1)
    await first.kill9()
    await start_bot(bots, env, tmp_path, "second")
    await polls(sim, 10)
    assert len(slack.accepted()) == 1, slack.summary()


async def test_slack_down_then_kill_then_back_delivers_exactly_once(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.set_mode(Answer(status=500))
    sim.set_balance(APP_KEY, "balance", 20)
    env = bot_env(sim, slack, tmp_path)
    first = await start_bot(bots, env, tmp_path, "first")
    await slack.wait_for(lambda s: len(s.attempts()) >= 3, timeout=30)
    await polls(sim, 3)
    await first.kill9()
    assert slack.accepted() == []

    slack.set_mode(Answer())
    await start_bot(bots, env, tmp_path, "second")
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=30)
    await polls(sim, 10)
    posts = slack.accepted()
    assert len(posts) == 1, slack.summary()
    assert "balance" in posts[0].text and "20" in posts[0].text


async def test_429_retry_after_is_honoured(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.answer_next(Answer(status=429, retry_after=2))
    sim.set_balance(APP_KEY, "market", 10)
    await start_bot(bots, bot_env(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.accepted()) == 1, timeout=30)
    await polls(sim, 4)
    attempts = slack.attempts()
    assert len(attempts) == 2, slack.summary()
    assert attempts[1].at - attempts[0].at >= 2.0
    assert len(slack.accepted()) == 1


async def test_permanent_refusal_stays_queued_and_shows_in_healthz(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.set_mode(Answer(error="invalid_auth"))
    sim.set_balance(APP_KEY, "market", 10)
    bot = await start_bot(bots, bot_env(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.attempts()) >= 1)

    async def degraded() -> bool:
        status, body = await bot.get_json("/healthz")
        return bool(status == 200 and body["delivery"]["status"] == "refused")

    await wait_until(degraded, what="/healthz to report the refusal")
    _, body = await bot.get_json("/healthz")
    assert "invalid_auth" in body["delivery"]["error"]
    # Logged after the refusal is stored; /healthz shows it a moment before.
    await wait_until(lambda: "configuration error" in bot.stderr(), what="the log line")
    assert slack.accepted() == []


async def test_webhook_delivery(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = bot_env(sim, slack, tmp_path)
    del env["SLACK_BOT_TOKEN"], env["SLACK_CHANNEL"]
    env["SLACK_WEBHOOK_URL"] = slack.url + "/webhook/T000/B000/XXXX"
    sim.set_balance(DEV_KEY, "industry", 70)
    await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.accepted("/webhook")) == 1)
    post = slack.accepted("/webhook")[0]
    assert "industry" in post.text and "70" in post.text
    assert post.body["blocks"]


async def test_console_delivery_warns_at_start(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = bot_env(sim, slack, tmp_path)
    del env["SLACK_BOT_TOKEN"], env["SLACK_CHANNEL"]
    sim.set_balance(DEV_KEY, "voice", 70)
    bot = await start_bot(bots, env, tmp_path)
    await wait_until(lambda: "voice" in bot.stdout(), what="the alert on stdout")
    assert "standard output" in bot.stderr()


async def test_check_notify_three_times_posts_once(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path
) -> None:
    sim.set_balance(APP_KEY, "industry", 700)
    env = bot_env(sim, slack, tmp_path)
    codes = []
    for _ in range(3):
        code, _, _ = await run_cli(["check", "--notify"], env, tmp_path)
        codes.append(code)
    assert codes == [1, 1, 1]
    assert len(slack.accepted()) == 1, slack.summary()


async def test_sigterm_mid_cycle_exits_zero_quickly_and_state_is_whole(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim.set_balance(APP_KEY, "industry", 500)
    env = bot_env(sim, slack, tmp_path)
    bot = await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.accepted()) == 1)
    sim.set_latency(None, 3.0)  # the next cycle is in flight when SIGTERM arrives
    before = sim.stats.in_flight
    await wait_until(lambda: sim.stats.in_flight > before, what="a cycle in flight")
    started = time.monotonic()
    code = await bot.terminate()
    assert code == 0
    assert time.monotonic() - started < 20
    assert "Traceback" not in bot.stderr()

    # The state is whole: a new process reads it and sends nothing new.
    sim.set_latency(None, 0.0)
    await start_bot(bots, env, tmp_path, "again")
    await polls(sim, 6)
    assert len(slack.accepted()) == 1, slack.summary()


async def test_binds_port_fast_even_when_jpush_hangs(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim.set_latency(None, 30.0)
    env = bot_env(sim, slack, tmp_path, JPUSH_TIMEOUT="20")
    bot = BotProcess(["serve"], env, tmp_path)
    bots.append(bot)
    started = time.monotonic()
    await bot.start()
    await bot.wait_ready(timeout=5)

    async def ok() -> bool:
        status, body = await bot.get_json("/healthz")
        return bool(status == 200 and body["status"] == "ok")

    # The store opens in the background once the port is bound: ok a moment later, while
    # the first cycle still waits on JPush.
    await wait_until(ok, timeout=5, what="/healthz ok")
    assert time.monotonic() - started < 5
    code = await bot.terminate()
    assert code == 0
