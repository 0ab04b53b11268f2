"""Incidents end to end through the console script: simulator -> `serve` -> fake Slack Web API.

What the channel shows is read from the fake Slack's own record of the conversation (roots,
threads, broadcasts, edits), as a person scrolling the channel would see it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from botproc import (
    BotProcess,
    button_press,
    post_interaction,
    post_slash,
    slack_headers,
    wait_until,
)
from fake_slack import Answer, FakeSlack, Message
from world import (
    APP_KEY,
    APP_SECRET,
    DEV_KEY,
    HIGH,
    healthy_simulator,
    serve_env,
    start_serve,
)

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
    return serve_env(sim, slack, tmp_path, "0.3", **extra)


start_bot = start_serve


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


# --- acknowledge and snooze ------------------------------------------------------------------

SECRET = "e2e-signing-secret"


def reminders(slack: FakeSlack, root: Message) -> list[Message]:
    return [m for m in slack.thread(root) if "(reminder)" in m.text and m.reply_broadcast]


async def test_ack_by_button_stops_reminders_until_an_escalation(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = env_for(sim, slack, tmp_path, ALERT_REPEAT_INTERVAL="3s", SLACK_SIGNING_SECRET=SECRET)
    sim.set_balance(APP_KEY, "voice", 500)
    bot = await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    [root] = slack.roots()
    await slack.wait_for(lambda s: len(reminders(s, root)) >= 1)  # reminders run

    status, _ = await post_interaction(bot.base_url, SECRET, button_press("shop", "ack"))
    assert status == 200
    await slack.wait_for(lambda s: "acknowledged by <@u0oncall>" in shown(root))
    await slack.wait_for(lambda s: any("acknowledged by" in m.text for m in s.thread(root)))
    assert (
        next(b for b in root.blocks if b["type"] == "actions")["elements"][0]["action_id"]
        == "unack"
    )
    before = len(reminders(slack, root))
    await polls(sim, 30)  # three repeat intervals and more
    assert len(reminders(slack, root)) == before, "a reminder after the acknowledgement"

    # An escalation clears the acknowledgement and is told; reminders come back.
    sim.set_balance(APP_KEY, "voice", 50)
    await slack.wait_for(
        lambda s: (
            any("critical" in shown(m) for m in reminders(s, root))
            or any(m.reply_broadcast and "warning → critical" in m.text for m in s.thread(root))
        )
    )
    await slack.wait_for(lambda s: "acknowledged by" not in shown(root))
    after = len(reminders(slack, root))
    await slack.wait_for(lambda s: len(reminders(s, root)) > after, timeout=30)


async def test_snooze_by_slash_command_keeps_warnings_in_the_thread(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = env_for(sim, slack, tmp_path, SLACK_SIGNING_SECRET=SECRET)
    sim.set_balance(APP_KEY, "voice", 500)
    bot = await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    [root] = slack.roots()

    status, reply = await post_slash(bot.base_url, SECRET, "snooze shop 24h", user_id="U0ONCALL")
    assert status == 200 and reply["response_type"] == "ephemeral"
    assert "snoozed by you" in reply["text"]
    await slack.wait_for(lambda s: "snoozed by <@u0oncall> until" in shown(root))

    # A new warning goes into the thread only ...
    sim.set_balance(APP_KEY, "market", 600)
    await slack.wait_for(lambda s: any("market" in shown(m) for m in s.thread(root)))
    [market] = [m for m in slack.thread(root) if "market" in shown(m)]
    assert not market.reply_broadcast
    assert len(slack.channel(CHANNEL)) == 1  # still just the root
    # ... while a critical breaks through.
    sim.set_balance(APP_KEY, "voice", 40)
    await slack.wait_for(lambda s: any(m.reply_broadcast for m in s.thread(root)))
    [loud] = [m for m in slack.thread(root) if m.reply_broadcast]
    assert "critical" in shown(loud)

    status, reply = await post_slash(bot.base_url, SECRET, "unsnooze shop", user_id="U0ONCALL")
    assert status == 200 and "snooze ended" in reply["text"]
    status, reply = await post_slash(bot.base_url, SECRET, "ack account", user_id="U0ONCALL")
    assert "no open incident" in reply["text"]
    status, reply = await post_slash(bot.base_url, SECRET, "help")
    assert all(word in reply["text"] for word in ("ack", "snooze", "unsnooze", "unack"))


async def test_interactions_refuse_unsigned_forged_stale_oversized_and_malformed(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = env_for(sim, slack, tmp_path, SLACK_SIGNING_SECRET=SECRET)
    sim.set_balance(APP_KEY, "voice", 500)
    bot = await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.roots()) == 1)
    [root] = slack.roots()
    good = urlencode({"payload": json.dumps(button_press("shop", "ack"))}).encode()
    stale = str(int(time.time()) - 600)
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("no signature", good, {"Content-Type": "application/x-www-form-urlencoded"}, 401),
        ("forged", good, slack_headers(good, "not-the-secret"), 401),
        ("stale", good, slack_headers(good, SECRET, timestamp=stale), 401),
        ("oversized", b"payload=" + b"x" * 70_000, slack_headers(b"x", SECRET), 413),
        ("signed, not JSON", b"payload=%7Bnope", slack_headers(b"payload=%7Bnope", SECRET), 400),
        ("signed, no payload", b"text=ack", slack_headers(b"text=ack", SECRET), 400),
    ]
    async with aiohttp.ClientSession() as http:
        for name, body, headers, expected in cases:
            async with http.post(
                bot.base_url + "/slack/interactions", data=body, headers=headers
            ) as response:
                assert response.status == expected, name
    await polls(sim, 6)
    assert "acknowledged" not in shown(root) and root.edits == 0
    assert "Traceback" not in bot.stderr()
