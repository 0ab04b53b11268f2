"""JPushClient against the simulator over real loopback HTTP, with an injected no-op sleep."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from builders import StartSim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_helpers import (
    ACCOUNT_BALANCES,
    ACCOUNT_KEY,
    ACCOUNT_SECRET,
    FakeTime,
    account_scope,
    add_account,
    add_app,
    app_balances,
    app_key,
    app_scope,
    app_secret,
    typed,
)

from bot.errors import (
    JPushConfigError,
    JPushError,
    JPushMalformedResponse,
    JPushNetworkError,
    JPushRateLimited,
    JPushRequestError,
    JPushServerError,
)
from bot.jpush import JPushClient, interpret_response
from bot.quota import QuotaType, ScopeKind, ScopeReading
from bot.retry_after import parse_retry_after
from bot.simulator import JPushSimulator

FIXED_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APPS = ("shop", "crm", "blog")


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = JPushSimulator()
    add_account(simulator)
    for index, name in enumerate(APPS):
        add_app(simulator, name, app_balances(index))
    return await start_sim(simulator)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_client(sim: JPushSimulator, fake_time: FakeTime, **options: Any) -> JPushClient:
    assert sim.base_url is not None
    options.setdefault("timeout", 2.0)
    return JPushClient(
        sim.base_url,
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
        clock=lambda: FIXED_NOW,
        **options,
    )


@pytest.fixture
async def client(sim: JPushSimulator, fake_time: FakeTime) -> AsyncIterator[JPushClient]:
    # A rate limit without Retry-After pauses 30 (fake) seconds: a budget that fits every
    # attempt keeps these tests about the attempts, not the budget.
    async with make_client(sim, fake_time, retry_budget=1000) as jpush:
        yield jpush


def requests_for(sim: JPushSimulator, key: str) -> int:
    return sim.stats.requests_by_key.get(key, 0)


def assert_failed(reading: ScopeReading) -> None:
    assert reading.error is not None
    assert reading.balances is None, "a failed fetch must never carry balances"
    assert not reading.unassigned


# -- success ---------------------------------------------------------------------------------


async def test_reads_account_and_apps(client: JPushClient) -> None:
    scopes = [account_scope(), *(app_scope(name) for name in APPS)]
    readings = await client.fetch_all(scopes)

    assert [r.scope for r in readings] == ["account", *APPS]
    assert readings[0].kind is ScopeKind.ACCOUNT
    assert readings[0].balances == typed(ACCOUNT_BALANCES)
    for index, reading in enumerate(readings[1:]):
        assert reading.kind is ScopeKind.APP
        assert reading.balances == typed(app_balances(index))
        assert reading.error is None
        assert reading.read_at == FIXED_NOW


async def test_null_field_is_an_unassigned_value(sim: JPushSimulator, client: JPushClient) -> None:
    sim.set_balance(app_key("shop"), "voice", None)
    reading = await client.fetch(app_scope("shop"))
    assert reading.error is None
    assert not reading.unassigned
    assert reading.balances is not None
    assert reading.balances[QuotaType.VOICE] is None
    assert reading.balances[QuotaType.BALANCE] == 1


async def test_50033_reads_as_unassigned(sim: JPushSimulator, client: JPushClient) -> None:
    sim.fail_next(1, code=50033, key=app_key("crm"))
    reading = await client.fetch(app_scope("crm"))
    assert reading.unassigned
    assert reading.balances is None
    assert reading.error is None
    assert await client.fetch_balances(app_scope("crm")) is not None  # only that one answer


@pytest.mark.parametrize("suffix", ["", "/", "//"])
async def test_base_url_with_or_without_trailing_slash(
    sim: JPushSimulator, fake_time: FakeTime, suffix: str
) -> None:
    assert sim.base_url is not None
    async with JPushClient(sim.base_url + suffix, sleep=fake_time.sleep) as jpush:
        reading = await jpush.fetch(account_scope())
    assert reading.balances == typed(ACCOUNT_BALANCES)


# -- JPush's error codes and how each is handled ------------------------------------------------

# code, requests made (max_attempts=5), configuration error, exception raised by fetch_balances
ERROR_TABLE = [
    (50001, 1, True, JPushConfigError),
    (50002, 1, True, JPushConfigError),
    (50008, 1, True, JPushConfigError),
    (50016, 1, False, JPushRequestError),
    (50017, 1, False, JPushRequestError),
    (50018, 1, False, JPushRequestError),
    (50009, 5, False, JPushRateLimited),
    (50019, 5, False, JPushServerError),
]


@pytest.mark.parametrize(("code", "requests", "config", "exc_type"), ERROR_TABLE)
async def test_error_codes_are_handled_by_kind(
    sim: JPushSimulator,
    client: JPushClient,
    code: int,
    requests: int,
    config: bool,
    exc_type: type[JPushError],
) -> None:
    key = app_key("shop")
    sim.fail_next(100, code=code, key=key)

    reading = await client.fetch(app_scope("shop"))

    assert_failed(reading)
    assert reading.error is not None
    assert reading.error.code == code
    assert reading.error.config is config
    assert str(code) not in reading.error.message  # the code is its own field
    assert requests_for(sim, key) == requests

    sim.reset_stats()
    with pytest.raises(exc_type) as raised:
        await client.fetch_balances(app_scope("shop"))
    assert raised.value.code == code
    assert requests_for(sim, key) == requests


@pytest.mark.parametrize("code", [50009, 50019])
async def test_two_transient_errors_then_success(
    sim: JPushSimulator, client: JPushClient, fake_time: FakeTime, code: int
) -> None:
    key = app_key("blog")
    sim.fail_next(2, code=code, key=key)

    reading = await client.fetch(app_scope("blog"))

    assert reading.error is None
    assert reading.balances == typed(app_balances(2))
    assert requests_for(sim, key) == 3
    assert len(fake_time.sleeps) == 2


async def test_wrong_secret_is_one_request_and_a_config_error(
    sim: JPushSimulator, client: JPushClient
) -> None:
    reading = await client.fetch(app_scope("shop", secret="not-the-secret"))
    assert_failed(reading)
    assert reading.error is not None
    assert reading.error.code == 50002
    assert reading.error.config
    assert reading.error.message == "auth failed"
    assert reading.error.code == 50002
    assert requests_for(sim, app_key("shop")) == 1


async def test_app_key_on_the_account_endpoint_is_auth_failed(client: JPushClient) -> None:
    scope = account_scope()
    wrong = type(scope)(
        name="account", kind=ScopeKind.ACCOUNT, key=app_key("shop"), secret=app_scope("shop").secret
    )
    reading = await client.fetch(wrong)
    assert reading.error is not None
    assert reading.error.code == 50002


@pytest.mark.parametrize(
    ("status", "exc_type", "retried"),
    [
        (400, JPushRequestError, False),
        (418, JPushRequestError, False),
        (429, JPushRateLimited, True),
        (500, JPushServerError, True),
        (503, JPushServerError, True),
        (599, JPushServerError, True),
    ],
)
async def test_unknown_codes_are_judged_by_status(
    sim: JPushSimulator,
    client: JPushClient,
    status: int,
    exc_type: type[JPushError],
    retried: bool,
) -> None:
    key = app_key("shop")
    sim.fail_next(100, code=59999, status=status, key=key)
    with pytest.raises(exc_type) as raised:
        await client.fetch_balances(app_scope("shop"))
    assert raised.value.code == 59999
    assert requests_for(sim, key) == (5 if retried else 1)

    reading = await client.fetch(app_scope("shop"))
    assert reading.error is not None
    assert reading.error.code == 59999
    assert not reading.error.config


# -- malformed answers -----------------------------------------------------------------------

GOOD = {"app_balance": 1, "app_voice": 22, "app_industry": 44, "app_market": 14}


def body_with(**changes: Any) -> str:
    body: dict[str, Any] = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return json.dumps(body)


HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

# id, raw body, status, content type, words the error must contain, retried
MALFORMED = [
    ("string-number", body_with(app_balance="9"), 200, "json", "app_balance is a string", False),
    ("float", body_with(app_voice=9.5), 200, "json", "app_voice is a float", False),
    ("float-integral", body_with(app_voice=9.0), 200, "json", "app_voice is a float", False),
    ("bool", body_with(app_industry=True), 200, "json", "app_industry is a boolean", False),
    ("negative", body_with(app_market=-3), 200, "json", "app_market is negative", False),
    ("huge", body_with(app_market=2**70), 200, "json", "app_market is out of range", False),
    ("nan", body_with(app_market=float("nan")), 200, "json", "app_market is a float", False),
    ("missing", body_with(app_market=...), 200, "json", "app_market is missing", False),
    ("object", body_with(app_voice={"v": 1}), 200, "json", "app_voice is a JSON object", False),
    ("wrong-prefix", json.dumps(ACCOUNT_BALANCES), 200, "json", "app_balance is missing", False),
    ("html-200", HTML_502, 200, "html", "not JSON", False),
    ("truncated", body_with()[:-9], 200, "json", "not JSON", False),
    ("array", "[1, 22, 44, 14]", 200, "json", "JSON array", False),
    ("number", "42", 200, "json", "a number", False),
    ("empty", "", 200, "json", "empty body", False),
    ("oversized", body_with(pad="x" * 70_000), 200, "json", "larger than 65536", False),
    ("deep-nesting", "[" * 50_000, 200, "json", "not JSON", False),
    ("html-502", HTML_502, 502, "html", "HTTP 502", True),
    ("garbage-500", "\x00\xff oops", 500, "text", "HTTP 500", True),
    ("oversized-503", "x" * 70_000, 503, "text", "HTTP 503", True),
]


@pytest.mark.parametrize(
    ("body", "status", "ctype", "words", "retried"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
async def test_malformed_answer_fails_only_that_scope(
    sim: JPushSimulator,
    client: JPushClient,
    body: str,
    status: int,
    ctype: str,
    words: str,
    retried: bool,
) -> None:
    content_type = {"json": "application/json", "html": "text/html", "text": "text/plain"}[ctype]
    key = app_key("shop")
    sim.fail_next(100, body=body, status=status, key=key, content_type=content_type)

    readings = await client.fetch_all([account_scope(), *(app_scope(name) for name in APPS)])

    by_name = {r.scope: r for r in readings}
    shop = by_name["shop"]
    assert_failed(shop)
    assert shop.error is not None
    assert words in shop.error.message
    assert not shop.error.config
    assert shop.error.code == (status if status >= 300 else None)
    assert requests_for(sim, key) == (5 if retried else 1)
    assert by_name["account"].balances == typed(ACCOUNT_BALANCES)
    assert by_name["crm"].balances == typed(app_balances(1))
    assert by_name["blog"].balances == typed(app_balances(2))


async def test_malformed_raises_the_malformed_error(
    sim: JPushSimulator, client: JPushClient
) -> None:
    sim.fail_next(1, body=body_with(app_voice="702"), key=app_key("shop"))
    with pytest.raises(JPushMalformedResponse, match="app_voice is a string"):
        await client.fetch_balances(app_scope("shop"))


# -- retries: budget, attempts, Retry-After --------------------------------------------------


async def test_retry_budget_stops_retries(sim: JPushSimulator, fake_time: FakeTime) -> None:
    key = app_key("shop")
    sim.fail_next(100, code=50019, key=key, headers={"Retry-After": "4"})
    async with make_client(sim, fake_time, retry_budget=10, max_attempts=20) as jpush:
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.error is not None
    assert reading.error.code == 50019
    # waits of at least 4 s: 4 + 4 fits in 10 s, a third would not
    assert requests_for(sim, key) == 3
    assert len(fake_time.sleeps) == 2
    assert all(delay >= 4 for delay in fake_time.sleeps)


async def test_max_attempts_stops_retries(sim: JPushSimulator, fake_time: FakeTime) -> None:
    key = app_key("shop")
    sim.fail_next(100, code=50009, key=key)
    async with make_client(sim, fake_time, max_attempts=3, retry_budget=1000) as jpush:
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.error is not None
    assert reading.error.code == 50009
    assert requests_for(sim, key) == 3
    assert len(fake_time.sleeps) == 2


async def test_backoff_grows_and_is_jittered(sim: JPushSimulator, fake_time: FakeTime) -> None:
    sim.fail_next(100, code=50019, key=app_key("shop"))
    async with make_client(sim, fake_time, max_attempts=8, retry_budget=1000) as jpush:
        await jpush.fetch(app_scope("shop"))
    assert len(fake_time.sleeps) == 7
    # wait_random_exponential(0.5, max=10): attempt n waits uniform(0, min(10, 0.5 * 2**(n-1)))
    for attempt, delay in enumerate(fake_time.sleeps, start=1):
        assert 0 <= delay <= min(10, 0.5 * 2 ** (attempt - 1))


@pytest.mark.parametrize("code", [50009, 50019])
async def test_retry_after_seconds_is_honoured(
    sim: JPushSimulator, client: JPushClient, fake_time: FakeTime, code: int
) -> None:
    sim.fail_next(1, code=code, key=app_key("shop"), headers={"Retry-After": "7"})
    reading = await client.fetch(app_scope("shop"))
    assert reading.balances == typed(app_balances(0))
    assert len(fake_time.sleeps) == 1
    assert fake_time.sleeps[0] >= 7


async def test_retry_after_http_date_is_honoured(
    sim: JPushSimulator, client: JPushClient, fake_time: FakeTime
) -> None:
    when = format_datetime(FIXED_NOW + timedelta(seconds=12), usegmt=True)
    sim.fail_next(
        1,
        status=429,
        body="slow down",
        key=app_key("shop"),
        content_type="text/plain",
        headers={"Retry-After": when},
    )
    reading = await client.fetch(app_scope("shop"))
    assert reading.error is None
    assert fake_time.sleeps == [pytest.approx(12, abs=0.01)]


async def test_retry_after_beyond_the_budget_gives_up_at_once(
    sim: JPushSimulator, fake_time: FakeTime
) -> None:
    key = app_key("shop")
    sim.fail_next(100, code=50009, key=key, headers={"Retry-After": "3600"})
    async with make_client(sim, fake_time, retry_budget=30) as jpush:
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.error is not None
    assert reading.error.code == 50009
    assert requests_for(sim, key) == 1
    assert fake_time.sleeps == []


async def fetch_all_timed(
    sim: JPushSimulator,
) -> tuple[list[ScopeReading], dict[str, list[float]]]:
    """Every scope read one at a time, and when each credential's requests went out."""
    requested_at: dict[str, list[float]] = {}

    async def on_request_start(
        _: object, __: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        auth = params.headers.get("Authorization", "")
        requested_at.setdefault(auth, []).append(time.monotonic())

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request_start)
    assert sim.base_url is not None
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        jpush = JPushClient(sim.base_url, concurrency=1, session=session)
        readings = await jpush.fetch_all([account_scope(), *(app_scope(n) for n in APPS)])
    return list(readings), requested_at


async def test_a_pause_holds_back_only_the_credential_it_was_asked_for(
    sim: JPushSimulator,
) -> None:
    """After a 50009 with Retry-After, that key waits; the other scopes read at once.

    Real (short) sleeps: the point is when each scope's requests go out.
    """
    sim.fail_next(1, code=50009, key=ACCOUNT_KEY, headers={"Retry-After": "0.5"})
    started = time.monotonic()
    readings, requested_at = await fetch_all_timed(sim)

    assert all(r.error is None for r in readings)
    assert sim.stats.requests == 5  # one refusal, then each scope once
    account_times = [t for times in requested_at.values() if len(times) == 2 for t in times]
    assert len(account_times) == 2
    assert account_times[1] >= account_times[0] + 0.49
    others = [times[0] for times in requested_at.values() if len(times) == 1]
    assert len(others) == 3
    assert all(when < started + 0.45 for when in others), "the other scopes waited"


async def test_rate_limits_on_two_credentials_hold_back_every_credential_briefly(
    sim: JPushSimulator,
) -> None:
    """Two keys refused within a second: the limit is shared, so the scopes not refused yet
    wait out the pause too instead of each being refused in turn."""
    for key in (ACCOUNT_KEY, app_key("shop")):
        sim.fail_next(1, code=50009, key=key, headers={"Retry-After": "0.5"})
    readings, requested_at = await fetch_all_timed(sim)

    assert all(r.error is None for r in readings)
    assert sim.stats.requests == 6  # two refusals, then each scope once
    refused = sorted(times[0] for times in requested_at.values() if len(times) == 2)
    others = [times[0] for times in requested_at.values() if len(times) == 1]
    assert len(refused) == 2
    assert len(others) == 2
    assert all(when >= refused[1] + 0.45 for when in others), "a scope was refused in turn"


async def test_a_pause_beyond_the_budget_fails_that_scope_without_calling_again(
    sim: JPushSimulator, fake_time: FakeTime
) -> None:
    sim.fail_next(1, code=50009, key=ACCOUNT_KEY, headers={"Retry-After": "3600"})
    async with make_client(sim, fake_time, concurrency=1, retry_budget=30) as jpush:
        readings = await jpush.fetch_all([account_scope(), *(app_scope(n) for n in APPS)])
        assert sim.stats.requests == 4
        account = readings[0]
        assert_failed(account)
        assert account.error is not None
        assert account.error.code == 50009
        assert not account.error.config
        assert all(r.error is None for r in readings[1:])
        # A second cycle inside the pause does not call for that key either.
        again = await jpush.fetch(account_scope())
        assert "pause" in str(again.error)
        assert sim.stats.requests == 4
        # The hour asked for is capped at five minutes: then the same client reads again.
        fake_time.now += 300
        reading = await jpush.fetch(account_scope())
    assert reading.balances == typed(ACCOUNT_BALANCES)


# -- network trouble -------------------------------------------------------------------------


async def test_timeouts_are_retried_then_reported(sim: JPushSimulator, fake_time: FakeTime) -> None:
    key = app_key("shop")
    sim.set_latency(key, 2.0)
    async with make_client(sim, fake_time, timeout=0.2, max_attempts=3) as jpush:
        with pytest.raises(JPushNetworkError, match=r"timed out after 0\.2s"):
            await jpush.fetch_balances(app_scope("shop"))
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.error is not None
    assert reading.error.code is None
    assert "timed out" in reading.error.message
    assert requests_for(sim, key) == 6


async def test_timeout_then_success(sim: JPushSimulator) -> None:
    key = app_key("shop")
    sim.set_latency(key, 2.0)

    async def recover(_: float) -> None:
        sim.set_latency(key, 0.0)

    fake_time = FakeTime(on_sleep=recover)
    async with make_client(sim, fake_time, timeout=0.2) as jpush:
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.balances == typed(app_balances(0))
    assert requests_for(sim, key) == 2


async def test_connection_resets_are_retried_then_reported(
    sim: JPushSimulator, fake_time: FakeTime
) -> None:
    sim.set_down(True)
    async with make_client(sim, fake_time, max_attempts=3) as jpush:
        reading = await jpush.fetch(account_scope())
    assert_failed(reading)
    assert reading.error is not None
    assert reading.error.message.startswith("network error")
    assert len(fake_time.sleeps) == 2


async def test_down_then_up(sim: JPushSimulator) -> None:
    sim.set_down(True)

    async def come_back(_: float) -> None:
        sim.set_down(False)

    fake_time = FakeTime(on_sleep=come_back)
    async with make_client(sim, fake_time) as jpush:
        reading = await jpush.fetch(account_scope())
    assert reading.balances == typed(ACCOUNT_BALANCES)


async def test_connection_refused_is_a_network_error(fake_time: FakeTime) -> None:
    simulator = JPushSimulator()
    url = await simulator.start()
    await simulator.stop()  # nothing listens on that port any more
    async with JPushClient(url, sleep=fake_time.sleep, max_attempts=2) as jpush:
        reading = await jpush.fetch(account_scope())
    assert reading.error is not None
    assert "cannot connect" in reading.error.message
    assert len(fake_time.sleeps) == 1


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrency_is_bounded_and_reached(fake_time: FakeTime) -> None:
    simulator = JPushSimulator()
    names = [f"app{i:02d}" for i in range(20)]
    for index, name in enumerate(names):
        add_app(simulator, name, app_balances(index), latency=0.05)
    url = await simulator.start()
    try:
        async with JPushClient(url, concurrency=4, sleep=fake_time.sleep) as jpush:
            readings = await jpush.fetch_all([app_scope(name) for name in names])
    finally:
        await simulator.stop()
    assert [r.balances for r in readings] == [typed(app_balances(i)) for i in range(20)]
    assert simulator.stats.max_in_flight == 4
    assert simulator.stats.requests == 20


async def test_backoff_sleep_does_not_hold_a_slot(sim: JPushSimulator) -> None:
    """With one slot, a scope sleeping before its retry must not block another scope."""
    sim.fail_next(1, code=50019, key=app_key("shop"))
    crm_done: asyncio.Task[ScopeReading] | None = None

    async def sleep_until_crm_is_read(_: float) -> None:
        assert crm_done is not None
        await asyncio.wait_for(asyncio.shield(crm_done), timeout=3)

    fake_time = FakeTime(on_sleep=sleep_until_crm_is_read)
    async with make_client(sim, fake_time, concurrency=1) as jpush:
        shop_task = asyncio.create_task(jpush.fetch(app_scope("shop")))
        await asyncio.sleep(0)  # shop takes the only slot first
        crm_done = asyncio.create_task(jpush.fetch(app_scope("crm")))
        shop, crm = await asyncio.gather(shop_task, crm_done)
    assert crm.balances == typed(app_balances(1))
    assert shop.balances == typed(app_balances(0))


# -- hygiene ---------------------------------------------------------------------------------


async def test_secrets_never_reach_errors_or_logs(
    sim: JPushSimulator, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.fail_next(2, code=50019, key=app_key("crm"))
    sim.fail_next(5, body="<html>", status=502, key=app_key("blog"), content_type="text/html")
    async with make_client(sim, fake_time) as jpush:
        readings = await jpush.fetch_all(
            [
                account_scope(secret="wrong"),
                app_scope("shop", secret="wrong-too"),
                app_scope("crm"),
                app_scope("blog"),
            ]
        )
    text = caplog.text + " ".join(str(r.error) for r in readings)
    assert "crm" in caplog.text  # retries are logged with the scope name
    for secret in ("wrong", "wrong-too", ACCOUNT_SECRET, app_secret("crm"), app_secret("blog")):
        assert secret not in text
    assert "Basic " not in text
    assert "Authorization" not in text


async def test_close_leaves_an_injected_session_open(
    sim: JPushSimulator, fake_time: FakeTime
) -> None:
    assert sim.base_url is not None
    async with aiohttp.ClientSession() as session:
        async with JPushClient(sim.base_url, session=session, sleep=fake_time.sleep) as jpush:
            reading = await jpush.fetch(account_scope())
        assert reading.balances == typed(ACCOUNT_BALANCES)
        assert not session.closed


async def test_reusable_after_close(sim: JPushSimulator, fake_time: FakeTime) -> None:
    jpush = make_client(sim, fake_time)
    await jpush.fetch(account_scope())
    await jpush.close()
    reading = await jpush.fetch(account_scope())
    await jpush.close()
    assert reading.balances == typed(ACCOUNT_BALANCES)


# -- interpret_response (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"error": {"code": 50002, "message": "x"}}', JPushConfigError),
        (200, b'{"error": {"code": 50019}}', JPushServerError),
        (200, b'{"error": {"code": 12345}}', JPushMalformedResponse),
        (403, b'{"error": {"code": true}}', JPushRequestError),
        (302, b"", JPushRequestError),
        (502, None, JPushServerError),
        (401, b'{"error": {"code": 50002, "message": "auth failed"}}', JPushConfigError),
    ],
)
def test_interpret_response_table(status: int, body: bytes | None, expected: type) -> None:
    with pytest.raises(expected):
        interpret_response(status, body, kind=ScopeKind.APP)


def test_interpret_response_accepts_zero_and_null() -> None:
    body = b'{"dev_balance": 0, "dev_voice": null, "dev_industry": 5, "dev_market": 7, "x": 1}'
    assert interpret_response(200, body, kind=ScopeKind.ACCOUNT) == {
        QuotaType.BALANCE: 0,
        QuotaType.VOICE: None,
        QuotaType.INDUSTRY: 5,
        QuotaType.MARKET: 7,
    }


# -- property: whatever the server says, no crash and no invented value ----------------------

FIELD_NAMES = [*GOOD, "error", "code", "message", "dev_balance"]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=5),
    ),
    max_leaves=12,
)
good_values = st.one_of(st.none(), st.integers(0, 2**63 - 1))
# All four fields, each either good or anything at all: mostly one or two bad values among good
# ones, the answer most likely to be half-read.
nearly_valid = st.fixed_dictionaries(
    {name: st.one_of(good_values, json_scalars, json_values) for name in GOOD}
)
# Any subset of the fields (missing ones), plus stray keys.
partial = st.fixed_dictionaries(
    {},
    optional={name: good_values for name in [*GOOD, "dev_balance", "error"]},
)
error_bodies = st.fixed_dictionaries(
    {"error": st.fixed_dictionaries({"code": st.one_of(st.integers(49990, 50040), json_values)})}
)
valid = st.fixed_dictionaries({name: good_values for name in GOOD})
bodies = st.one_of(
    st.builds(json.dumps, st.one_of(nearly_valid, partial, valid, error_bodies, json_values)),
    st.binary(max_size=64),
)
# A success status half the time: that is where a bad value could slip through.
statuses = st.one_of(
    st.just(200),
    st.sampled_from([201, 400, 401, 403, 404, 405, 415, 429, 500, 502, 503]),
)


def valid_value(value: object) -> bool:
    return value is None or (type(value) is int and value >= 0)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies, status=statuses)
async def test_any_answer_never_crashes_or_invents_a_value(
    sim: JPushSimulator, client: JPushClient, body: str | bytes, status: int
) -> None:
    sim.clear_failures()
    sim.fail_next(1, body=body, status=status, key=app_key("shop"))

    reading = await client.fetch(app_scope("shop"))

    assert reading.scope == "shop"
    if reading.error is not None:
        assert reading.balances is None
        return
    if reading.unassigned:
        assert reading.balances is None
        return
    assert reading.balances is not None
    assert all(valid_value(v) for v in reading.balances.values())
    # Either the served body itself, or (after a retried failure) the simulator's real answer.
    served = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            served = {t: parsed.get(f"app_{t.value}") for t in QuotaType}
    except ValueError:
        pass
    assert dict(reading.balances) in (served, typed(app_balances(0)))


# -- hostile Retry-After values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        ("0", 0.0),
        ("-5", 30.0),
        ("soon", 30.0),
        ("", 30.0),
        ("inf", 30.0),
        ("-inf", 30.0),
        ("nan", 30.0),
        ("1e400", 30.0),
        ("Mon, 99 Foo 99999 99:99:99 GMT", 30.0),
        (format_datetime(FIXED_NOW - timedelta(seconds=5), usegmt=True), 0.0),
        (format_datetime(FIXED_NOW + timedelta(seconds=12), usegmt=True), 12.0),
    ],
)
def test_retry_after_values(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, lambda: FIXED_NOW) == (
        None if seconds is None else pytest.approx(seconds, abs=0.01)
    )


@pytest.mark.parametrize("header", ["86400", "inf", "nan", "-1", "garbage", None])
async def test_a_pause_is_capped_by_max_pause(
    sim: JPushSimulator, fake_time: FakeTime, header: str | None
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    sim.fail_next(1, code=50009, key=app_key("shop"), headers=headers)
    async with make_client(sim, fake_time, max_pause=2.0) as jpush:
        reading = await jpush.fetch(app_scope("shop"))
    assert reading.error is None
    assert len(fake_time.sleeps) == 1
    assert fake_time.sleeps[0] == pytest.approx(2.0)
