"""The usual test world: an account and one app on the JPush simulator, all quotas healthy,
and the environment that points a `serve` process at it and at the fake Slack."""

from __future__ import annotations

import json
from pathlib import Path

from botproc import BotProcess, free_port
from fake_slack import FakeSlack

from bot.simulator import JPushSimulator, SimScope

APP_KEY, APP_SECRET = "shop-key", "shop-secret"
DEV_KEY, DEV_SECRET = "dev-key", "dev-secret"
HIGH = 100_000


def healthy_simulator() -> JPushSimulator:
    simulator = JPushSimulator()
    for key, secret, kind in ((DEV_KEY, DEV_SECRET, "account"), (APP_KEY, APP_SECRET, "app")):
        simulator.add_scope(
            SimScope(
                key=key,
                secret=secret,
                kind=kind,  # type: ignore[arg-type]
                balances={"balance": HIGH, "voice": HIGH, "industry": HIGH, "market": HIGH},
            )
        )
    return simulator


def alerting_env(sim: JPushSimulator, slack: FakeSlack, **extra: str) -> dict[str, str]:
    """Scopes, Slack delivery and quiet forecasts; callers add state, interval and port."""
    assert sim.base_url is not None
    env = {
        "JPUSH_BASE_URL": sim.base_url,
        "JPUSH_DEV_KEY": DEV_KEY,
        "JPUSH_DEV_SECRET": DEV_SECRET,
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": APP_KEY, "master_secret": APP_SECRET}]
        ),
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_CHANNEL": "C0ALERTS",
        "SLACK_API_URL": slack.url + "/api/",
        "ALERT_FORECAST_HORIZON": "0",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def serve_env(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, interval: str, **extra: str
) -> dict[str, str]:
    """`alerting_env` plus a SQLite state in `tmp_path`, a poll interval and a free port."""
    base = {
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": interval,
        "PORT": str(free_port()),
    }
    return alerting_env(sim, slack, **{**base, **extra})


async def start_serve(
    bots: list[BotProcess], env: dict[str, str], tmp_path: Path, name: str = "bot"
) -> BotProcess:
    """`serve` started and answering on its port (stopped by the `bots` fixture)."""
    bot = BotProcess(["serve"], env, tmp_path, name=name)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(timeout=20)
    return bot
