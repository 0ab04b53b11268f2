"""Two cron runs of `check --notify` that overlap (a slow Slack, a cron every minute) share one
state store. The same open condition must never be announced twice, not even across
processes sharing one STATE_URL. Both runs claim outbox messages under the same holder name,
"check", and a claim is granted to its own holder again, so both send the one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from botproc import run_cli
from fake_slack import FakeSlack

from bot.simulator import JPushSimulator, SimScope

# How long Slack holds a post back waiting for a second one (a fixed bot sends no second one).
HOLD_S = 8.0


class SlowSlack(FakeSlack):
    """A slow Slack: each post is held until a second one arrives (or HOLD_S passed), so the
    two runs overlap however fast or slow each process starts."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = 0
        self.second = asyncio.Event()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if self.arrived >= 2:
            self.second.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.second.wait(), timeout=HOLD_S)
        return await super()._api(request)


@pytest.fixture
async def sim() -> AsyncIterator[JPushSimulator]:
    simulator = JPushSimulator()
    balances: dict[str, int | None] = {"balance": 50_000, "voice": 50_000, "industry": 300}
    simulator.add_scope(
        SimScope(key="shop-key", secret="shop-secret", kind="app", balances=balances)
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def slack() -> AsyncIterator[SlowSlack]:
    fake = SlowSlack()
    await fake.start()
    yield fake
    await fake.stop()


def env(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path) -> dict[str, Any]:
    assert sim.base_url is not None
    return {
        "JPUSH_BASE_URL": sim.base_url,
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": "shop-key", "master_secret": "shop-secret"}]
        ),
        "SLACK_BOT_TOKEN": "xoxb-overlap",
        "SLACK_CHANNEL": "C0OVERLAP",
        "SLACK_API_URL": slack.url + "/api/",
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "ALERT_FORECAST_HORIZON": "0",
    }


async def test_overlapping_check_notify_runs_announce_once(
    sim: JPushSimulator, slack: SlowSlack, tmp_path: Path
) -> None:
    variables = env(sim, slack, tmp_path)
    results = await asyncio.gather(
        run_cli(["check", "--notify"], variables, tmp_path),
        run_cli(["check", "--notify"], variables, tmp_path),
    )
    assert [code for code, _, _ in results] == [1, 1], results
    assert len(slack.accepted()) == 1, slack.summary()
