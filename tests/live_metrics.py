"""A `serve` process whose /metrics has every series set: a scope below its warning
threshold, a quota draining (so forecasts exist), an alert stuck in the outbox because Slack
answers 500, delivery reports from the simulator, and a METRICS_TOKEN."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from botproc import BotProcess, free_port, wait_until
from fake_slack import Answer, FakeSlack
from prometheus_client.parser import text_string_to_metric_families

from bot.simulator import JPushSimulator, SimScope

TOKEN = "s3cret-metrics-token"
DRAIN_PER_SECOND = 100.0


@dataclass
class LiveBot:
    process: BotProcess
    sim: JPushSimulator

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                self.process.base_url + path,
                headers=headers or {},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as r,
        ):
            return r.status, await r.text()

    async def scrape(self) -> str:
        status, text = await self.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, text
        return text


def samples(exposition: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a Prometheus text exposition."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _complete(exposition: str) -> bool:
    names = samples(exposition)
    queued = names.get("sms_alert_outbox_messages", [({}, 0.0)])[0][1]
    return bool(
        queued >= 1
        and names.get("sms_balance_seconds_to_empty")
        and names.get("sms_delivery_reports_total")
    )


@asynccontextmanager
async def live_bot(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[LiveBot]:
    sim = JPushSimulator()
    sim.add_scope(
        SimScope(
            key="dev",
            secret="dev-secret",
            kind="account",
            balances={"balance": 500, "voice": 50_000, "industry": 50_000, "market": None},
        )
    )
    sim.add_scope(
        SimScope(
            key="shop",
            secret="shop-secret",
            kind="app",
            balances={"balance": 50_000, "voice": 50_000, "industry": 100_000, "market": 50_000},
            drain_per_hour={"industry": DRAIN_PER_SECOND * 3600},
        )
    )
    await sim.start()
    slack.set_mode(Answer(status=500))
    port = free_port()
    env = {
        "JPUSH_BASE_URL": str(sim.base_url),
        "JPUSH_DEV_KEY": "dev",
        "JPUSH_DEV_SECRET": "dev-secret",
        "JPUSH_APPS": json.dumps(
            [
                {
                    "name": "shop",
                    "app_key": "shop",
                    "master_secret": "shop-secret",
                    "thresholds": {"industry": {"warning": 2000, "critical": 0}},
                }
            ]
        ),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_CHANNEL": "C1",
        "SLACK_API_URL": slack.url + "/api/",
        "SLACK_SIGNING_SECRET": "signing-secret",
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": "0.3",
        "ALERT_FORECAST_HORIZON": "0",
        "METRICS_TOKEN": TOKEN,
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    process = BotProcess(["serve"], env, tmp_path, name="metrics-bot")
    bot = LiveBot(process=process, sim=sim)
    await process.start()
    try:
        await process.wait_ready()
        # JPush's delivery reports, from the simulator's sends (one delivered, one failed).
        sim.set_callback("shop", process.base_url + "/jpush/callback")
        sim.send("shop", "voice", 1)
        sim.set_balance("shop", "voice", 0)
        sim.send("shop", "voice", 1)

        async def complete() -> bool:
            return _complete(await bot.scrape())

        await wait_until(complete, timeout=45, what="a forecast and a stuck alert in /metrics")
        yield bot
    finally:
        await process.stop_quietly()
        await sim.stop()
