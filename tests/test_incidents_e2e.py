"""Incidents end to end through the console script: simulator -> `serve` -> fake Slack Web API.

What the channel shows is read from the fake Slack's own record of the conversation (roots,
threads, broadcasts, edits), as a person scrolling the channel would see it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botproc import BotProcess, free_port, wait_until
from fake_slack import Answer, FakeSlack, Message
from world import APP_KEY, APP_SECRET, DEV_KEY, HIGH, alerting_env, healthy_simulator

from bot.delivery import CLAIM_TTL
from bot.simulator import JPushSimulator, SimScope

CHANNEL = "C0ALERTS"
CLAIM_TTL_S = CLAIM_TTL.total_seconds()


@pytest.fixture
async def sim() -> AsyncIterator[JPushSimulator]:
    simulator = healthy_simulator()
    await simulator.start()
    yield simulator
    await simulator.stop()


def env_for(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": "0.3",
        "PORT": str(free_port()),
    }
    return alerting_env(sim, slack, **{**base, **extra})


async def start_bot(
    bots: list[BotProcess], env: dict[str, str], tmp_path: Path, name: str = "bot"
) -> BotProcess:
    bot = BotProcess(["serve"], env, tmp_path, name=name)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    return bot


async def polls(sim: JPushSimulator, n: int, key: str = APP_KEY) -> None:
    start = sim.stats.requests_by_key.get(key, 0)
    await wait_until(
        lambda: sim.stats.requests_by_key.get(key, 0) >= start + n, timeout=30, what=f"{n} polls"
    )


def shown(message: Message) -> str:
    return (message.text + json.dumps(message.blocks)).lower()


def metadata_ids(slack: FakeSlack) -> list[str]:
    ids = []
    for m in slack.messages:
        assert m.metadata is not None, f"a message without metadata: {m.text[:80]}"
        assert m.metadata["event_type"] == "sms_balance_alert"
        ids.append(m.metadata["event_payload"]["message_id"])
    return ids


async def test_root_thread_broadcast_update_resolve_and_reopen(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    await start_bot(bots, env_for(sim, slack, tmp_path), tmp_path)
    await polls(sim, 3)
    assert slack.messages == []

    # warning -> one root with the current state and buttons
    sim.set_balance(APP_KEY, "industry", 500)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    [root] = slack.roots()
    assert root.channel == CHANNEL
    assert "shop" in shown(root) and "500" in shown(root) and "warning" in shown(root)
    actions = [b for b in root.blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == ["ack", "snooze"]
    assert [o["value"] for o in actions[0]["elements"][1]["options"]] == ["1h", "24h", "7d"]
    assert root.metadata is not None and root.metadata["event_payload"]["scope"] == "shop"

    # critical -> the root is updated in place and the channel sees a broadcast reply
    await polls(sim, 4)
    sim.set_balance(APP_KEY, "industry", 50)
    await slack.wait_for(lambda s: any(m.reply_broadcast for m in s.thread(root)))
    await slack.wait_for(lambda s: "critical" in shown(root))
    [escalation] = [m for m in slack.thread(root) if m.reply_broadcast]
    assert "critical" in shown(escalation) and "50" in shown(escalation)
    assert root.edits >= 1 and "50 left" in shown(root)

    # recovery -> a reply, and the root turns green without buttons
    await polls(sim, 4)
    sim.set_balance(APP_KEY, "industry", 5000)
    await slack.wait_for(lambda s: "resolved" in shown(root) and len(s.thread(root)) >= 3)
    assert not [b for b in root.blocks if b["type"] == "actions"]
    assert any("all clear" in shown(m) for m in slack.thread(root))
    assert len(slack.roots()) == 1

    # a new drop -> a new incident with its own root
    await polls(sim, 4)
    sim.set_balance(APP_KEY, "voice", 300)
    await slack.wait_for(lambda s: len(s.roots()) == 2)
    await polls(sim, 6)
    assert len(slack.roots()) == 2
    assert "voice" in shown(slack.roots()[1])
    # Every post carries its outbox id, and none was posted twice.
    ids = metadata_ids(slack)
    assert len(ids) == len(set(ids))


async def test_twelve_apps_low_at_once_flood_guard(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    apps = []
    for i in range(12):
        key = f"app{i:02d}-key"
        sim.add_scope(
            SimScope(
                key=key,
                secret="s",
                kind="app",
                balances={"balance": 20, "voice": HIGH, "industry": HIGH, "market": HIGH},
            )
        )
        apps.append({"name": f"app{i:02d}", "app_key": key, "master_secret": "s"})
    env = env_for(sim, slack, tmp_path, JPUSH_APPS=json.dumps(apps))
    del env["JPUSH_DEV_KEY"], env["JPUSH_DEV_SECRET"]
    await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) >= 1)
    await polls(sim, 6, key="app00-key")
    top = slack.channel(CHANNEL)
    assert 1 <= len(top) <= 6, [m.text[:60] for m in top]
    [summary] = slack.roots()
    for i in range(12):
        assert f"app{i:02d}" in shown(summary)


async def test_per_app_channel_and_critical_mention(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    apps = [{"name": "shop", "app_key": APP_KEY, "master_secret": APP_SECRET, "channel": "C0SHOP"}]
    env = env_for(
        sim, slack, tmp_path, JPUSH_APPS=json.dumps(apps), SLACK_MENTION_CRITICAL="<!here>"
    )
    sim.set_balance(APP_KEY, "market", 500)
    sim.set_balance(DEV_KEY, "voice", 40)
    await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) == 2)
    shop = slack.roots("C0SHOP")
    account = slack.roots(CHANNEL)
    assert len(shop) == 1 and len(account) == 1
    # The account is critical: its root tells the channel, with the mention in front.
    assert account[0].text.startswith("<!here> ")
    # The shop is only at warning: no mention ...
    assert "<!here>" not in shop[0].text
    # ... until it escalates: the broadcast reply carries it, the root update does not notify.
    await polls(sim, 4)
    sim.set_balance(APP_KEY, "market", 10)
    await slack.wait_for(lambda s: any(m.reply_broadcast for m in s.thread(shop[0])))
    [broadcast] = [m for m in slack.thread(shop[0]) if m.reply_broadcast]
    assert broadcast.text.startswith("<!here> ") and broadcast.channel == "C0SHOP"


async def test_lost_answer_is_found_by_look_up_not_posted_twice(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.answer_next(Answer(lose_answer=True))
    sim.set_balance(APP_KEY, "balance", 300)
    bot = await start_bot(bots, env_for(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.attempts("/api/conversations.history")) >= 1, timeout=40)
    await polls(sim, 6)
    assert len(slack.roots()) == 1, slack.summary()
    assert len(slack.attempts("/api/chat.postMessage")) == 1
    # Later news goes into the thread of the root that was found.
    sim.set_balance(APP_KEY, "balance", 30)
    await slack.wait_for(lambda s: len(s.thread(s.roots()[0])) >= 1)
    assert len(slack.roots()) == 1
    _, health = await bot.get_json("/healthz")
    assert health["delivery"]["guarantee"] == "exactly-once"


async def test_without_history_scopes_at_least_once_and_says_so(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    slack.history_scopes = False
    slack.answer_next(Answer(lose_answer=True))
    sim.set_balance(APP_KEY, "balance", 300)
    bot = await start_bot(bots, env_for(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) == 2, timeout=40)

    async def says_so() -> bool:
        _, health = await bot.get_json("/healthz")
        return bool(health["delivery"]["guarantee"] == "at-least-once")

    await wait_until(says_so, what="/healthz to say at-least-once")
    assert "channels:history" in bot.stderr()


async def test_restart_never_reposts_a_root(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim.set_balance(APP_KEY, "voice", 300)
    env = env_for(sim, slack, tmp_path)
    first = await start_bot(bots, env, tmp_path, "first")
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    await first.kill9()
    await start_bot(bots, env, tmp_path, "second")
    await polls(sim, 6)
    sim.set_balance(APP_KEY, "voice", 30)
    [root] = slack.roots()
    # If the kill came between Slack's answer and the record of it, the root waits for the
    # dead process's claim to lapse (CLAIM_TTL), is found by the look-up, and the escalation
    # goes into its thread.
    await slack.wait_for(lambda s: len(s.thread(root)) >= 1, timeout=CLAIM_TTL_S + 30)
    await polls(sim, 4)
    assert len(slack.roots()) == 1, slack.summary()
