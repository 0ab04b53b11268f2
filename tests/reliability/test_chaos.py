"""Chaos: `serve` against a misbehaving JPush and Slack, killed with SIGKILL now and then.

A scripted driver changes balances (types go low, escalate, wobble, recover) and waits until
the bot has read each change, while other tasks throw JPush error storms (50019, 50009),
timeouts, HTML 502 pages, resets and rate limits at it, take Slack down (500, dropped
connections, 429 with Retry-After) and kill -9 the bot and start it again. Then the world is
made healthy and the bot left to settle, and everything Slack accepted is read back:

- every condition that was open was announced, in order, exactly as the alert rules say;
- nothing was announced twice, except a message Slack accepted just before a kill (counted);
- no low-balance alert names a value the simulator did not serve for that scope and type at
  that time (a failed read never looks like a low balance); the stored history agrees;
- a 429's Retry-After was honoured, the outbox is empty, and SIGTERM still exits 0.

CI size runs ~20 s per backend; CHAOS_LONG=1 runs minutes and prints its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from botproc import BotProcess, free_port
from chaos_support import (
    CRITICAL,
    HIGH,
    TYPES,
    WARNING,
    Delivered,
    RecordingSlack,
    Step,
    expected_events,
    fetch_sequence_ok,
    judge,
    make_schedule,
    message_ids,
    parse_message,
    parse_metrics,
    value_was_current,
)
from fake_slack import Answer

from bot.quota import QuotaType
from bot.simulator import JPushSimulator, SimScope
from bot.store.base import StateStore
from bot.store.factory import make_store

LONG = os.environ.get("CHAOS_LONG") == "1"
POLL = 0.25
KILL_WINDOW = 1.5  # a re-send is explained by a kill this soon after Slack took the first copy
STEP_DEADLINE = 45.0  # the bot must read a change within this, whatever the chaos
# A kill between claiming a message and recording its delivery leaves the claim in place until
# it expires (CLAIM_TTL, 60 s), so settling may take that long.
SETTLE_DEADLINE = 100.0


# Scopes that never alert: one with null quotas, one without quota at all (50033).
PARTIAL, NO_QUOTA = "partial", "noquota"
QUIET_SCOPES = (PARTIAL, NO_QUOTA)


@dataclass(frozen=True)
class Size:
    apps: int
    stories: int
    config_errors: int
    kill_every: float
    # How kills are aimed, in turn: "idle" (no message queued or in flight), "anywhere" (a
    # random moment), "after post" (right after Slack accepted a message: likely before the
    # bot recorded it, so it is sent again, and its claim holds the outbox up for 60 s).
    kill_modes: tuple[str, ...]
    min_kills: int  # the chaos goes on after the last balance change until this many
    seed: int


CI = Size(
    apps=3,
    stories=4,
    config_errors=1,
    kill_every=1.5,
    kill_modes=("idle",),
    min_kills=3,
    seed=7,
)
LONG_SIZE = Size(
    apps=8,
    stories=60,
    config_errors=3,
    kill_every=5.0,
    kill_modes=("idle", "anywhere", "after post", "idle"),
    min_kills=12,
    seed=11,
)


def app_name(i: int) -> str:
    return f"app{i}"


def scope_key(scope: str) -> str:
    return f"{scope}-key"


@dataclass
class World:
    """Everything the driver and the checks share."""

    sim: JPushSimulator
    slack: RecordingSlack
    bot: BotProcess
    http: aiohttp.ClientSession
    store: StateStore  # the bot's own state, read alongside it (never written)
    size: Size
    scopes: list[str]
    rng: random.Random
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    jpush_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    faults: Counter[str] = field(default_factory=Counter)
    kills: list[float] = field(default_factory=list)  # time.monotonic()
    kill_modes: Counter[str] = field(default_factory=Counter)
    schedule_seconds: float = 0.0
    # Per (scope, type): (time.time() set, value), to judge every stored reading.
    timeline: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=dict)
    observed: dict[tuple[str, str, int], float] = field(default_factory=dict)  # monotonic
    served_since: dict[tuple[str, str, int], float] = field(default_factory=dict)  # monotonic

    async def pause(self, seconds: float) -> None:
        """The scenario's own pacing; returns early when the scenario ends."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        try:
            async with self.http.get(
                self.bot.base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                if response.status != 200:
                    return None
                return parse_metrics(await response.text())
        except (aiohttp.ClientError, TimeoutError):
            return None  # killed, restarting

    async def until(self, check: Callable[[], Awaitable[bool]], what: str, deadline: float) -> None:
        end = time.monotonic() + deadline
        while not await check():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def gauge_total(self, name: str) -> float | None:
        found = await self.metrics()
        return None if found is None else found.get((name, frozenset()))

    async def gauge(self, name: str, **labels: str) -> float | None:
        found = await self.metrics()
        if found is None:
            return None
        return found.get((name, frozenset(labels.items())))


# --- the scenario's tasks ------------------------------------------------------------------


async def run_schedule(world: World, steps: list[Step]) -> None:
    for step in steps:
        if step.quota_type is None:
            await config_error(world, step.scope)
            continue
        key = (step.scope, step.quota_type)
        assert step.value is not None
        world.sim.set_balance(scope_key(step.scope), step.quota_type, step.value)
        world.timeline[key].append((time.time(), step.value))
        world.served_since.setdefault((*key, step.value), time.monotonic())

        async def read(
            scope: str = step.scope, quota_type: str = step.quota_type, value: float = step.value
        ) -> bool:
            return await world.gauge("sms_balance", scope=scope, type=quota_type) == value

        await world.until(read, f"the bot to read {step}", STEP_DEADLINE)
        world.observed[(step.scope, step.quota_type, step.value)] = time.monotonic()
        await world.pause(world.rng.uniform(0, 2 * POLL))


async def config_error(world: World, scope: str) -> None:
    """SMS disabled on a scope (403/50008, alerts at once) until the bot has read it, then back.

    JPush chaos holds off meanwhile, so the failure the bot reads is this one.
    """
    sim_scope = next(s for s in world.sim.scopes if s.key == scope_key(scope))
    async with world.jpush_lock:
        world.sim.clear_failures()
        sim_scope.sms_disabled = True
        world.faults["config error 50008"] += 1

        async def up_is(value: float) -> bool:
            return await world.gauge("sms_scope_up", scope=scope) == value

        await world.until(lambda: up_is(0), f"{scope} to read as failing", STEP_DEADLINE)
        sim_scope.sms_disabled = False
        await world.until(lambda: up_is(1), f"{scope} to read again", STEP_DEADLINE)


async def jpush_chaos(world: World) -> None:
    sim = world.sim
    some_key = scope_key(world.rng.choice(world.scopes))
    html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

    async def storm_50019() -> None:
        sim.fail_next(world.rng.randint(3, 8), code=50019)

    async def storm_50009() -> None:
        sim.fail_next(world.rng.randint(3, 8), code=50009, headers={"Retry-After": "1"})

    async def html_502() -> None:
        sim.fail_next(world.rng.randint(3, 8), status=502, body=html, content_type="text/html")

    async def timeouts() -> None:
        sim.set_latency(None, 0.8)  # JPUSH_TIMEOUT is 0.5
        await world.pause(world.rng.uniform(0.5, 1.5))
        sim.set_latency(None, 0.0)

    async def resets() -> None:
        sim.set_down(True)
        await world.pause(world.rng.uniform(0.3, 1.0))
        sim.set_down(False)

    async def rate_limit() -> None:
        sim.rate_limit = 3
        await world.pause(world.rng.uniform(0.5, 1.5))
        sim.rate_limit = None

    async def one_scope_garbage() -> None:
        sim.fail_next(3, key=some_key, body='{"app_balance": "12"}')

    faults: dict[str, Callable[[], Awaitable[None]]] = {
        "50019 storm": storm_50019,
        "50009 storm": storm_50009,
        "HTML 502": html_502,
        "timeouts": timeouts,
        "connection resets": resets,
        "rate limit": rate_limit,
        "malformed body": one_scope_garbage,
    }
    names = sorted(faults)
    while not world.stop.is_set():
        name = world.rng.choice(names)
        async with world.jpush_lock:
            world.faults[name] += 1
            await faults[name]()
        # Calm between bursts: a cycle that meets a burst retries for seconds (backoff).
        await world.pause(world.rng.uniform(0.7, 2.0))


async def slack_chaos(world: World) -> None:
    slack = world.slack
    while not world.stop.is_set():
        await world.pause(world.rng.uniform(0.8, 2.0))
        mode = world.rng.choice(["500", "drop", "429"])
        world.faults[f"slack {mode}"] += 1
        if mode == "429":
            slack.answer_next(Answer(status=429, retry_after=world.rng.choice([1, 2])))
            continue
        slack.set_mode(Answer(status=500) if mode == "500" else Answer(drop=True))
        await world.pause(world.rng.uniform(0.5, 1.5))
        slack.set_mode(Answer())


async def killer(world: World) -> None:
    modes = world.size.kill_modes
    n = 0
    while True:
        # Each life gets to finish a couple of cycles: kills more frequent than a cycle under
        # chaos (retries with backoff take seconds) would only show that nothing progresses.
        await world.until(lambda: lived(world), "the restarted bot to complete cycles", 60)
        await world.pause(world.size.kill_every * world.rng.uniform(0.6, 1.4))
        if world.stop.is_set():
            return
        mode = modes[n % len(modes)]
        n += 1
        if mode == "after post":
            await kill_after_next_post(world)
        elif mode == "idle" and not await wait_idle(world):
            world.faults["kill skipped (never idle)"] += 1
            continue
        world.kill_modes[mode] += 1
        await kill(world)
        await restart(world)


async def lived(world: World) -> bool:
    polls = await world.gauge_total("sms_polls_total")
    return polls is not None and polls >= 2


async def wait_idle(world: World) -> bool:
    """Nothing queued, so nothing claimed: a kill now cannot strand a claimed message.

    (A kill between claiming a message and recording its fate leaves the claim in place for
    CLAIM_TTL, 60 s: the "after post" kills of the long run show that; CI must not wait.)
    """
    for _ in range(200):  # at most ~10 s
        if not await world.store.pending_messages(1):
            return True
        await asyncio.sleep(0.05)
    return False


async def kill_after_next_post(world: World) -> None:
    """Right after Slack took a message: likely before the bot recorded that it was sent."""
    before = len(world.slack.accepted())
    with contextlib.suppress(AssertionError):
        await world.slack.wait_for(lambda s: len(s.accepted()) > before, timeout=10)
    if len(world.slack.accepted()) == before:
        world.faults["after-post kill without a post"] += 1


async def kill(world: World) -> None:
    proc = world.bot.proc
    assert proc is not None
    if proc.returncode is not None:
        raise AssertionError(f"the bot died on its own:\n{world.bot.stderr()[-3000:]}")
    await world.bot.kill9()
    world.kills.append(time.monotonic())


async def restart(world: World) -> None:
    await world.bot.start()
    await world.bot.wait_ready(timeout=20)


# --- set-up --------------------------------------------------------------------------------


def build_simulator(scopes: list[str]) -> JPushSimulator:
    sim = JPushSimulator()
    for scope in scopes:
        kind: Literal["account", "app"] = "account" if scope == "account" else "app"
        balances: dict[str, int | None] = {t: HIGH for t in TYPES}
        sim.add_scope(
            SimScope(key=scope_key(scope), secret=f"{scope}-secret", kind=kind, balances=balances)
        )
    # Never alerts: a null quota and an app without quota (50033).
    sim.add_scope(
        SimScope(
            key=scope_key(PARTIAL),
            secret="partial-secret",
            kind="app",
            balances={"balance": HIGH, "voice": None, "industry": HIGH, "market": None},
        )
    )
    sim.add_scope(
        SimScope(
            key=scope_key(NO_QUOTA),
            secret="noquota-secret",
            kind="app",
            balances={},
            not_assigned=True,
        )
    )
    return sim


def bot_env(
    sim: JPushSimulator, slack: RecordingSlack, scopes: list[str], state_url: str
) -> dict[str, str]:
    assert sim.base_url is not None
    apps = [
        {"name": s, "app_key": scope_key(s), "master_secret": f"{s}-secret"}
        for s in [*scopes, *QUIET_SCOPES]
        if s != "account"
    ]
    return {
        "JPUSH_BASE_URL": sim.base_url,
        "JPUSH_DEV_KEY": scope_key("account"),
        "JPUSH_DEV_SECRET": "account-secret",
        "JPUSH_APPS": json.dumps(apps),
        "JPUSH_TIMEOUT": "0.5",
        "SLACK_BOT_TOKEN": "xoxb-chaos",
        "SLACK_CHANNEL": "C0CHAOS",
        "SLACK_API_URL": slack.url + "/api/",
        "STATE_URL": state_url,
        "POLL_INTERVAL": str(POLL),
        "ALERT_FAILURES_BEFORE_ALERT": "2",
        "ALERT_REPEAT_INTERVAL": "1h",
        "ALERT_FORECAST_HORIZON": "0",
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def world(state_url: str, tmp_path: Path) -> AsyncIterator[World]:
    size = LONG_SIZE if LONG else CI
    scopes = ["account", *(app_name(i) for i in range(size.apps))]
    sim = build_simulator(scopes)
    await sim.start()
    slack = RecordingSlack()
    await slack.start()
    bot = BotProcess(["serve"], bot_env(sim, slack, scopes, state_url), tmp_path, name="chaos")
    http = aiohttp.ClientSession()
    store = make_store(state_url)
    await store.open()
    world = World(sim, slack, bot, http, store, size, scopes, random.Random(size.seed))
    start = time.time()
    for scope in scopes:
        for quota_type in TYPES:
            world.timeline[(scope, quota_type)] = [(start - 1, HIGH)]
    try:
        yield world
    finally:
        await bot.stop_quietly()
        await store.close()
        await http.close()
        await slack.stop()
        await sim.stop()


# --- the test -------------------------------------------------------------------------------


@pytest.mark.timeout(900 if LONG else 150)
async def test_chaos(world: World, state_url: str) -> None:
    started = time.monotonic()
    size = world.size
    apps = [s for s in world.scopes if s != "account"]
    steps = make_schedule(
        world.rng, world.scopes, size.stories, world.rng.sample(apps, size.config_errors)
    )
    await world.bot.start()
    await world.bot.wait_ready(timeout=20)

    async def drive() -> None:
        await run_schedule(world, steps)
        world.schedule_seconds = time.monotonic() - started

        async def enough_kills() -> bool:
            return len(world.kills) >= size.min_kills

        await world.until(enough_kills, f"{size.min_kills} kills", 120)

    driver = asyncio.create_task(drive())
    chaos = [
        asyncio.create_task(jpush_chaos(world)),
        asyncio.create_task(slack_chaos(world)),
        asyncio.create_task(killer(world)),
    ]

    def stop_driver_if_failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            driver.cancel()  # the chaos task's own error is raised by the gather below

    for task in chaos:
        task.add_done_callback(stop_driver_if_failed)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await driver
    finally:
        world.stop.set()
        await asyncio.gather(*chaos)
    assert not driver.cancelled()
    settle_started = time.monotonic()
    await settle(world)
    settled_in = time.monotonic() - settle_started
    code = await world.bot.terminate()
    assert code == 0, world.bot.stderr()[-3000:]

    delivered = [Delivered(p, parse_message(p.body)) for p in world.slack.accepted()]
    verdict = judge(delivered, world.kills, KILL_WINDOW)
    # Web API delivery is exactly once: no outbox message reached Slack twice, kills included.
    posted_twice = {i: n for i, n in message_ids(world.slack.accepted()).items() if n > 1}
    report(world, steps, delivered, len(posted_twice), started, settled_in, state_url)
    assert not posted_twice, f"posted twice: {posted_twice}"

    assert not verdict.unexplained, f"announced twice without a kill: {verdict.unexplained}"
    expected = expected_events(steps)
    for key in sorted(set(expected) | set(verdict.per_key)):
        assert verdict.per_key.get(key, []) == expected.get(key, []), key
    check_no_false_alarm(world, delivered)
    for scope, kinds in verdict.fetch.items():
        assert fetch_sequence_ok(kinds), (scope, kinds)
    for step in steps:
        if step.quota_type is None:
            assert "fetch_failing" in verdict.fetch.get(step.scope, []), step
    check_retry_after(world)
    assert "Traceback" not in all_logs(world.bot), "an unexpected exception was logged"
    await check_store(world)


async def settle(world: World) -> None:
    sim, slack = world.sim, world.slack
    sim.clear_failures()
    sim.set_latency(None, 0.0)
    sim.set_down(False)
    sim.rate_limit = None
    slack.script.clear()
    slack.set_mode(Answer())
    if world.bot.proc is None or world.bot.proc.returncode is not None:
        await restart(world)

    async def all_read() -> bool:
        found = await world.metrics()
        if found is None:
            return False
        return all(
            found.get(("sms_scope_up", frozenset({("scope", s)}))) == 1
            for s in [*world.scopes, *QUIET_SCOPES]
        )

    await world.until(all_read, "every scope to read fine", 30)

    async def drained() -> bool:
        return not await world.store.pending_messages(1)

    await world.until(drained, "the outbox to drain", SETTLE_DEADLINE)
    posts = len(slack.posts)
    account = scope_key("account")
    seen = sim.stats.requests_by_key.get(account, 0)

    async def four_more_polls() -> bool:
        return sim.stats.requests_by_key.get(account, 0) >= seen + 4

    await world.until(four_more_polls, "four more polls", 30)
    assert len(slack.posts) == posts, f"posts after settling: {slack.summary()[posts:]}"


def check_no_false_alarm(world: World, delivered: list[Delivered]) -> None:
    """Every low-balance alert names a value the simulator really served, below its bar."""
    for item in delivered:
        for scope, quota_type, kind, level, value in item.events:
            if kind not in ("fired", "escalated"):
                continue
            assert quota_type is not None and value is not None
            bar = CRITICAL if level == "critical" else WARNING
            assert value < bar, (scope, quota_type, kind, level, value)
            served_since = world.served_since.get((scope, quota_type, value))
            assert served_since is not None, f"{scope}/{quota_type} was never {value}"
            assert served_since <= item.post.at, f"{scope}/{quota_type} {value} announced early"


def check_retry_after(world: World) -> None:
    """After a 429, nothing reaches that endpoint before its Retry-After has passed."""
    posts, answers = world.slack.posts, world.slack.answers
    for i, answer in enumerate(answers[:-1]):
        if answer.status == 429 and answer.retry_after:
            gap = posts[i + 1].at - posts[i].at
            assert gap >= answer.retry_after - 0.05, (i, gap, answer)


async def check_store(world: World) -> None:
    """What the bot stored as read agrees with what the simulator served; nothing is queued."""
    store = world.store
    assert await store.pending_messages() == []
    since = datetime(2000, 1, 1, tzinfo=UTC)
    for (scope, quota_type), timeline in world.timeline.items():
        for read_at, value in await store.history(scope, QuotaType(quota_type), since):
            assert value_was_current(timeline, value, read_at.timestamp(), tolerance=2.0), (
                f"{scope}/{quota_type} stored {value} at {read_at}, "
                f"but the simulator served {timeline}"
            )


def all_logs(bot: BotProcess) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted(bot.workdir.glob(f"{bot.name}.*.err"))
    )


def report(
    world: World,
    steps: list[Step],
    delivered: list[Delivered],
    duplicates: int,
    started: float,
    settled_in: float,
    state_url: str,
) -> None:
    latencies = []
    for item in delivered:
        for scope, quota_type, _, _, value in item.events:
            seen = world.observed.get((scope, quota_type or "", value or -1))
            if seen is not None and item.post.at >= seen:
                latencies.append(item.post.at - seen)
    backend = state_url.partition(":")[0]
    polls = all_logs(world.bot).count("poll cycle done")
    fetch_alerts = sum(1 for d in delivered for e in d.events if e[2] == "fetch_failing")
    figures = {
        "backend": backend,
        "seconds": round(time.monotonic() - started, 1),
        "scopes": len(world.scopes) + len(QUIET_SCOPES),
        "balance changes": sum(1 for s in steps if s.quota_type),
        "polls": polls,
        "jpush requests": world.sim.stats.requests,
        "faults injected": dict(sorted(world.faults.items())),
        "kills": len(world.kills),
        "kills by aim": dict(world.kill_modes),
        "slack attempts": len(world.slack.attempts()),
        "messages accepted": len(delivered),
        "fetch-failing alerts": fetch_alerts,
        "duplicates (outbox ids posted twice)": duplicates,
        "look-ups": len(world.slack.attempts("/api/conversations.")),
        "root updates": len(world.slack.accepted("/api/chat.update")),
        "delivery latency s (p50/max)": (
            (round(statistics.median(latencies), 2), round(max(latencies), 2))
            if latencies
            else None
        ),
        "schedule seconds": round(world.schedule_seconds, 1),
        "settle seconds": round(settled_in, 1),
    }
    print("\nCHAOS " + json.dumps(figures))
    if os.environ.get("CHAOS_VERBOSE") == "1":
        for item in delivered:
            print(f"  {item.post.at:.2f} {item.events}")
