"""A hostile or broken upstream, through the console script: pauses are bounded, one app's
pause does not blind the others, a header value never produces a traceback, and upstream
text is clipped before it reaches Slack."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from botproc import BotProcess, wait_until
from builders import StartSim
from fake_slack import Answer, FakeSlack
from world import APP_KEY, DEV_KEY, healthy_simulator, serve_env, start_serve

from bot.simulator import JPushSimulator


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    return await start_sim(healthy_simulator())


def bot_env(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    return serve_env(sim, slack, tmp_path, "0.5", **extra)


async def start_bot(bots: list[BotProcess], env: dict[str, str], tmp_path: Path) -> BotProcess:
    return await start_serve(bots, env, tmp_path)


async def polls(sim: JPushSimulator, n: int, key: str) -> None:
    start = sim.stats.requests_by_key.get(key, 0)
    await wait_until(
        lambda: sim.stats.requests_by_key.get(key, 0) >= start + n,
        timeout=30,
        what=f"{n} polls of {key}",
    )


# --- JPush ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["86400", "inf", "-1", "soon"])
async def test_one_apps_retry_after_neither_blinds_the_others_nor_lasts(
    sim: JPushSimulator,
    slack: FakeSlack,
    tmp_path: Path,
    bots: list[BotProcess],
    retry_after: str,
) -> None:
    """503/50019 with a day-long (or unusable) Retry-After, once, from one app."""
    bot = await start_bot(bots, bot_env(sim, slack, tmp_path, POLL_INTERVAL="1"), tmp_path)
    await polls(sim, 1, APP_KEY)
    sim.fail_next(1, code=50019, status=503, key=APP_KEY, headers={"Retry-After": retry_after})
    await polls(sim, 1, APP_KEY)  # the refusal
    # The account keeps being read every cycle meanwhile ...
    await polls(sim, 3, DEV_KEY)
    # ... and the app itself is read again within min(5 min, POLL_INTERVAL) plus a cycle.
    await polls(sim, 1, APP_KEY)
    status, body = await bot.get_json("/healthz")
    assert status == 200, body
    assert "Traceback" not in bot.stderr()


# --- Slack ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "pause"),
    [("inf", 30.0), ("nan", 30.0), ("-3", 30.0), ("soon", 30.0), ("86400", 900.0)],
)
async def test_slack_retry_after_is_bounded_and_never_a_traceback(
    sim: JPushSimulator,
    slack: FakeSlack,
    tmp_path: Path,
    bots: list[BotProcess],
    retry_after: str,
    pause: float,
) -> None:
    slack.set_mode(Answer(status=429, retry_after=retry_after))
    sim.set_balance(APP_KEY, "market", 10)
    bot = await start_bot(bots, bot_env(sim, slack, tmp_path), tmp_path)
    await slack.wait_for(lambda s: len(s.attempts()) >= 1, timeout=30)
    await polls(sim, 6, APP_KEY)  # three seconds of cycles: no second attempt meanwhile
    assert len(slack.attempts()) == 1, slack.summary()

    async def logged() -> bool:
        return f"retry_in_s={pause}" in bot.stderr()

    await wait_until(logged, timeout=10, what=f"a {pause}s pause in the log")
    assert "Traceback" not in bot.stderr()
    status, body = await bot.get_json("/healthz")
    assert status == 200 and body["delivery"]["status"] == "failing", body


# --- upstream text --------------------------------------------------------------------------


async def test_a_huge_error_code_is_clipped_and_shown_once(
    sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    code = "9" * 4000
    body = '{"error": {"code": ' + code + ', "message": "' + "m" * 5000 + '"}}'
    sim.fail_next(1000, status=400, body=body, key=APP_KEY)
    sim.fail_next(1000, code=50002, key=DEV_KEY)
    env = bot_env(sim, slack, tmp_path, ALERT_FAILURES_BEFORE_ALERT="1")
    await start_bot(bots, env, tmp_path)
    await slack.wait_for(lambda s: len(s.accepted()) >= 1, timeout=30)
    text = json.dumps(slack.accepted()[0].body)
    assert "9" * 30 not in text, "the 4,000-digit code reached Slack"
    assert "m" * 300 not in text, "the 5,000-character message reached Slack"
    # Every scope's error shows its code once, not "(50002) (50002)".
    assert not re.search(r"\((\d+)\)\s*\(\1\)", text), text
