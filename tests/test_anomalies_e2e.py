"""Steps, sudden drops, pool advice and unusual burn end to end: the console script, the JPush
simulator and a fake Slack, each through what an operator sees (messages, check --json,
/metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from botproc import BotProcess, free_port, run_cli, wait_until
from builders import StartSim
from fake_slack import FakeSlack

from bot.quota import QuotaType, ScopeKind, ScopeReading
from bot.simulator import JPushSimulator, SimScope
from bot.store.sqlite import SqliteStore

DEV_KEY, DEV_SECRET = "acct-key", "acct-secret"
FLAT = {"balance": 50_000, "voice": 50_000, "industry": 50_000, "market": 50_000}


def account(industry: int, per_second: float = 0.0) -> SimScope:
    return SimScope(
        key=DEV_KEY,
        secret=DEV_SECRET,
        kind="account",
        balances={**FLAT, "industry": industry},
        drain_per_hour={"industry": per_second * 3600} if per_second else {},
    )


def shop(industry: int) -> SimScope:
    return SimScope(
        key="shop", secret="shop-secret", kind="app", balances={**FLAT, "industry": industry}
    )


def bot_env(sim: JPushSimulator, slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "JPUSH_BASE_URL": str(sim.base_url),
        "JPUSH_DEV_KEY": DEV_KEY,
        "JPUSH_DEV_SECRET": DEV_SECRET,
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": "shop", "master_secret": "shop-secret"}]
        ),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_CHANNEL": "C1",
        "SLACK_API_URL": slack.url + "/api/",
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "POLL_INTERVAL": "0.5",
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        **extra,
    }


async def start_bot(env: dict[str, str], tmp_path: Path, bots: list[BotProcess]) -> BotProcess:
    bot = BotProcess(["serve"], env, tmp_path)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready()
    return bot


async def polls_of(sim: JPushSimulator, key: str, more: int, timeout: float = 60) -> None:
    target = sim.stats.requests_by_key.get(key, 0) + more
    await wait_until(
        lambda: sim.stats.requests_by_key.get(key, 0) >= target,
        timeout=timeout,
        what=f"{more} more polls of {key}",
    )


def texts(slack: FakeSlack) -> list[str]:
    return [post.text for post in slack.accepted()]


async def test_a_step_does_not_make_the_forecast_run_out(
    start_sim: StartSim, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    # The account pool drains 2 a second; 80,000 of it is then allocated to an app at once.
    sim = await start_sim(JPushSimulator())
    sim.add_scope(account(100_000, per_second=2.0))
    sim.add_scope(shop(50_000))
    env = bot_env(sim, slack, tmp_path, ALERT_FORECAST_HORIZON="1h")
    bot = await start_bot(env, tmp_path, bots)
    await polls_of(sim, DEV_KEY, 10)
    sim.set_balance(DEV_KEY, "industry", 20_000)
    await polls_of(sim, DEV_KEY, 14)

    rc, out, err = await run_cli(["check", "--json"], env, tmp_path)
    assert rc == 0, err
    found = next(s for s in json.loads(out)["scopes"] if s["name"] == "account")
    per_hour = found["forecast"]["industry"]["per_hour"]
    assert abs(per_hour - 7_200) <= 0.3 * 7_200, found

    # serve's own figure agrees, and nothing says the pool is running out: the one message
    # is the sudden drop, naming the step.
    async with aiohttp.ClientSession() as s, s.get(f"{bot.base_url}/metrics") as r:
        metrics = await r.text()
    rate = re.search(
        r'^sms_balance_burn_rate_per_second\{scope="account",type="industry"\} (\S+)$',
        metrics,
        re.M,
    )
    assert rate is not None, metrics
    assert abs(float(rate.group(1)) - 2.0) <= 0.3 * 2.0
    await slack.wait_for(lambda s: len(s.accepted()) >= 1)
    await polls_of(sim, DEV_KEY, 4)
    posted = texts(slack)
    assert len(posted) == 1, slack.summary()
    assert "SUDDEN DROP" in posted[0]
    assert not any("RUNNING OUT" in text or "run out" in text for text in posted)


async def test_a_sudden_drop_is_said_once_naming_the_amount(
    start_sim: StartSim, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim = await start_sim(JPushSimulator())
    sim.add_scope(account(100_000))
    sim.add_scope(shop(50_000))
    await start_bot(bot_env(sim, slack, tmp_path), tmp_path, bots)
    await polls_of(sim, DEV_KEY, 3)
    sim.set_balance(DEV_KEY, "industry", 40_000)
    await slack.wait_for(lambda s: len(s.accepted()) >= 1)
    await polls_of(sim, DEV_KEY, 6)
    posted = texts(slack)
    assert len(posted) == 1, slack.summary()
    assert "dropped 60,000 (60 %)" in posted[0]
    assert "if no quota was moved to an app, check for abuse" in posted[0]


async def test_an_app_low_on_a_type_the_pool_holds_is_told_how_much(
    start_sim: StartSim, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    sim = await start_sim(JPushSimulator())
    sim.add_scope(account(54_321))
    sim.add_scope(shop(500))
    await start_bot(bot_env(sim, slack, tmp_path), tmp_path, bots)
    await slack.wait_for(lambda s: len(s.accepted()) >= 1)
    shop_lines = [text for text in texts(slack) if "shop" in text]
    assert shop_lines, slack.summary()
    assert (
        "the account pool has 54,321 industry left to allocate to shop in the JPush console"
        in shop_lines[0]
    )


def prefilled_week(now: datetime, burst_at: datetime) -> list[tuple[datetime, int]]:
    """A week of the account's industry burning 600 an hour, polled every 10 minutes, with a
    burst of 6,000 in the minute from `burst_at` (a whole minute a little less than an hour
    ago): the last hour burns 11 times the usual hour until that minute leaves it, at
    `burst_at` + 1 hour."""
    points, value = [], 1_000_000
    at = now - timedelta(days=7)
    while at + timedelta(minutes=10) <= burst_at:
        points.append((at, value))
        at, value = at + timedelta(minutes=10), value - 100
    points.append((at, value))
    value -= round((burst_at - at) / timedelta(minutes=1) * 10)
    at = burst_at
    for _ in range(4):  # 1,500 every 15 seconds
        points.append((at, value))
        at, value = at + timedelta(seconds=15), value - 1_500
    while at < now - timedelta(seconds=20):
        points.append((at, value))
        at, value = at + timedelta(minutes=1), value - 10
    return points


async def store_history(path: Path, points: Sequence[tuple[datetime, int]]) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        readings = [
            ScopeReading(
                scope="account",
                kind=ScopeKind.ACCOUNT,
                read_at=at,
                balances={
                    QuotaType.BALANCE: FLAT["balance"],
                    QuotaType.VOICE: FLAT["voice"],
                    QuotaType.INDUSTRY: value,
                    QuotaType.MARKET: FLAT["market"],
                },
            )
            for at, value in points
        ]
        for start in range(0, len(readings), 200):
            await store.save_readings(readings[start : start + 200])
    finally:
        await store.close()


# Room for the bot to start and fire: it takes under a second here, wait_ready allows 10 s.
# The test lasts this plus up to a minute, waiting for a minute boundary.
LEAVES_AFTER = timedelta(seconds=15)


def seconds_until(at: datetime) -> float:
    return max(0.0, (at - datetime.now(UTC)).total_seconds())


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_burning_faster_than_usual_fires_once_and_resolves(
    start_sim: StartSim, slack: FakeSlack, tmp_path: Path, bots: list[BotProcess]
) -> None:
    # The last hour is kept per minute, so the burst leaves it on a minute boundary: the first
    # one at least LEAVES_AFTER from now. Until then the alert must have fired.
    now = datetime.now(UTC)
    leaves_at = (now + LEAVES_AFTER).replace(second=0, microsecond=0) + timedelta(minutes=1)
    points = prefilled_week(now, leaves_at - timedelta(hours=1))
    await store_history(tmp_path / "state.db", points)
    sim = await start_sim(JPushSimulator())
    sim.add_scope(account(points[-1][1], per_second=600 / 3600))
    sim.add_scope(shop(50_000))
    bot = await start_bot(bot_env(sim, slack, tmp_path, POLL_INTERVAL="1"), tmp_path, bots)

    await slack.wait_for(lambda s: len(s.accepted()) >= 1, timeout=seconds_until(leaves_at))
    first = texts(slack)[0]
    assert "BURNING FAST" in first, first
    assert "the usual 600/hour" in first
    async with aiohttp.ClientSession() as s, s.get(f"{bot.base_url}/metrics") as r:
        metrics = await r.text()
    ratio = re.search(
        r'^sms_balance_burn_ratio\{scope="account",type="industry"\} (\S+)$', metrics, re.M
    )
    assert ratio is not None, metrics

    # The burst leaves the last hour: the alert resolves, once.
    def resolved(s: FakeSlack) -> bool:
        return any("burn back to" in p.text for p in s.accepted())

    await slack.wait_for(resolved, timeout=seconds_until(leaves_at) + 30)
    await polls_of(sim, DEV_KEY, 3)
    posted = texts(slack)
    assert sum("BURNING FAST" in text for text in posted) == 1, slack.summary()
    assert sum("burn back to" in text for text in posted) == 1, slack.summary()
    assert float(ratio.group(1)) > 5
