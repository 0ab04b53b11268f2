"""The JPush simulator over real loopback HTTP: auth, errors, drain, rate limit, control API."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from sim_helpers import (
    ACCOUNT_BALANCES,
    ACCOUNT_KEY,
    ACCOUNT_SECRET,
    FakeTime,
    ManualClock,
    account_scope,
    add_account,
    add_app,
    app_balances,
    app_key,
    app_scope,
    app_secret,
    serving,
    wait_until,
)

from bot.jpush import JPushClient
from bot.quota import QuotaType
from bot.settings import Settings
from bot.simulator import (
    DEMO_DEV_KEY,
    JPushSimulator,
    SimScope,
    demo_env,
    demo_simulator,
    run_simulator,
)

DEV = "/v1/accounts/dev"
APP = "/v1/accounts/app"


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


ACCOUNT_AUTH = basic(ACCOUNT_KEY, ACCOUNT_SECRET)
SHOP_AUTH = basic(app_key("shop"), app_secret("shop"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[JPushSimulator]:
    simulator = JPushSimulator(clock=clock)
    add_account(simulator)
    add_app(simulator, "shop", app_balances(0))
    add_app(simulator, "off", app_balances(1), sms_disabled=True)
    add_app(simulator, "bare", app_balances(2), not_assigned=True)
    async with serving(simulator):
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sim: JPushSimulator,
    path: str,
    *,
    method: str = "GET",
    auth: str | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    all_headers = dict(headers or {})
    if auth is not None:
        all_headers["Authorization"] = auth
    async with http.request(method, f"{sim.base_url}{path}", headers=all_headers, data=data) as r:
        body = await r.json(content_type=None) if r.status != 204 else None
        return r.status, body, r.headers


def code_of(body: Any) -> int:
    code = body["error"]["code"]
    assert isinstance(code, int)
    return code


# -- the API -----------------------------------------------------------------------------------


async def test_account_answer(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    assert status == 200
    assert body == {f"dev_{t}": v for t, v in ACCOUNT_BALANCES.items()}


async def test_app_answer(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, sim, APP, auth=SHOP_AUTH)
    assert status == 200
    assert body == {f"app_{t}": v for t, v in app_balances(0).items()}


# path, method, Authorization, extra headers, body -> status, code
ERROR_CASES = [
    ("no-auth", DEV, "GET", None, None, None, 400, 50001),
    ("not-basic", DEV, "GET", "Bearer abc", None, None, 400, 50001),
    ("garbled-b64", DEV, "GET", "Basic !!!notbase64", None, None, 400, 50001),
    (
        "no-colon",
        DEV,
        "GET",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        None,
        None,
        400,
        50001,
    ),
    ("wrong-secret", DEV, "GET", basic(ACCOUNT_KEY, "nope"), None, None, 401, 50002),
    ("unknown-key", DEV, "GET", basic("who", "x"), None, None, 401, 50002),
    ("app-key-on-dev", DEV, "GET", SHOP_AUTH, None, None, 401, 50002),
    ("dev-key-on-app", APP, "GET", ACCOUNT_AUTH, None, None, 401, 50002),
    ("sms-disabled", APP, "GET", basic(app_key("off"), app_secret("off")), None, None, 403, 50008),
    (
        "not-assigned",
        APP,
        "GET",
        basic(app_key("bare"), app_secret("bare")),
        None,
        None,
        403,
        50033,
    ),
    ("unknown-path", "/v1/accounts/nope", "GET", ACCOUNT_AUTH, None, None, 404, 50016),
    ("post", DEV, "POST", ACCOUNT_AUTH, {"Content-Type": "application/json"}, b"{}", 405, 50018),
    ("delete", APP, "DELETE", SHOP_AUTH, None, None, 405, 50018),
    ("text-body", DEV, "GET", ACCOUNT_AUTH, {"Content-Type": "text/plain"}, b"hi", 415, 50017),
]


@pytest.mark.parametrize(
    ("path", "method", "auth", "headers", "data", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES],
)
async def test_documented_errors(
    sim: JPushSimulator,
    http: aiohttp.ClientSession,
    path: str,
    method: str,
    auth: str | None,
    headers: dict[str, str] | None,
    data: bytes | None,
    status: int,
    code: int,
) -> None:
    got_status, body, _ = await call(
        http, sim, path, method=method, auth=auth, headers=headers, data=data
    )
    assert (got_status, code_of(body)) == (status, code)
    assert isinstance(body["error"]["message"], str)


async def test_json_body_on_get_is_accepted(
    sim: JPushSimulator, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await call(
        http,
        sim,
        DEV,
        auth=ACCOUNT_AUTH,
        headers={"Content-Type": "application/json"},
        data=b"{}",
    )
    assert status == 200


async def test_requests_are_counted_by_key(
    sim: JPushSimulator, http: aiohttp.ClientSession
) -> None:
    await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    await call(http, sim, APP, auth=SHOP_AUTH)
    await call(http, sim, APP, auth=SHOP_AUTH)
    await call(http, sim, DEV)
    assert sim.stats.requests == 4
    assert sim.stats.requests_by_key == {ACCOUNT_KEY: 1, app_key("shop"): 2, "": 1}
    sim.reset_stats()
    assert sim.stats.requests == 0
    assert sim.stats.requests_by_key == {}


# -- drain -------------------------------------------------------------------------------------


async def test_drain_follows_the_injected_clock(
    sim: JPushSimulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    sim.add_scope(
        SimScope(
            key="drainer",
            secret="s",
            kind="app",
            balances={"balance": 1000, "voice": None, "industry": 50, "market": 7},
            drain_per_hour={"balance": 100.0, "voice": 10.0, "industry": 40.0},
        )
    )
    assert sim.current_balance("drainer", "balance") == 1000
    clock.advance(1.5 * 3600)
    assert sim.current_balance("drainer", "balance") == 850
    assert sim.current_balance("drainer", "voice") is None  # null stays null
    assert sim.current_balance("drainer", "industry") == 0  # never below zero
    assert sim.current_balance("drainer", "market") == 7  # no drain configured

    status, body, _ = await call(http, sim, APP, auth=basic("drainer", "s"))
    assert status == 200
    assert body == {"app_balance": 850, "app_voice": None, "app_industry": 0, "app_market": 7}


async def test_set_balance_restarts_the_drain(sim: JPushSimulator, clock: ManualClock) -> None:
    sim.add_scope(
        SimScope(
            key="drainer",
            secret="s",
            kind="app",
            balances={"industry": 100},
            drain_per_hour={"industry": 60.0},
        )
    )
    clock.advance(3600)
    assert sim.current_balance("drainer", "industry") == 40
    sim.set_balance("drainer", "industry", 5000)  # a top-up
    assert sim.current_balance("drainer", "industry") == 5000
    clock.advance(1800)
    assert sim.current_balance("drainer", "industry") == 4970
    sim.set_balance("drainer", "industry", None)
    assert sim.current_balance("drainer", "industry") is None


def test_unknown_types_and_keys_are_refused() -> None:
    sim = JPushSimulator()
    with pytest.raises(ValueError, match="unknown quota types"):
        SimScope(key="k", secret="s", kind="app", balances={"sms": 1})
    with pytest.raises(KeyError):
        sim.set_balance("missing", "voice", 1)


# -- rate limit --------------------------------------------------------------------------------


async def test_rate_limit_answers_50009(
    sim: JPushSimulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    sim.rate_limit = 2
    statuses = [(await call(http, sim, DEV, auth=ACCOUNT_AUTH))[0] for _ in range(2)]
    assert statuses == [200, 200]

    status, body, headers = await call(http, sim, APP, auth=SHOP_AUTH)
    assert (status, code_of(body)) == (403, 50009)
    assert headers["Retry-After"] == "1"

    clock.advance(0.5)
    status, _, _ = await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    assert status == 403  # the window still holds two admitted requests

    clock.advance(0.51)
    statuses = [(await call(http, sim, DEV, auth=ACCOUNT_AUTH))[0] for _ in range(3)]
    assert statuses == [200, 200, 403]  # rejected requests did not use up the new window


async def test_client_gets_through_a_rate_limit(sim: JPushSimulator, clock: ManualClock) -> None:
    """The client honours Retry-After; the fake sleep moves the simulator's clock with it."""
    sim.rate_limit = 1

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    fake_time = FakeTime(on_sleep=advance)
    assert sim.base_url is not None
    async with JPushClient(
        sim.base_url,
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
        max_attempts=10,
        retry_budget=100,
    ) as jpush:
        readings = await jpush.fetch_all([account_scope(), app_scope("shop")])
    assert all(r.error is None for r in readings)
    assert fake_time.sleeps
    assert all(delay >= 1 for delay in fake_time.sleeps)


# -- fail_next, latency, down ------------------------------------------------------------------


async def test_fail_next_by_key_and_count(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    sim.fail_next(2, code=50019, key=app_key("shop"))
    assert (await call(http, sim, DEV, auth=ACCOUNT_AUTH))[0] == 200  # other keys unaffected
    for _ in range(2):
        status, body, _ = await call(http, sim, APP, auth=SHOP_AUTH)
        assert (status, code_of(body)) == (500, 50019)
    assert (await call(http, sim, APP, auth=SHOP_AUTH))[0] == 200


async def test_fail_next_any_key_with_raw_body(
    sim: JPushSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fail_next(
        1,
        body="<html>bad gateway</html>",
        status=502,
        content_type="text/html",
        headers={"Retry-After": "3"},
    )
    assert sim.base_url is not None
    async with http.get(sim.base_url + APP, headers={"Authorization": SHOP_AUTH}) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert response.headers["Retry-After"] == "3"
        assert await response.text() == "<html>bad gateway</html>"
    assert (await call(http, sim, DEV, auth=ACCOUNT_AUTH))[0] == 200


async def test_fail_next_code_with_status_override(
    sim: JPushSimulator, http: aiohttp.ClientSession
) -> None:
    sim.fail_next(1, code=50009, status=429)
    status, body, _ = await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    assert (status, code_of(body)) == (429, 50009)


async def test_latency_and_in_flight(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    sim.set_latency(None, 0.1)
    results = await asyncio.gather(*(call(http, sim, DEV, auth=ACCOUNT_AUTH) for _ in range(3)))
    assert [r[0] for r in results] == [200, 200, 200]
    assert sim.stats.max_in_flight == 3
    assert sim.stats.in_flight == 0


async def test_down_resets_connections(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    sim.set_down(True)
    with pytest.raises(aiohttp.ClientError):
        await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    sim.set_down(False)
    assert (await call(http, sim, DEV, auth=ACCOUNT_AUTH))[0] == 200


# -- control API -------------------------------------------------------------------------------


async def control(
    http: aiohttp.ClientSession, sim: JPushSimulator, path: str, payload: Any = None
) -> Any:
    url = f"{sim.base_url}/_sim/{path}"
    if payload is None:
        async with http.get(url) as response:
            assert response.status == 200
            return await response.json()
    async with http.post(url, json=payload) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def rate_limit_of(sim: JPushSimulator) -> float | None:
    return sim.rate_limit


async def test_control_api(sim: JPushSimulator, http: aiohttp.ClientSession) -> None:
    await control(http, sim, "balance", {"key": ACCOUNT_KEY, "type": "voice", "value": 3})
    await control(http, sim, "balance", {"key": ACCOUNT_KEY, "type": "market", "value": None})
    _, body, _ = await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    assert body["dev_voice"] == 3
    assert body["dev_market"] is None

    await control(http, sim, "fail", {"n": 1, "code": 50002, "key": ACCOUNT_KEY})
    status, body, _ = await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    assert (status, code_of(body)) == (401, 50002)

    await control(
        http,
        sim,
        "scopes",
        [
            {
                "key": "new-app",
                "secret": "new-secret",
                "kind": "app",
                "balances": {"balance": 5, "voice": 6, "industry": 7, "market": 8},
            },
        ],
    )
    status, body, _ = await call(http, sim, APP, auth=basic("new-app", "new-secret"))
    assert (status, body["app_industry"]) == (200, 7)

    await control(http, sim, "latency", {"seconds": 0.05})
    await control(http, sim, "latency", {"key": "new-app", "seconds": 0.0})
    assert sim.scopes[0].latency == 0.05
    assert sim.scopes[-1].latency == 0.0

    await control(http, sim, "rate_limit", {"rate": 1})
    assert rate_limit_of(sim) == 1
    await control(http, sim, "rate_limit", {"rate": None})
    assert rate_limit_of(sim) is None

    await control(http, sim, "down", {"down": True})
    with pytest.raises(aiohttp.ClientError):
        await call(http, sim, DEV, auth=ACCOUNT_AUTH)
    stats = await control(http, sim, "stats")  # the control API keeps working while down
    await control(http, sim, "down", {"down": False})
    assert stats["requests_by_key"][ACCOUNT_KEY] >= 3
    assert stats["balances"]["new-app"]["market"] == 8
    assert stats["in_flight"] == 0

    await control(http, sim, "reset_stats", {})
    assert (await control(http, sim, "stats"))["requests"] == 0


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("balance", "[]"),
        ("balance", '{"key": "nope", "type": "voice", "value": 1}'),
        ("balance", f'{{"key": "{ACCOUNT_KEY}", "type": "sms", "value": 1}}'),
        ("scopes", '{"key": "k"}'),
        ("scopes", "[1]"),
        ("fail", "not json"),
        ("fail", '{"n": "many", "code": 50019}'),
        ("fail", '{"n": 1}'),
        ("latency", '{"key": "nope", "seconds": 1}'),
    ],
)
async def test_control_api_refuses_bad_input(
    sim: JPushSimulator, http: aiohttp.ClientSession, path: str, payload: str
) -> None:
    async with http.post(f"{sim.base_url}/_sim/{path}", data=payload) as response:
        assert response.status == 400


# -- the demo preset ---------------------------------------------------------------------------


async def test_demo_env_points_a_bot_at_the_demo_simulator() -> None:
    sim = demo_simulator()
    async with serving(sim) as url:
        env = demo_env(url)
        values: dict[str, Any] = {name.lower(): value for name, value in env.items()}
        settings = Settings(**values)
        scopes = settings.scopes()
        assert [s.name for s in scopes] == ["account", "shop", "crm"]
        async with JPushClient(settings.jpush_base_url) as jpush:
            readings = await jpush.fetch_all(scopes)
    assert all(r.error is None for r in readings)
    account = readings[0].balances
    assert account is not None
    assert account[QuotaType.BALANCE] == 9
    crm = readings[2].balances
    assert crm is not None
    assert crm[QuotaType.VOICE] is None


async def test_demo_balances_drain(clock: ManualClock) -> None:
    sim = demo_simulator(clock=clock)
    before = sim.current_balance("demo-shop-key", "industry")
    assert before is not None
    clock.advance(3600)
    after = sim.current_balance("demo-shop-key", "industry")
    assert after is not None
    assert after < before


async def test_run_simulator_prints_url_and_serves(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_simulator("127.0.0.1", 0))
    printed: list[str] = []

    def line_printed() -> bool:
        printed.append(capsys.readouterr().out)
        return "http://127.0.0.1:" in "".join(printed)

    try:
        await wait_until(line_printed)
        out = "".join(printed)
        assert out.count("\n") == 1
        assert DEMO_DEV_KEY in out
        assert "JPUSH_APPS=" in out
        url = out.split("listening on ")[1].split()[0]
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                url + DEV, headers={"Authorization": basic(DEMO_DEV_KEY, "demo-dev-secret")}
            ) as response,
        ):
            assert response.status == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
