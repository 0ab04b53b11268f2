"""Helpers shared by the benchmarks: a signed slash-command request and simulator presets."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

from bot.simulator import JPushSimulator, SimScope

# Not a real secret: both ends of every benchmark are local processes we start ourselves.
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DEV_KEY, DEV_SECRET = "bench-dev", "bench-dev-secret"
# The last commit before forecasts handled steps and kept running state.
LEGACY = "e86db45"
BOT = Path(sys.executable).with_name("sms-balance-bot")
# Whatever the caller's shell has configured must not leak into the measured process.
_SCRUB = (
    "JPUSH_",
    "SLACK_",
    "ALERT_",
    "STATE_URL",
    "REDIS_URL",
    "POLL_",
    "PORT",
    "HOST",
    "LOG_",
    "METRICS_",
)

# The fields Slack really sends with a slash command, so every server parses a realistic form.
SLASH_FORM = {
    "token": "gIkuvaNzQIHg97ATvDxqgjtO",
    "team_id": "T0001",
    "team_domain": "example",
    "enterprise_id": "",
    "channel_id": "C2147483705",
    "channel_name": "ops",
    "user_id": "U2147483697",
    "user_name": "steve",
    "command": "/sms-balance",
    "text": "",
    "api_app_id": "A123456",
    "is_enterprise_install": "false",
    "response_url": "https://hooks.slack.com/commands/1234/5678",
    "trigger_id": "13345224609.738474920.8088930838d88f008e0",
}


def slash_body(text: str = "") -> bytes:
    return urlencode({**SLASH_FORM, "text": text}).encode()


def slack_headers(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers for a v0-signed request; a signature stays valid for 5 minutes."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def app_name(i: int) -> str:
    return f"app{i:03d}"


def bench_simulator(apps: int) -> JPushSimulator:
    """One account and `apps` app scopes with steady (non-draining) balances."""
    sim = JPushSimulator()
    sim.add_scope(
        SimScope(
            key=DEV_KEY,
            secret=DEV_SECRET,
            kind="account",
            balances={"balance": 9, "voice": 702, "industry": 121_981, "market": 11_683},
        )
    )
    for i in range(apps):
        sim.add_scope(
            SimScope(
                key=f"{app_name(i)}-key",
                secret=f"{app_name(i)}-secret",
                kind="app",
                name=app_name(i),
                balances={"balance": 5200 + i, "voice": 1500, "industry": 1150, "market": None},
            )
        )
    return sim


def jpush_apps_json(apps: int) -> str:
    return json.dumps(
        [
            {
                "name": app_name(i),
                "app_key": f"{app_name(i)}-key",
                "master_secret": f"{app_name(i)}-secret",
            }
            for i in range(apps)
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, step: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def bot_env(
    base_url: str, apps: int, workdir: Path, port: int, interval: str = "1h"
) -> dict[str, str]:
    """A scrubbed environment for `sms-balance-bot serve` on the bench simulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(
        {
            "JPUSH_BASE_URL": base_url,
            "JPUSH_DEV_KEY": DEV_KEY,
            "JPUSH_DEV_SECRET": DEV_SECRET,
            "JPUSH_APPS": jpush_apps_json(apps),
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "STATE_URL": f"sqlite:///{workdir}/state.db",
            "POLL_INTERVAL": interval,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def legacy_forecaster() -> ModuleType:
    """bot/forecast.py as it was before steps and running state (a baseline to measure against)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{LEGACY}:bot/forecast.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Forecast has moved since; wherever it lives, bot.forecast exports it.
    source = source.replace(
        "from bot.alerts_types import Forecast", "from bot.forecast import Forecast"
    )
    path = Path(tempfile.mkdtemp()) / "legacy_forecast.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("legacy_forecast", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
