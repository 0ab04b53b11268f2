"""`sms-balance-bot demo`: the whole bot with no account at all.

The built-in simulator runs on loopback with quotas that drain fast enough that a warning, an
escalation, the shop running dry and a top-up-and-resolve happen within about a minute. The
simulator posts JPush's signed delivery reports to the bot's /jpush/callback, so the moment the
shop runs dry its failed sends (status 4005) raise a "sends failing" alert at once, without
waiting for a poll. Alerts print to the terminal (or go to Slack if Slack is configured), the
web server is up, and a signed curl line for /sms-balance is printed, anew every few minutes
since signatures expire after five.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
import shutil
import tempfile
import time
from datetime import timedelta
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from bot.app import build_services, serve_app
from bot.logs import setup_logging
from bot.notify import make_notifier, warn_console_delivery
from bot.settings import load_settings
from bot.simulator import DEMO_APPS, JPushSimulator, demo_simulator, simulator_env
from bot.store.factory import store_from_settings

log = logging.getLogger(__name__)

POLL_INTERVAL = timedelta(seconds=3)
CURL_EVERY = 240.0  # seconds; a signature is accepted for 300
# The simulator's demo preset, sped up so that shop's transactional quota (1,150 at the start)
# drains 30 a second: it warns after ~5 s, goes critical (< 100) after ~35 s and runs dry
# after ~38 s; every send after that fails and JPush reports it (4005). The demo lets it fail
# for DRY_FOR, then tops it up past the resolve bar (1,100), and the round starts again.
SPEED = 180.0
SHOP_KEY = DEMO_APPS[0][1]
TOP_UP_TO = 1300
DRY_FOR = 8.0


def demo_overrides(
    sim: JPushSimulator, base_url: str, state_dir: str, signing_secret: str
) -> dict[str, object]:
    overrides: dict[str, object] = {k.lower(): v for k, v in simulator_env(sim, base_url).items()}
    overrides.update(
        poll_interval=POLL_INTERVAL,
        alert_failures_before_alert=2,
        state_url=f"sqlite:///{state_dir}/demo.db",
        slack_signing_secret=signing_secret,
    )
    return overrides


def signed_curl(url: str, signing_secret: str, text: str = "", now: float | None = None) -> str:
    """A curl command line that Slack's signature check accepts for the next five minutes."""
    body = urlencode(
        {"command": "/sms-balance", "text": text, "user_name": "demo", "team_domain": "demo"}
    )
    timestamp = str(int(time.time() if now is None else now))
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=timestamp, body=body)
    return (
        f"curl -s -X POST {shlex.quote(url)}"
        f" -H 'X-Slack-Request-Timestamp: {timestamp}'"
        f" -H 'X-Slack-Signature: {signature}'"
        f" --data-binary {shlex.quote(body)}"
    )


async def _top_up_shop(sim: JPushSimulator) -> None:
    """Plays the operator who buys more quota some seconds after the shop ran dry."""
    while True:
        await asyncio.sleep(0.2)
        if sim.current_balance(SHOP_KEY, "industry") == 0:
            print(
                "demo: the shop's industry quota ran dry; JPush reports every failed send"
                " (4005) to /jpush/callback",
                flush=True,
            )
            await asyncio.sleep(DRY_FOR)
            sim.set_balance(SHOP_KEY, "industry", TOP_UP_TO)
            print(f"demo: the shop's industry quota was topped up to {TOP_UP_TO:,}", flush=True)


async def _print_curl(url: str, signing_secret: str) -> None:
    while True:
        print(
            "\nAsk the bot like Slack would (valid for 5 minutes; a fresh line follows):\n"
            f"  {signed_curl(url, signing_secret)}\n",
            flush=True,
        )
        await asyncio.sleep(CURL_EVERY)


async def _run(env_file: str | None, state_dir: str) -> int:
    from bot.web import create_app

    sim = demo_simulator(speed=SPEED)
    base_url = await sim.start("127.0.0.1", 0)
    try:
        probe = load_settings(env_file, jpush_apps="[]")
        secret = (
            probe.slack_signing_secret.get_secret_value()
            if probe.slack_signing_secret is not None
            else secrets.token_hex(16)
        )
        settings = load_settings(env_file, **demo_overrides(sim, base_url, state_dir, secret))
        setup_logging(settings.log_level, settings.log_format, settings.secret_values())
        warn_console_delivery(settings)
        store = store_from_settings(settings)
        app = create_app(build_services(settings, store=store, notifier=make_notifier(settings)))
        helpers: list[asyncio.Task[None]] = []

        async def started(port: int) -> None:
            url = f"http://127.0.0.1:{port}/slack/commands"
            print(
                f"sms-balance-bot demo: JPush simulator at {base_url}, bot at"
                f" http://127.0.0.1:{port} (/healthz, /metrics), polling every"
                f" {int(POLL_INTERVAL.total_seconds())} s. Ctrl-C stops it.",
                flush=True,
            )
            for _, key, _ in DEMO_APPS:
                sim.set_callback(key, f"http://127.0.0.1:{port}/jpush/callback")
            helpers.append(asyncio.create_task(_print_curl(url, secret)))
            helpers.append(asyncio.create_task(_top_up_shop(sim)))

        try:
            return await serve_app(app, settings.host, settings.port, on_started=started)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await sim.stop()


def run_demo(env_file: str | None) -> int:
    state_dir = tempfile.mkdtemp(prefix="sms-balance-bot-demo-")
    try:
        return asyncio.run(_run(env_file, state_dir))
    finally:
        # A throwaway state file: the demo leaves nothing behind.
        shutil.rmtree(state_dir, ignore_errors=True)
