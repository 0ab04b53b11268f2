"""JPush delivery reports end to end through the console script: simulator -> `serve` (polling
only hourly) -> signed callbacks -> fake Slack, the metrics and the SQLite state file."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from botproc import BotProcess, free_port, wait_until
from fake_slack import FakeSlack
from world import APP_KEY, APP_SECRET, alerting_env, healthy_simulator

from bot.simulator import JPushSimulator

PHONE = "13800138000"


@pytest.fixture
async def sim() -> AsyncIterator[JPushSimulator]:
    simulator = healthy_simulator()
    await simulator.start()
    yield simulator
    await simulator.stop()


def signed_form(
    status: int,
    *,
    nonce: str,
    secret: str = APP_SECRET,
    age_s: float = 0.0,
    timestamp: str | None = None,
    data: str | None = None,
) -> dict[str, str]:
    ts = timestamp if timestamp is not None else str(int((time.time() - age_s) * 1000))
    text = f"appKey={APP_KEY}&appMasterSecret={secret}&nonce={nonce}&timestamp={ts}"
    report = {
        "msgId": f"m{nonce}",
        "status": status,
        "receiveTime": int(time.time()),
        "phone": PHONE,
    }
    return {
        "nonce": nonce,
        "timestamp": ts,
        "signature": hashlib.sha1(text.encode()).hexdigest(),
        "type": "SMS_REPORT",
        "data": data if data is not None else json.dumps(report),
    }


async def post(bot: BotProcess, body: dict[str, str] | bytes) -> int:
    async with aiohttp.ClientSession() as http:
        data = urlencode(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(bot.base_url + "/jpush/callback", data=data, headers=headers) as r:
            await r.read()
            return r.status


async def get(bot: BotProcess, query: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(bot.base_url + "/jpush/callback" + query) as r,
    ):
        return r.status, await r.text()


async def counter(bot: BotProcess, status: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(bot.base_url + "/metrics") as r:
        text = await r.text()
    pattern = rf'^sms_delivery_reports_total\{{scope="shop",status="{status}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def stored(db: Path) -> tuple[int, int]:
    """(report keys remembered, reports counted) in the bot's state file."""
    with sqlite3.connect(db) as conn:
        (seen,) = conn.execute("SELECT COUNT(*) FROM seen_reports").fetchone()
        (counted,) = conn.execute("SELECT COALESCE(SUM(n), 0) FROM report_counts").fetchone()
    return int(seen), int(counted)


async def test_quota_exhausted_report_alerts_at_once_and_once(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    db = tmp_path / "state.db"
    env = alerting_env(
        sim, slack, STATE_URL=f"sqlite:///{db}", POLL_INTERVAL="1h", PORT=str(free_port())
    )
    bot = BotProcess(["serve"], env, tmp_path)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    await wait_until(lambda: sim.stats.requests_by_key.get(APP_KEY, 0) >= 1, what="first poll")

    # The address check echoes letters and digits, and nothing else.
    assert await get(bot, "?echostr=a1B2c3D4") == (200, "a1B2c3D4")
    for bad in ("", "?echostr=", "?echostr=a-b", "?echostr=%3Cb%3E", "?echostr=" + "x" * 65):
        assert (await get(bot, bad))[0] == 400

    # The shop's transactional quota ran dry between polls; JPush reports the failed send.
    sim.set_balance(APP_KEY, "industry", 0)
    polled = sim.stats.requests_by_key[APP_KEY]
    sent = time.monotonic()
    first = signed_form(4005, nonce="1001")
    assert await post(bot, first) == 200
    await slack.wait_for(lambda s: len(s.accepted()) >= 1, timeout=5)
    assert time.monotonic() - sent < 5
    (alert,) = slack.accepted()
    text = json.dumps(alert.body)
    assert "shop" in alert.text
    assert "quota exhausted" in text
    # The app was read again for the alert (not at the next hourly poll): it shows the 0.
    assert sim.stats.requests_by_key[APP_KEY] == polled + 1
    assert "industry" in text.lower()

    # The same report again (JPush's retry) and a second failed send: still one alert.
    assert await post(bot, first) == 200
    assert await post(bot, signed_form(4005, nonce="1002")) == 200
    assert await counter(bot, "4005") == 2.0
    assert stored(db) == (2, 2)

    # Refused: forged, wrong secret, too old; bad input; too large. Never a 5xx, nothing kept.
    forged = signed_form(4005, nonce="2001")
    forged["signature"] = "0" * 40
    no_data = signed_form(4005, nonce="2005")
    del no_data["data"]
    refusals = [
        (forged, 401),
        (signed_form(4005, nonce="2002", secret="not-the-secret"), 401),
        (signed_form(4005, nonce="2003", age_s=25 * 3600), 401),
        (signed_form(4005, nonce="2004", data="{not json"), 400),
        (no_data, 400),
        (signed_form(4005, nonce="2006", timestamp="12:00"), 400),
        (urlencode(signed_form(4005, nonce="2007")).encode() + b"&type=\xff", 400),
        (b"nonce=1&" + b"x" * (64 * 1024), 413),
    ]
    for body, status in refusals:
        assert await post(bot, body) == status
    assert await counter(bot, "4005") == 2.0
    assert stored(db) == (2, 2)

    # Let the outbox settle: nothing more reaches Slack, and no phone number anywhere.
    await wait_until(
        lambda: len(slack.attempts()) == len(slack.accepted()), what="delivery settled"
    )
    status, health = await bot.get_json("/healthz")
    assert status == 200 and health["delivery"]["queued"] == 0
    assert len(slack.accepted()) == 1
    everything = json.dumps([p.body for p in slack.posts]) + bot.stdout() + bot.stderr()
    assert PHONE not in everything
    assert PHONE[:7] not in everything
