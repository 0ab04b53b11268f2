"""Socket Mode end to end: the console script against a fake Slack that serves
apps.connections.open and a websocket, and the pure pieces (backoff, refusals, acks) by table."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botproc import BotProcess, button_press, free_port, post_slash, run_cli, wait_until
from fake_slack import FakeSlack
from fake_socket_slack import FakeSocketSlack
from slack_sdk.socket_mode.request import SocketModeRequest
from world import APP_KEY, APP_SECRET, DEV_KEY, DEV_SECRET, alerting_env, healthy_simulator

from bot.simulator import JPushSimulator
from bot.socket_mode import BACKOFF_CAP_S, SocketMode, ack_message, is_refusal, reconnect_delay

SIGNING_SECRET = "socket-test-signing-secret"
APP_TOKEN = "xapp-1-A1-good"


# the pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        (0, 0.0, 0.5),
        (0, 1.0, 1.0),
        (1, 1.0, 2.0),
        (3, 0.5, 6.0),
        (6, 1.0, BACKOFF_CAP_S),
        (50, 0.0, BACKOFF_CAP_S / 2),
    ],
)
def test_reconnect_delay(failures: int, rand: float, expected: float) -> None:
    assert reconnect_delay(failures, lambda: rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        ("invalid_auth", True),
        ("not_allowed_token_type", True),
        ("token_revoked", True),
        ("ratelimited", False),
        ("internal_error", False),
        (None, False),
    ],
)
def test_refusals(error: str | None, refused: bool) -> None:
    assert is_refusal(error) is refused


def test_ack_carries_the_reply_as_payload() -> None:
    assert json.loads(ack_message("e1", None)) == {"envelope_id": "e1"}
    reply = json.dumps({"response_type": "ephemeral", "text": 'a "b"'}).encode()
    assert json.loads(ack_message('e"2', reply)) == {
        "envelope_id": 'e"2',
        "payload": {"response_type": "ephemeral", "text": 'a "b"'},
    }


# end to end -----------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[JPushSimulator]:
    simulator = healthy_simulator()
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def socket_slack() -> AsyncIterator[FakeSocketSlack]:
    fake = FakeSocketSlack(APP_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def bot_env(
    sim: JPushSimulator, fake: FakeSocketSlack, tmp_path: Path, **extra: str
) -> dict[str, str]:
    env = {
        "JPUSH_BASE_URL": str(sim.base_url),
        "JPUSH_DEV_KEY": DEV_KEY,
        "JPUSH_DEV_SECRET": DEV_SECRET,
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": APP_KEY, "master_secret": APP_SECRET}]
        ),
        "SLACK_API_URL": fake.url + "/api/",
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": "1m",
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
    }
    env.update(extra)
    return env


async def healthz(bot: BotProcess) -> dict[str, Any]:
    _, body = await bot.get_json("/healthz")
    assert isinstance(body, dict)
    return body


async def socket_state(bot: BotProcess) -> str:
    return str((await healthz(bot))["socket_mode"])


async def http_command(bot: BotProcess, text: str) -> dict[str, Any]:
    status, reply = await post_slash(bot.base_url, SIGNING_SECRET, text)
    assert status == 200, reply
    return reply


def slash_payload(text: str) -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "channel_id": "C1",
        "user_id": "U1",
        "command": "/sms-balance",
        "text": text,
        "response_url": "",
        "trigger_id": "1.2.3",
    }


_AGO = re.compile(r"\b(just now|\d+ (second|minute|hour|day)s? ago)\b")


def without_relative_times(reply: dict[str, Any]) -> str:
    # The two transports may render a second apart; everything else must be the same.
    return _AGO.sub("<ago>", json.dumps(reply, sort_keys=True))


async def start_bot(env: dict[str, str], tmp_path: Path, bots: list[BotProcess]) -> BotProcess:
    bot = BotProcess(["serve"], env, tmp_path, name=f"socket-{len(bots)}")
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    return bot


async def test_slash_command_and_block_actions_over_socket_mode_and_reconnects(
    sim: JPushSimulator,
    socket_slack: FakeSocketSlack,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    bot = await start_bot(bot_env(sim, socket_slack, tmp_path), tmp_path, bots)

    async def connected() -> bool:
        return await socket_state(bot) == "connected" and socket_slack.open_sockets == 1

    await wait_until(connected, timeout=20, what="Socket Mode to connect")
    await wait_until(lambda: _cycle_done(bot), timeout=20, what="the first poll cycle")

    # A slash command: the reply rides in the ack, within 3 s, the same as over HTTP.
    envelope, http_reply = await asyncio.gather(
        socket_slack.send_envelope("slash_commands", slash_payload("account")),
        http_command(bot, "account"),
    )
    ack = await socket_slack.wait_ack(envelope)
    assert ack.seconds < 3.0
    payload = ack.body["payload"]
    assert payload["response_type"] == "ephemeral" and payload["blocks"]
    assert "shop" not in json.dumps(payload["blocks"])  # the account scope only
    assert without_relative_times(payload) == without_relative_times(http_reply)

    # An interactivity payload (a button press) is acknowledged within 3 s.
    press = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "actions": [{"action_id": "incident_ack", "value": "account", "type": "button"}],
    }
    envelope = await socket_slack.send_envelope("interactive", press)
    ack = await socket_slack.wait_ack(envelope)
    assert ack.seconds < 3.0 and ack.body["envelope_id"] == envelope

    # Slack closes the socket, then asks for a refresh: each time the bot leaves the old
    # socket for a new one by itself.
    for drop, connections in (
        (socket_slack.close_socket, 2),
        (socket_slack.send_disconnect, 3),
    ):
        await drop()
        await wait_until(
            lambda n=connections: socket_slack.connections == n and socket_slack.open_sockets == 1,
            timeout=20,
            what=f"a reconnect after {drop.__name__}",
        )
        await wait_until(connected, timeout=20, what="connected again")
    envelope = await socket_slack.send_envelope("slash_commands", slash_payload("help"))
    ack = await socket_slack.wait_ack(envelope)
    assert ack.seconds < 3.0 and "account" in json.dumps(ack.body["payload"])

    # While Slack cannot hand out a connection, /healthz says "connecting"; then it recovers.
    socket_slack.available = False
    await socket_slack.close_socket()

    async def connecting() -> bool:
        return await socket_state(bot) == "connecting"

    await wait_until(connecting, timeout=20, what='"connecting" in /healthz')
    attempts = socket_slack.open_attempts
    await wait_until(lambda: socket_slack.open_attempts >= attempts + 1, timeout=20, what="a retry")
    status, body = await bot.get_json("/healthz")
    assert status == 200 and body["status"] == "ok" and body["socket_mode"] == "connecting"
    socket_slack.available = True
    await wait_until(connected, timeout=40, what="connected after the outage")
    assert "Traceback" not in bot.stderr()


async def test_slow_refresh_is_acked_at_once_and_finished_through_response_url(
    sim: JPushSimulator,
    socket_slack: FakeSocketSlack,
    slack: FakeSlack,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    bot = await start_bot(bot_env(sim, socket_slack, tmp_path), tmp_path, bots)
    await wait_until(lambda: _cycle_done(bot), timeout=20, what="the first poll cycle")
    await wait_until(lambda: socket_slack.open_sockets == 1, timeout=20, what="a websocket")
    sim.set_latency(DEV_KEY, 4.0)  # JPush answers after Slack's 3 seconds
    sim.set_balance(DEV_KEY, "voice", 4321)
    payload = slash_payload("refresh account")
    payload["response_url"] = slack.url + "/response/T1/42"
    envelope = await socket_slack.send_envelope("slash_commands", payload)
    ack = await socket_slack.wait_ack(envelope)
    assert ack.seconds < 3.0
    pending = json.dumps(ack.body["payload"])
    assert ":hourglass_flowing_sand:" in pending and "4,321" not in pending  # on its way

    def followed_up() -> bool:
        return any("4,321" in json.dumps(p.body) for p in slack.attempts("/response/T1/42"))

    await wait_until(followed_up, timeout=20, what="the fresh numbers through response_url")
    # SIGTERM with the socket open: stops cleanly, as without Socket Mode.
    assert await bot.terminate() == 0


async def test_replicas_each_hold_a_connection_and_answer_from_the_shared_state(
    sim: JPushSimulator,
    socket_slack: FakeSocketSlack,
    redis_url: str,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    replicas = [
        await start_bot(bot_env(sim, socket_slack, tmp_path, STATE_URL=redis_url), tmp_path, bots)
        for _ in range(2)
    ]
    await wait_until(lambda: socket_slack.open_sockets == 2, timeout=20, what="two websockets")
    for bot in replicas:
        await wait_until(lambda b=bot: _cycle_done(b), timeout=20, what="a cycle, shared")
    # Slack gives each envelope to one connection; either replica answers the same.
    replies = []
    for socket in (0, 1):
        envelope = await socket_slack.send_envelope(
            "slash_commands", slash_payload("account"), socket=socket
        )
        ack = await socket_slack.wait_ack(envelope)
        assert ack.seconds < 3.0
        replies.append(without_relative_times(ack.body["payload"]))
    assert replies[0] == replies[1]
    assert "100,000" in replies[0]


async def test_acknowledge_button_over_socket_mode_acknowledges_the_incident(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    # One SLACK_API_URL for both: apps.connections.open here, the rest passed to the Web API fake.
    socket_slack = FakeSocketSlack(APP_TOKEN, web_api=slack.url)
    await socket_slack.start()
    try:
        env = alerting_env(
            sim,
            slack,
            SLACK_API_URL=socket_slack.url + "/api/",
            SLACK_APP_TOKEN=APP_TOKEN,
            STATE_URL=f"sqlite:///{tmp_path}/state.db",
            POLL_INTERVAL="0.3",
            PORT=str(free_port()),
        )
        sim.set_balance(APP_KEY, "voice", 500)
        bot = await start_bot(env, tmp_path, bots)
        await slack.wait_for(lambda s: len(s.roots()) == 1)
        [root] = slack.roots()
        await wait_until(lambda: socket_slack.open_sockets == 1, timeout=20, what="a websocket")

        envelope = await socket_slack.send_envelope("interactive", button_press("shop", "ack"))
        ack = await socket_slack.wait_ack(envelope)
        assert ack.seconds < 3.0
        assert ack.body == {"envelope_id": envelope}  # what HTTP answers: an empty 200
        await slack.wait_for(
            lambda s: "acknowledged by <@u0oncall>" in (root.text + json.dumps(root.blocks)).lower()
        )
        assert bot.proc is not None and bot.proc.returncode is None
    finally:
        await socket_slack.stop()


async def _cycle_done(bot: BotProcess) -> bool:
    return (await healthz(bot))["last_cycle_at"] is not None


async def test_refused_app_token_is_a_configuration_error_not_a_loop(
    sim: JPushSimulator,
    socket_slack: FakeSocketSlack,
    tmp_path: Path,
    bots: list[BotProcess],
) -> None:
    env = bot_env(sim, socket_slack, tmp_path, SLACK_APP_TOKEN="xapp-1-A1-revoked")
    bot = await start_bot(env, tmp_path, bots)

    async def refused() -> bool:
        # 200 too: the refusal can come before the store has opened (503 until then).
        status, body = await bot.get_json("/healthz")
        return bool(status == 200 and body["socket_mode_error"] is not None)

    await wait_until(refused, timeout=20, what="the refusal in /healthz")
    status, body = await bot.get_json("/healthz")
    assert status == 200
    assert body["socket_mode"] == "off" and body["status"] == "degraded"
    assert "SLACK_APP_TOKEN" in body["socket_mode_error"]
    assert "invalid_auth" in body["socket_mode_error"]
    # Said once, not retried: a wrong token does not fix itself. (A retry would come within
    # a second: the first reconnect delay.)
    await asyncio.sleep(2.5)
    assert socket_slack.open_attempts == 1
    assert bot.proc is not None and bot.proc.returncode is None
    log = bot.stdout() + bot.stderr()
    assert log.count("configuration error: SLACK_APP_TOKEN") == 1
    assert "revoked" not in log  # the token itself is never printed
    # Polling and the HTTP slash command go on.
    await wait_until(lambda: _cycle_done(bot), timeout=20, what="a poll cycle")
    reply = await http_command(bot, "account")
    assert reply["response_type"] == "ephemeral"


async def test_socket_mode_off_without_app_token(
    sim: JPushSimulator, socket_slack: FakeSocketSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    env = bot_env(sim, socket_slack, tmp_path)
    del env["SLACK_APP_TOKEN"]
    bot = await start_bot(env, tmp_path, bots)
    body = await healthz(bot)
    assert body["socket_mode"] == "off" and body["socket_mode_error"] is None
    assert socket_slack.open_attempts == 0


async def test_a_bot_token_in_slack_app_token_is_refused_at_start(
    sim: JPushSimulator, socket_slack: FakeSocketSlack, tmp_path: Path
) -> None:
    env = bot_env(sim, socket_slack, tmp_path, SLACK_APP_TOKEN="xoxb-not-an-app-token")
    rc, out, err = await run_cli(["check"], env, tmp_path)
    assert rc == 3
    assert "SLACK_APP_TOKEN" in err and "xapp-" in err
    assert "xoxb-not-an-app-token" not in out + err


# manifests ------------------------------------------------------------------------------


def _manifest(name: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load((Path(__file__).parent.parent / name).read_text())
    return data


def test_socket_manifest_has_no_request_urls_and_matches_the_http_one() -> None:
    http, socket = _manifest("slack-app-manifest.yml"), _manifest("slack-app-manifest.socket.yml")
    assert socket["settings"]["socket_mode_enabled"] is True
    assert http["settings"]["socket_mode_enabled"] is False
    assert "url" not in json.dumps(socket).replace("usage_hint", "")
    assert "request_url" not in json.dumps(socket)
    assert socket["settings"].get("interactivity", {}).get("is_enabled") is True
    # The same commands and scopes, whichever way Slack reaches the bot.
    commands = [
        {k: v for k, v in c.items() if k != "url"} for c in http["features"]["slash_commands"]
    ]
    assert socket["features"]["slash_commands"] == commands
    assert all(c["url"].endswith("/slack/commands") for c in http["features"]["slash_commands"])
    assert socket["oauth_config"] == http["oauth_config"]
    http_interactivity = http["settings"].get("interactivity")
    if http_interactivity is not None:
        assert http_interactivity["request_url"].endswith("/slack/interactions")


async def test_slash_envelope_passes_the_user_on() -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    async def slash(text: str, response_url: str | None, user_id: str | None) -> bytes:
        seen.append((text, response_url, user_id))
        return b"{}"

    socket = SocketMode("xapp-1-A1-x", "http://127.0.0.1:9/api/", slash=slash)
    request = SocketModeRequest(
        type="slash_commands", envelope_id="e1", payload=slash_payload("ack shop")
    )
    assert await socket._answer(request) == b"{}"
    assert seen == [("ack shop", None, "U1")]
