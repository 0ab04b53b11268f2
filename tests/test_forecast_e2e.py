"""Forecasting end to end: a quota draining at a known rate, seen through serve and check."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from botproc import BotProcess, free_port, run_cli, wait_until
from builders import StartSim
from fake_slack import FakeSlack

from bot.simulator import JPushSimulator, SimScope

RATE_PER_SECOND = 100.0
START = 100_000  # true time to empty at start: 1,000 s


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = JPushSimulator()
    simulator.add_scope(
        SimScope(
            key="shop",
            secret="shop-secret",
            kind="app",
            balances={"balance": 50_000, "voice": 50_000, "industry": START, "market": 50_000},
            drain_per_hour={"industry": RATE_PER_SECOND * 3600},
        )
    )
    return await start_sim(simulator)


def true_seconds_to_empty(sim: JPushSimulator) -> float:
    value = sim.current_balance("shop", "industry")
    assert value is not None
    return value / RATE_PER_SECOND


async def test_forecast_gauge_check_json_and_running_out_alert(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "JPUSH_BASE_URL": str(sim.base_url),
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": "shop", "master_secret": "shop-secret"}]
        ),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_CHANNEL": "C1",
        "SLACK_API_URL": slack.url + "/api/",
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": "0.3",
        "ALERT_FORECAST_HORIZON": "1h",
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    bot = BotProcess(["serve"], env, tmp_path)
    await bot.start()
    try:
        await bot.wait_ready()
        gauge = re.compile(
            r'^sms_balance_seconds_to_empty\{scope="shop",type="(\w+)"\} ([0-9.e+]+)$', re.M
        )

        async def scrape() -> dict[str, float]:
            async with aiohttp.ClientSession() as s, s.get(f"{bot.base_url}/metrics") as r:
                return {t: float(v) for t, v in gauge.findall(await r.text())}

        async def has_forecast() -> bool:
            return "industry" in await scrape()

        await wait_until(has_forecast, timeout=30, what="a forecast gauge")
        found = await scrape()
        truth = true_seconds_to_empty(sim)
        assert abs(found["industry"] - truth) <= 0.3 * truth, (found, truth)
        assert set(found) == {"industry"}  # flat types have no forecast

        # check --json reads the same history and agrees.
        rc, out, err = await run_cli(["check", "--json"], env, tmp_path)
        assert rc == 0, err
        shop = json.loads(out)["scopes"][0]
        assert set(shop["forecast"]) == {"industry"}
        stamp = shop["forecast"]["industry"]["empty_at"]
        empty_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        truth = true_seconds_to_empty(sim)
        seconds = (empty_at - datetime.now(UTC)).total_seconds()
        assert abs(seconds - truth) <= 0.3 * truth, (seconds, truth)
        per_hour = shop["forecast"]["industry"]["per_hour"]
        assert abs(per_hour - RATE_PER_SECOND * 3600) <= 0.3 * RATE_PER_SECOND * 3600

        # The running-out alert arrives once, and not again on every poll.
        await slack.wait_for(lambda s: len(s.accepted()) >= 1)
        before = sim.stats.requests
        await wait_until(lambda: sim.stats.requests >= before + 10, what="ten more polls")
        posts = slack.accepted()
        assert len(posts) == 1, slack.summary()
        text = posts[0].text.lower()
        assert "industry" in text and "run" in text and "out" in text
    finally:
        await bot.stop_quietly()
