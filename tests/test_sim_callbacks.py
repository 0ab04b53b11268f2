"""The simulator's delivery reports, received by a loopback endpoint that verifies each one with
the bot's own signature check (so a report the bot would refuse fails these tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sim_helpers import ManualClock, add_account, add_app, app_key, app_secret, serving, wait_until

from bot.delivery_reports import CallbackApp, DeliveryReport, Rejection, Signer, read_callback
from bot.sim_callbacks import send_outcomes
from bot.simulator import JPushSimulator


class Receiver:
    """A callback endpoint: verifies, records, and answers with the next scripted status."""

    def __init__(self, *apps: str) -> None:
        self.signer = Signer(CallbackApp(a, app_key(a), app_secret(a)) for a in apps)
        self.reports: list[DeliveryReport] = []
        self.refused: list[int] = []
        self.answers: list[int] = []  # popped per request; 200 when empty
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/jpush/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/jpush/callback"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            report = read_callback(await request.read(), self.signer, datetime.now(UTC))
        except Rejection as refused:
            self.refused.append(refused.status)
            return web.Response(status=refused.status)
        self.reports.append(report)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status)

    def statuses(self) -> list[int | None]:
        return [r.status for r in self.reports]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver("shop", "crm")
    await endpoint.start()
    yield endpoint
    await endpoint.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[JPushSimulator]:
    simulator = JPushSimulator(clock=clock)
    add_account(simulator)
    add_app(simulator, "shop", {"industry": 2, "market": 5}, drain_per_hour={"market": 3600.0})
    add_app(simulator, "crm", {"industry": 100})
    async with serving(simulator):
        yield simulator


@pytest.mark.parametrize(
    ("available", "n", "statuses", "spent"),
    [
        (3, 2, [4001, 4001], 2),
        (2, 3, [4001, 4001, 4005], 2),
        (0, 2, [4005, 4005], 0),
        (None, 1, [4005], 0),
        (5, 0, [], 0),
    ],
)
def test_send_outcomes(available: int | None, n: int, statuses: list[int], spent: int) -> None:
    assert send_outcomes(available, n) == (statuses, spent)


async def test_sends_report_delivered_then_quota_exhausted(
    sim: JPushSimulator, receiver: Receiver
) -> None:
    sim.set_callback(app_key("shop"), receiver.url)
    assert sim.send(app_key("shop"), "industry", 3) == [4001, 4001, 4005]
    assert sim.current_balance(app_key("shop"), "industry") == 0
    await wait_until(lambda: len(receiver.reports) == 3)
    assert sorted(receiver.statuses(), key=str) == [4001, 4001, 4005]
    assert {r.scope for r in receiver.reports} == {"shop"}
    assert len({r.nonce for r in receiver.reports}) == 3
    assert receiver.refused == []
    # The other app has no callback: its sends are not reported.
    assert sim.send(app_key("crm"), "industry", 1) == [4001]
    await sim.callbacks.drain()
    assert len(receiver.reports) == 3


async def test_a_draining_app_reports_4005_for_each_unit_past_zero(
    sim: JPushSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    shop = app_key("shop")
    sim.set_callback(shop, receiver.url)
    clock.advance(4)  # market 5 -> 1: sends still succeed, nothing reported for the drain
    assert sim.report_drain() == 0
    clock.advance(4)  # 8 drained from 5: three sends failed
    await wait_until(lambda: len(receiver.reports) == 3)
    assert receiver.statuses() == [4005, 4005, 4005]
    assert sim.report_drain() == 0  # each failed send once
    clock.advance(2)
    await wait_until(lambda: len(receiver.reports) == 5)
    sim.set_balance(shop, "market", 10)  # a top-up: sends succeed again
    clock.advance(5)
    assert sim.report_drain() == 0


async def test_refused_report_is_retried_with_the_same_nonce_and_signature(
    sim: JPushSimulator, receiver: Receiver
) -> None:
    sim.set_callback(app_key("shop"), receiver.url, retry_delays=[0.01, 0.01, 0.01])
    receiver.answers = [503, 500]
    sim.send(app_key("shop"), "industry", 1)
    await wait_until(lambda: len(receiver.reports) == 3)
    await sim.callbacks.drain()
    assert len({r.replay_key for r in receiver.reports}) == 1
    stats = sim.callbacks.stats
    assert (stats.posted, stats.accepted, stats.failed) == (3, 1, 2)
    assert stats.answers == {"503": 1, "500": 1, "200": 1}


async def test_unreachable_callback_gives_up_after_three_retries(sim: JPushSimulator) -> None:
    sim.set_callback(app_key("crm"), "http://127.0.0.1:9/jpush/callback", retry_delays=[0, 0, 0])
    sim.send(app_key("crm"), "industry", 1)
    await wait_until(lambda: sim.callbacks.stats.posted == 4)
    await sim.callbacks.drain()
    assert sim.callbacks.stats.answers == {"error": 4}


async def test_control_api(sim: JPushSimulator, receiver: Receiver) -> None:
    async def control(path: str, body: Any) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{sim.base_url}{path}", json=body) as r,
        ):
            return r.status, await r.json(content_type=None) if r.status == 200 else None

    assert (await control("/_sim/callback", {"key": app_key("shop"), "url": receiver.url}))[
        0
    ] == 200
    status, body = await control("/_sim/send", {"key": app_key("shop"), "n": 3})
    assert (status, body["statuses"]) == (200, [4001, 4001, 4005])
    await wait_until(lambda: len(receiver.reports) == 3)
    async with aiohttp.ClientSession() as http, http.get(f"{sim.base_url}/_sim/stats") as r:
        stats = await r.json()
    assert stats["callbacks"]["by_status"] == {"4001": 2, "4005": 1}
    assert (await control("/_sim/callback", {"key": app_key("shop"), "url": None}))[0] == 200
    sim.send(app_key("shop"), "industry", 1)
    await sim.callbacks.drain()
    assert len(receiver.reports) == 3
    # Bad control requests: the account has no callback, unknown key, n out of range.
    assert (await control("/_sim/callback", {"key": "acct-key", "url": receiver.url}))[0] == 400
    assert (await control("/_sim/callback", {"key": "nope", "url": receiver.url}))[0] == 400
    assert (await control("/_sim/send", {"key": app_key("shop"), "n": 10_001}))[0] == 400
    assert (await control("/_sim/send", {"key": app_key("shop"), "type": "fax"}))[0] == 400
