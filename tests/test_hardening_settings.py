"""Settings that used to pass validation and break later: `serve` refuses each at start-up.

Through the console script, as an operator meets them: exit 2, one line on stderr that names
the variable, no traceback, and never the secret part of the value.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from botproc import CONSOLE_SCRIPT, BotProcess, clean_env, free_port

SECRET = "pw-do-not-print-7f3a"
EXIT_CONFIG = 2


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "JPUSH_DEV_KEY": "dev-key",
        "JPUSH_DEV_SECRET": "dev-secret",
        "JPUSH_BASE_URL": "http://127.0.0.1:9/",
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }


async def serve_until_exit(
    env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int | None, str]:
    """Exit code (None if still running after `timeout`, then killed) and stderr."""
    err_path = cwd / "serve.err"
    with err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            CONSOLE_SCRIPT,
            "serve",
            env=clean_env(env),
            cwd=cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        code: int | None = await asyncio.wait_for(proc.wait(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = None
    return code, err_path.read_text(errors="replace")


REFUSED = [
    ("STATE_URL", f"redis://:{SECRET}@[::1/0", "STATE_URL"),
    ("STATE_URL", f"redis://:{SECRET}@127.0.0.1:6379/0?no_such_option=1", "STATE_URL"),
    ("STATE_URL", f"redis://:{SECRET}@127.0.0.1:99999/0", "STATE_URL"),
    ("REDIS_URL", f"redis://:{SECRET}@[::1/0", "REDIS_URL"),
    ("JPUSH_TIMEOUT", "inf", "JPUSH_TIMEOUT"),
    ("JPUSH_TIMEOUT", "nan", "JPUSH_TIMEOUT"),
    ("JPUSH_TIMEOUT", "301", "JPUSH_TIMEOUT"),
    ("JPUSH_BASE_URL", f"http://user:{SECRET}@127.0.0.1:9/", "JPUSH_BASE_URL"),
    ("JPUSH_BASE_URL", "http://[::1/", "JPUSH_BASE_URL"),
    ("SLACK_API_URL", "http://127.0.0.1:99999/api/", "SLACK_API_URL"),
    ("POLL_INTERVAL", "1000000d", "POLL_INTERVAL"),
    ("POLL_INTERVAL", "2d", "POLL_INTERVAL"),
    ("HISTORY_RETENTION", "1000000d", "HISTORY_RETENTION"),
    ("HISTORY_RETENTION", "401d", "HISTORY_RETENTION"),
    ("ALERT_REPEAT_INTERVAL", "9" * 30 + "d", "ALERT_REPEAT_INTERVAL"),
    ("ALERT_FORECAST_HORIZON", "9" * 30 + "d", "ALERT_FORECAST_HORIZON"),
    ("ALERT_RESOLVE_MARGIN", "nan", "ALERT_RESOLVE_MARGIN"),
    ("ALERT_WARNING_VOICE", "9" * 30, "ALERT_WARNING_VOICE"),
    ("HOST", "256.1.1.1", "HOST"),
    ("HOST", "192.0.2.1", "HOST"),  # an address this machine does not have
    ("SLACK_WEBHOOK_URL", f"hooks.slack.com/services/{SECRET}", "SLACK_WEBHOOK_URL"),
    ("SLACK_BOT_TOKEN", f"xoxb-{SECRET} x", "SLACK_BOT_TOKEN"),
]


@pytest.mark.parametrize(
    ("variable", "value", "named"), REFUSED, ids=[f"{v}={x[:24]}" for v, x, _ in REFUSED]
)
async def test_serve_refuses_a_bad_setting_in_one_line(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    env = base_env(tmp_path)
    if variable == "REDIS_URL":
        del env["STATE_URL"]
    env[variable] = value
    code, err = await serve_until_exit(env, tmp_path, timeout=20)
    assert code == EXIT_CONFIG, f"serve kept running or crashed (exit {code}):\n{err[-2000:]}"
    lines = [line for line in err.strip().splitlines() if "configuration error" in line]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err
    assert lines[0].startswith(f"sms-balance-bot: configuration error: {named}:"), lines[0]
    assert "Traceback" not in err
    assert SECRET not in err
    if variable not in ("POLL_INTERVAL", "HISTORY_RETENTION", "JPUSH_TIMEOUT", "HOST"):
        assert value not in err


async def test_an_internal_field_is_not_a_variable(tmp_path: Path, bots: list[BotProcess]) -> None:
    """`APPS` was an internal field that pydantic-settings decoded from the environment."""
    env = base_env(tmp_path)
    env["APPS"] = f"[{SECRET}"
    env["POLL_INTERVAL"] = "1h"
    bot = BotProcess(["serve"], env, tmp_path)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(timeout=20)
    assert "Traceback" not in bot.stderr() and SECRET not in bot.stderr()
