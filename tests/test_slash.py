"""POST /slack/commands through the real aiohttp server: signatures, limits, replies, refresh."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from botproc import wait_until
from builders import StartSim
from fake_slack import FakeSlack
from pytest_aiohttp import AiohttpClient

from bot.app import build_services
from bot.notify import ConsoleNotifier
from bot.settings import Settings
from bot.simulator import JPushSimulator, SimScope
from bot.slash import REFRESH_REUSE_S
from bot.store.sqlite import SqliteStore
from bot.web import SERVICES, SHUTDOWN_GRACE, create_app

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_764_000_000.0


class FixedClock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = JPushSimulator()
    simulator.add_scope(
        SimScope(
            key="dev",
            secret="dev-secret",
            kind="account",
            balances={"balance": 9, "voice": 702, "industry": 121_981, "market": 11_683},
        )
    )
    simulator.add_scope(
        SimScope(
            key="shop",
            secret="shop-secret",
            kind="app",
            balances={"balance": 1, "voice": 22, "industry": 44, "market": 14},
        )
    )
    return await start_sim(simulator)


def make_settings(sim: JPushSimulator, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "jpush_base_url": sim.base_url,
        "jpush_dev_key": "dev",
        "jpush_dev_secret": "dev-secret",
        "jpush_apps": '[{"name": "shop", "app_key": "shop", "master_secret": "shop-secret"}]',
        "poll_interval": timedelta(seconds=60),
        "slack_signing_secret": SECRET,
        "jpush_timeout": 10,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def client(
    sim: JPushSimulator, clock: FixedClock, aiohttp_client: AiohttpClient
) -> TestClient[Any, Any]:
    app = create_app(
        build_services(
            make_settings(sim),
            store=SqliteStore(":memory:"),
            notifier=ConsoleNotifier(io.StringIO()),
        ),
        signature_clock=clock,
    )
    test_client = await aiohttp_client(app)
    bot = app[SERVICES]
    await wait_until(lambda: bot.worker.last_cycle_at is not None, what="the first poll")
    return test_client


def handled(client: TestClient[Any, Any]) -> float:
    return client.app[SERVICES].metrics.commands.labels("answered")._value.get()  # type: ignore[no-any-return]


def signed(body: bytes, timestamp: str, secret: str = SECRET) -> dict[str, str]:
    # Computed by hand over the raw bytes so that bodies slack-sdk cannot decode can be signed.
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(text: str = "", **extra: str) -> bytes:
    return urlencode({"command": "/sms-balance", "text": text, **extra}).encode()


TS = str(int(NOW))
BODY = form()


def _one_byte_changed() -> tuple[bytes, dict[str, str]]:
    headers = signed(BODY, TS)
    return BODY.replace(b"sms", b"smt", 1), headers


def _without(header: str) -> tuple[bytes, dict[str, str]]:
    headers = signed(BODY, TS)
    del headers[header]
    return BODY, headers


def _with_ts(ts: str) -> tuple[bytes, dict[str, str]]:
    headers = signed(BODY, TS)
    headers["X-Slack-Request-Timestamp"] = ts
    return BODY, headers


def _signed_at(ts: str) -> tuple[bytes, dict[str, str]]:
    return BODY, signed(BODY, ts)


REJECTED: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "wrong secret": lambda: (BODY, signed(BODY, TS, secret="not-the-secret")),
    "one byte changed": _one_byte_changed,
    "no signature": lambda: _without("X-Slack-Signature"),
    "no timestamp": lambda: _without("X-Slack-Request-Timestamp"),
    "no headers": lambda: (BODY, {}),
    "301 s old": lambda: _signed_at(str(int(NOW) - 301)),
    "301 s ahead": lambda: _signed_at(str(int(NOW) + 301)),
    "timestamp abc": lambda: _with_ts("abc"),
    "timestamp 1.5": lambda: _with_ts("1.5"),
    "huge timestamp": lambda: _signed_at("9" * 40),
    "negative timestamp": lambda: _with_ts("-5"),
    "signature not v0": lambda: (BODY, {**signed(BODY, TS), "X-Slack-Signature": "v1=abc"}),
    "invalid utf-8 body": lambda: (b"text=\xff\xfe", signed(b"text=\xff\xfe", TS)),
    "unsigned ssl_check": lambda: (b"ssl_check=1&token=x", {"X-Slack-Request-Timestamp": TS}),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_rejected_requests_get_401_and_run_nothing(
    client: TestClient[Any, Any], case: str
) -> None:
    body, headers = REJECTED[case]()
    before = handled(client)
    response = await client.post("/slack/commands", data=body, headers=headers)
    assert response.status == 401
    assert handled(client) == before


async def test_non_ascii_signature_is_401(client: TestClient[Any, Any]) -> None:
    # Sent as raw bytes: HTTP clients refuse to build such a header themselves.
    reader, writer = await _raw_connection(client)
    request = (
        b"POST /slack/commands HTTP/1.1\r\nHost: x\r\n"
        b"X-Slack-Request-Timestamp: " + TS.encode() + b"\r\n"
        b"X-Slack-Signature: v0=\xc3\xa9\xc3\xa9\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY
    )
    writer.write(request)
    status_line = await reader.readline()
    writer.close()
    assert b" 401 " in status_line


async def _raw_connection(client: TestClient[Any, Any]) -> Any:
    import asyncio

    assert client.port is not None
    return await asyncio.open_connection("127.0.0.1", client.port)


async def test_299_seconds_old_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/slack/commands", data=BODY, headers=signed(BODY, str(int(NOW) - 299))
    )
    assert response.status == 200
    assert (await response.json())["response_type"] == "ephemeral"


async def test_valid_request_answers_every_scope(client: TestClient[Any, Any]) -> None:
    before = handled(client)
    response = await client.post("/slack/commands", data=BODY, headers=signed(BODY, TS))
    assert response.status == 200
    reply = await response.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["blocks"] and reply["text"]
    text = str(reply)
    assert "account" in text and "shop" in text and "121,981" in text
    assert handled(client) == before + 1


async def test_oversized_body_is_413(client: TestClient[Any, Any]) -> None:
    body = form("x" * 100_000)
    response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
    assert response.status == 413


async def test_get_is_405(client: TestClient[Any, Any]) -> None:
    response = await client.get("/slack/commands")
    assert response.status == 405


async def test_signed_ssl_check_is_empty_200(client: TestClient[Any, Any]) -> None:
    body = b"ssl_check=1&token=abc"
    before = handled(client)
    response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
    assert response.status == 200
    assert await response.read() == b""
    assert handled(client) == before


async def test_unknown_word_is_escaped_and_names_scopes(client: TestClient[Any, Any]) -> None:
    body = form("<!channel> & co")
    response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
    reply = await response.json()
    text = str(reply)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text
    assert "shop" in text and "account" in text


async def test_single_scope_and_help(client: TestClient[Any, Any]) -> None:
    body = form("shop")
    reply = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "shop" in str(reply) and "121,981" not in str(reply)
    body = form("help")
    reply = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "refresh" in str(reply)


async def test_replies_in_chinese_with_times_in_tz(
    sim: JPushSimulator, clock: FixedClock, aiohttp_client: AiohttpClient
) -> None:
    settings = make_settings(sim, message_language="zh-CN", tz="Asia/Shanghai")
    app = create_app(
        build_services(
            settings, store=SqliteStore(":memory:"), notifier=ConsoleNotifier(io.StringIO())
        ),
        signature_clock=clock,
    )
    client = await aiohttp_client(app)
    await wait_until(lambda: app[SERVICES].worker.last_cycle_at is not None, what="the first poll")
    for text, words in [
        ("", ["短信余量：严重", "account（账号）", "全类型", "语音", "121,981", "北京时间"]),
        ("shop", ["shop 的短信余量：严重", "行业", "营销", "预警 &lt; 1,000"]),
        ("help", ["用法", "已配置的范围"]),
        ("refresh shop", ["shop 的短信余量"]),
    ]:
        body = form(text)
        response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
        reply = json.dumps(await response.json(), ensure_ascii=False)
        for word in words:
            assert word in reply, (text, word)
        assert "critical" not in reply and "Usage" not in reply


async def test_without_signing_secret_the_route_is_503(
    sim: JPushSimulator, aiohttp_client: AiohttpClient
) -> None:
    app = create_app(
        build_services(
            make_settings(sim, slack_signing_secret=None),
            store=SqliteStore(":memory:"),
            notifier=ConsoleNotifier(io.StringIO()),
        ),
    )
    client = await aiohttp_client(app)
    response = await client.post("/slack/commands", data=BODY, headers=signed(BODY, TS))
    assert response.status == 503


async def test_refresh_with_slow_jpush_answers_fast_then_posts_response_url(
    sim: JPushSimulator, client: TestClient[Any, Any]
) -> None:
    slack = FakeSlack()
    await slack.start()
    try:
        sim.set_balance("shop", "industry", 4242)
        sim.set_latency(None, 6.0)
        body = form("refresh shop", response_url=f"{slack.url}/response/T1/B1/xyz")
        started = time.monotonic()
        response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
        elapsed = time.monotonic() - started
        assert response.status == 200
        assert elapsed < 3.0
        reply = await response.json()
        assert reply["response_type"] == "ephemeral"
        await slack.wait_for(lambda s: len(s.accepted("/response")) == 1, timeout=15)
        posted = slack.accepted("/response")[0].body
        assert posted["response_type"] == "ephemeral"
        assert "4,242" in str(posted)
    finally:
        await slack.stop()


async def test_concurrent_refreshes_share_one_fetch(
    sim: JPushSimulator, client: TestClient[Any, Any]
) -> None:
    import asyncio

    sim.set_latency(None, 0.5)
    sim.reset_stats()
    body = form("refresh shop")
    responses = await asyncio.gather(
        *[client.post("/slack/commands", data=body, headers=signed(body, TS)) for _ in range(5)]
    )
    assert all(r.status == 200 for r in responses)
    assert sim.stats.requests_by_key.get("shop", 0) == 1


async def test_jpush_down_still_answers_from_last_readings(
    sim: JPushSimulator, client: TestClient[Any, Any]
) -> None:
    sim.set_down(True)
    started = time.monotonic()
    response = await client.post("/slack/commands", data=BODY, headers=signed(BODY, TS))
    assert time.monotonic() - started < 3.0
    reply = await response.json()
    text = str(reply)
    assert "121,981" in text
    assert "ago" in text or "just now" in text


async def test_metrics_and_healthz(client: TestClient[Any, Any]) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'sms_balance{scope="account",type="industry"} 121981.0' in text
    assert "sms_polls_total" in text
    assert "sms_alerts_queued_total" in text and "sms_alerts_sent_total" in text
    assert "sms_fetch_errors_total" in text or "sms_fetch_errors" in text
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] in {"ok", "degraded"}


async def test_cached_reply_never_outlives_a_refresh(
    sim: JPushSimulator, client: TestClient[Any, Any]
) -> None:
    body = form("shop")
    first = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "1,111" not in str(first)
    sim.set_balance("shop", "voice", 1111)
    refresh = form("refresh shop")
    fresh = await client.post("/slack/commands", data=refresh, headers=signed(refresh, TS))
    assert "1,111" in str(await fresh.json())
    again = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "1,111" in str(again)


async def test_refresh_shares_one_read_until_its_window_ends(
    sim: JPushSimulator, clock: FixedClock, aiohttp_client: AiohttpClient
) -> None:
    ticks = [1_000.0]  # the monotonic clock, in seconds
    app = create_app(
        build_services(
            make_settings(sim),
            store=SqliteStore(":memory:"),
            notifier=ConsoleNotifier(io.StringIO()),
            monotonic=lambda: ticks[0],
        ),
        signature_clock=clock,
    )
    client = await aiohttp_client(app)
    await wait_until(lambda: app[SERVICES].worker.last_cycle_at is not None, what="a poll")
    before = sim.stats.requests_by_key.get("shop", 0)

    async def reads_after_refresh() -> int:
        body = form("refresh shop")
        response = await client.post("/slack/commands", data=body, headers=signed(body, TS))
        assert response.status == 200
        assert "just now" in str(await response.json())
        return sim.stats.requests_by_key.get("shop", 0) - before

    assert await reads_after_refresh() == 1
    assert await reads_after_refresh() == 1  # a replay shares the read
    ticks[0] += REFRESH_REUSE_S - 0.5
    assert await reads_after_refresh() == 1
    ticks[0] += 1.0
    assert await reads_after_refresh() == 2  # the window is over: JPush is read again


async def test_store_down_help_still_names_scopes_and_show_says_why(
    sim: JPushSimulator, aiohttp_client: AiohttpClient
) -> None:
    from botproc import free_port

    from bot.store.redis import RedisStore

    nothing_listens = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(
        build_services(
            make_settings(sim), store=nothing_listens, notifier=ConsoleNotifier(io.StringIO())
        ),
        signature_clock=FixedClock(NOW),
    )
    client = await aiohttp_client(app)
    body = form("help")
    reply = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "shop" in str(reply) and "account" in str(reply)
    body = form("")
    reply = await (await client.post("/slack/commands", data=body, headers=signed(body, TS))).json()
    assert "unreachable" in str(reply)
    # Stopping does not wait out the shutdown grace for a store that never opened.
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < SHUTDOWN_GRACE / 4
