"""Hypothesis fuzzing of the two doors the outside world can push on.

(a) POST /slack/commands through the real aiohttp server: random bodies, forms, Slack markup,
    headers, signed and not. Never a 5xx; the server stays up; nothing unsigned or forged
    reaches the handler; every valid signed request gets an ephemeral reply with blocks and
    text; no user text comes back as a live `<!channel>` (or any other Slack control sequence).
(b) Random JPush answers (status, body, content type, Retry-After) served by the simulator
    through a whole Monitor cycle: the cycle never raises, a reading holds only ints >= 0 or
    None, every number in it was really served, and a failed read never fires or escalates.
(c) POST /jpush/callback (JPush delivery reports): random forms, data, types and bytes, signed
    with the app's credentials or forged. Never a 5xx; nothing unsigned, forged or stale is
    counted or remembered; a signed report is counted once, or refused with 400 when its data
    is bad.

FUZZ_EXAMPLES (default 200) sets the examples per property; FUZZ_LONG=1 runs 5000 each and
prints how many ran. The examples run inside one event loop the test owns (hypothesis drives
a synchronous function; each example is one `run_until_complete`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sim_helpers import FakeTime
from slack_sdk.signature import Clock

from bot.alerts import Policy
from bot.alerts_types import EventKind
from bot.app import build_services
from bot.delivery_reports import STATUS_NAMES
from bot.errors import ConfigError
from bot.jpush import JPushClient
from bot.monitor import Monitor
from bot.notify import ConsoleNotifier
from bot.quota import QUOTA_TYPES, Scope, ScopeKind, Threshold
from bot.retry_after import bounded_pause, parse_retry_after
from bot.settings import Settings, load_settings
from bot.simulator import JPushSimulator, SimScope
from bot.slack_signature import MAX_BODY
from bot.store.sqlite import SqliteStore
from bot.web import SERVICES, create_app

LONG = os.environ.get("FUZZ_LONG") == "1"
VERBOSE = LONG or os.environ.get("FUZZ_VERBOSE") == "1"
EXAMPLES = 5000 if LONG else int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECRET = "fuzz-signing-secret-0123456789abcdef"
NOW = 1_764_000_000
TS = str(NOW)
T = TypeVar("T")


class FixedClock(Clock):
    def now(self) -> float:
        return float(NOW)


def sign(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


# --- one event loop for the whole module ----------------------------------------------------


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    sim: JPushSimulator
    client: TestClient[Any, Any]

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def answered(self) -> float:
        value: float = self.client.app[SERVICES].metrics.commands.labels("answered")._value.get()
        return value


async def _start() -> tuple[JPushSimulator, TestClient[Any, Any]]:
    sim = JPushSimulator()
    sim.add_scope(
        SimScope(
            key="dev",
            secret="dev-secret",
            kind="account",
            balances={"balance": 9, "voice": 702, "industry": 121_981, "market": 11_683},
        )
    )
    sim.add_scope(
        SimScope(
            key="shop",
            secret="shop-secret",
            kind="app",
            balances={"balance": 1, "voice": None, "industry": 44, "market": 14},
        )
    )
    await sim.start()
    app_settings = Settings(
        _env_file=None,
        jpush_base_url=sim.base_url,
        jpush_dev_key="dev",
        jpush_dev_secret="dev-secret",
        jpush_apps='[{"name": "shop", "app_key": "shop", "master_secret": "shop-secret"}]',
        poll_interval=timedelta(seconds=60),
        slack_signing_secret=SECRET,
    )
    app = create_app(
        build_services(
            app_settings, store=SqliteStore(":memory:"), notifier=ConsoleNotifier(io.StringIO())
        ),
        signature_clock=FixedClock(),
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    bot = app[SERVICES]
    for _ in range(200):
        if bot.worker.last_cycle_at is not None:
            break
        await asyncio.sleep(0.02)
    assert bot.worker.last_cycle_at is not None, "the first poll did not finish"
    return sim, client


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    sim, client = loop.run_until_complete(_start())
    try:
        yield Harness(loop, sim, client)
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(sim.stop())
        loop.close()


# --- (a) /slack/commands --------------------------------------------------------------------

MARKUP = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!subteam^S123|@team>",
    "<@U123>",
    "<#C123|general>",
    "<http://evil.example|click>",
    "&amp;",
    "&lt;!channel&gt;",
    "&",
    "<",
    ">",
    ":smile:",
    "🙂",
    "👨‍👩‍👧",
    "مرحبا",
    "שלום",
    "\u202e",
    "\u200f",
    "\u200b",
    "*bold*",
    "`code`",
    "\n",
    "\t",
    "%",
    "+",
    "=",
    "refresh",
    "all",
    "help",
    "shop",
    "account",
    "x" * 3000,
]
slack_text = st.one_of(
    st.sampled_from(["", "all", "help", "refresh", "refresh shop", "shop", " ACCOUNT ", "nope"]),
    st.lists(st.one_of(st.sampled_from(MARKUP), st.text(max_size=30)), max_size=8).map(" ".join),
    st.text(max_size=300),
)
form_key = st.one_of(
    st.sampled_from(["text", "command", "response_url", "user_id", "ssl_check", "token"]),
    st.text(max_size=15),
)
form_dict = st.dictionaries(
    form_key, st.one_of(slack_text, st.sampled_from(["1", "0"])), max_size=8
)
bodies = st.one_of(
    form_dict.map(lambda d: urlencode(d).encode()),
    st.builds(lambda t: urlencode({"command": "/sms-balance", "text": t}).encode(), slack_text),
    st.binary(max_size=500),
    st.just(b"ssl_check=1&token=x"),
    st.just(urlencode({"text": "y" * (MAX_BODY + 10)}).encode()),
)
SIGNED_KINDS = ("valid",) * 8
FORGED_KINDS = (
    "none",
    "no timestamp",
    "no signature",
    "wrong secret",
    "stale",
    "future",
    "other body",
    "random timestamp",
    "random signature",
    "uppercase hex",
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain; charset=utf-8",
            "multipart/form-data; boundary=zzz",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def headers_for(kind: str, body: bytes, random_value: str) -> dict[str, str]:
    ts = TS
    signature = sign(body, ts)
    if kind == "wrong secret":
        signature = sign(body, ts, secret="not-the-secret")
    elif kind == "stale":
        ts = str(NOW - 301)
        signature = sign(body, ts)
    elif kind == "future":
        ts = str(NOW + 301)
        signature = sign(body, ts)
    elif kind == "other body":
        signature = sign(body + b"&x=1", ts)
    elif kind == "random timestamp":
        ts = random_value
    elif kind == "random signature":
        signature = random_value
    elif kind == "uppercase hex":
        signature = "v0=" + signature[3:].upper()
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
    if kind in ("none", "no timestamp"):
        del headers["X-Slack-Request-Timestamp"]
    if kind in ("none", "no signature"):
        del headers["X-Slack-Signature"]
    return headers


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


LIVE_MARKUP = ("<!", "<@", "<#", "<http")


async def post(harness: Harness, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    response = await harness.client.post(
        "/slack/commands", data=body, headers=headers, timeout=ClientTimeout(total=10)
    )
    async with response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


async def still_up(harness: Harness) -> None:
    body = urlencode({"command": "/sms-balance", "text": "help"}).encode()
    headers = {"X-Slack-Request-Timestamp": TS, "X-Slack-Signature": sign(body, TS)}
    status, raw, _ = await post(harness, body, headers)
    assert status == 200, raw[:300]


ran = {"slash": 0, "raw": 0, "jpush": 0, "interactions": 0, "callback": 0}
# What the examples covered, printed in long mode so a property that never reaches its
# interesting branch shows up as a figure, not as a silent pass.
outcomes: Counter[str] = Counter()


def tally(what: str) -> None:
    outcomes[what] += 1


@FUZZ
@given(
    body=bodies,
    kind=st.sampled_from(SIGNED_KINDS + FORGED_KINDS),
    random_value=header_text,
    content_type=content_types,
)
def _slash_property(
    harness: Harness, body: bytes, kind: str, random_value: str, content_type: str
) -> None:
    ran["slash"] += 1
    headers = headers_for(kind, body, random_value)
    headers["Content-Type"] = content_type
    before = harness.answered
    status, raw, _ = harness.run(post(harness, body, headers))
    tally(f"{'signed' if kind == 'valid' else 'forged'} -> {status}")
    assert status < 500, (status, raw[:300])
    if len(body) > MAX_BODY:
        assert status == 413
        assert harness.answered == before
        return
    if kind != "valid":
        # A random value can happen to be the right one only by breaking HMAC-SHA256.
        assert status == 401, (kind, status, raw[:200])
        assert harness.answered == before, "an unsigned or forged request reached the handler"
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        assert status == 401  # not a body Slack could have signed
        assert harness.answered == before
        return
    form = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    if form.get("ssl_check") == "1":
        assert (status, raw) == (200, b"")
        assert harness.answered == before
        return
    assert status == 200, raw[:300]
    reply = json.loads(raw)
    assert reply["response_type"] == "ephemeral"
    assert isinstance(reply["blocks"], list) and reply["blocks"], reply
    assert isinstance(reply["text"], str) and reply["text"], reply
    for string in strings_in(reply):
        for markup in LIVE_MARKUP:
            assert markup not in string, f"live Slack markup {markup!r} in the reply: {string!r}"
    assert harness.answered == before + 1
    harness.run(still_up(harness))


def print_outcomes() -> None:
    for what, n in sorted(outcomes.items()):
        print(f"  {n:6d}  {what}")
    outcomes.clear()


def test_slash_commands_never_5xx_and_never_unsigned(harness: Harness) -> None:
    _slash_property(harness)
    harness.run(still_up(harness))
    if VERBOSE:
        print(f"\nFUZZ slash: {ran['slash']} examples")
        print_outcomes()


# --- (a') /slack/interactions ----------------------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(MARKUP),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
presses = st.builds(
    lambda action, scope, user, option: {
        "type": "block_actions",
        "user": {"id": user},
        "actions": [
            {
                "action_id": action,
                "block_id": f"incident:{scope}",
                "selected_option": {"value": option},
            }
        ],
    },
    st.sampled_from(["ack", "unack", "snooze", "unsnooze", "other"]),
    st.sampled_from(["shop", "account", "nope", "<!channel>", ""]),
    st.sampled_from(["U0ONCALL", "W123", "<!here>", "", "u1"]),
    st.sampled_from(["1h", "24h", "7d", "2h", ""]),
)
interaction_bodies = st.one_of(
    presses.map(lambda p: urlencode({"payload": json.dumps(p)}).encode()),
    json_value.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
    st.text(max_size=200).map(lambda t: urlencode({"payload": t}).encode()),
    form_dict.map(lambda d: urlencode(d).encode()),
    st.binary(max_size=300),
    st.just(urlencode({"payload": "y" * (MAX_BODY + 10)}).encode()),
)


def handled(harness: Harness) -> int:
    count: int = harness.client.app[SERVICES].actions.handled
    return count


async def post_interaction(
    harness: Harness, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    response = await harness.client.post(
        "/slack/interactions", data=body, headers=headers, timeout=ClientTimeout(total=10)
    )
    async with response:
        return response.status, await response.read()


@FUZZ
@given(
    body=interaction_bodies,
    kind=st.sampled_from(SIGNED_KINDS + FORGED_KINDS),
    random_value=header_text,
    content_type=content_types,
)
def _interactions_property(
    harness: Harness, body: bytes, kind: str, random_value: str, content_type: str
) -> None:
    ran["interactions"] += 1
    headers = headers_for(kind, body, random_value)
    headers["Content-Type"] = content_type
    before = handled(harness)
    status, raw = harness.run(post_interaction(harness, body, headers))
    tally(f"interaction {'signed' if kind == 'valid' else 'forged'} -> {status}")
    assert status < 500, (status, raw[:300])
    if len(body) > MAX_BODY:
        assert status == 413 and handled(harness) == before
        return
    if kind != "valid":
        assert status == 401, (kind, status, raw[:200])
        assert handled(harness) == before, "an unsigned or forged request reached the handler"
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        assert status == 401 and handled(harness) == before
        return
    values = parse_qs(text).get("payload", [])
    try:
        payload = json.loads(values[0]) if len(values) == 1 else None
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        assert status == 400, (status, raw[:200])
        assert handled(harness) == before, "a malformed payload reached the handler"
        return
    assert status == 200 and handled(harness) == before + 1
    harness.run(still_up(harness))


def test_interactions_never_5xx_and_never_unsigned(harness: Harness) -> None:
    _interactions_property(harness)
    harness.run(still_up(harness))
    if VERBOSE:
        print(f"\nFUZZ interactions: {ran['interactions']} examples")
        print_outcomes()


header_bytes = st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)


async def raw_request(harness: Harness, timestamp: bytes, signature: bytes, extra: bytes) -> bytes:
    assert harness.client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.client.port)
    body = b"command=%2Fsms-balance&text="
    request = (
        b"POST /slack/commands HTTP/1.1\r\nHost: x\r\n"
        b"X-Slack-Request-Timestamp: " + timestamp + b"\r\n"
        b"X-Slack-Signature: " + signature + b"\r\n"
        b"X-Fuzz: " + extra + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()


@FUZZ
@given(timestamp=header_bytes, signature=header_bytes, extra=header_bytes)
def _raw_header_property(
    harness: Harness, timestamp: bytes, signature: bytes, extra: bytes
) -> None:
    ran["raw"] += 1
    before = harness.answered
    status_line = harness.run(raw_request(harness, timestamp, signature, extra))
    if not status_line:  # the parser may also just close a connection it cannot read
        tally("raw -> closed")
    else:
        status = int(status_line.split()[1])
        tally(f"raw -> {status}")
        assert status in (400, 401), status_line
    assert harness.answered == before


def test_raw_header_bytes_never_5xx(harness: Harness) -> None:
    _raw_header_property(harness)
    harness.run(still_up(harness))
    if VERBOSE:
        print(f"\nFUZZ raw headers: {ran['raw']} examples")
        print_outcomes()


# --- (b) JPush answers through a Monitor cycle ----------------------------------------------

PREFIX = {ScopeKind.ACCOUNT: "dev", ScopeKind.APP: "app"}
THRESHOLDS = {t: Threshold(1000, 100) for t in QUOTA_TYPES}
SCOPES = [
    Scope("account", ScopeKind.ACCOUNT, "dev", SecretStr("dev-secret"), THRESHOLDS),
    Scope("shop", ScopeKind.APP, "shop", SecretStr("shop-secret"), THRESHOLDS),
]
POLICY = Policy(repeat_interval=timedelta(hours=1), failures_before_alert=1, forecast_horizon=None)
TRUE = {  # what the simulator serves when not told otherwise
    "account": {"balance": 9, "voice": 702, "industry": 121_981, "market": 11_683},
    "shop": {"balance": 1, "voice": None, "industry": 44, "market": 14},
}

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=2000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["12", "-1", "1e3", "0x10", ""]),
)
json_value = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def balance_object(draw: st.DrawFn) -> dict[str, Any]:
    prefix = draw(st.sampled_from(["dev", "app"]))
    out: dict[str, Any] = {}
    for quota_type in QUOTA_TYPES:
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        out[f"{prefix}_{quota_type.value}"] = draw(leaf)
    out.update(draw(st.dictionaries(st.text(max_size=6), json_value, max_size=2)))
    return out


@st.composite
def valid_balance_object(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed, for either endpoint: a number in it may legitimately be read."""
    prefix = draw(st.sampled_from(["dev", "app"]))
    values = st.one_of(st.none(), st.integers(0, 2000), st.integers(0, 2**63 - 1))
    return {f"{prefix}_{t.value}": draw(values) for t in QUOTA_TYPES}


error_object = st.builds(
    lambda code, message: {"error": {"code": code, "message": message}},
    st.one_of(
        st.sampled_from([50001, 50002, 50008, 50009, 50016, 50017, 50018, 50019, 50033]),
        st.integers(-5, 99999),
        leaf,
    ),
    st.one_of(st.text(max_size=40), leaf),
)
jpush_body = st.one_of(
    valid_balance_object().map(lambda o: json.dumps(o).encode()),
    balance_object().map(lambda o: json.dumps(o).encode()),
    error_object.map(lambda o: json.dumps(o).encode()),
    json_value.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            b"null",
            b"[]",
            b"{",
            b'{"dev_balance": 1e400}',
            b'{"app_balance": NaN, "app_voice": 1, "app_industry": 1, "app_market": 1}',
            b"\xef\xbb\xbf{}",
            b"[" * 5000 + b"]" * 5000,
            b'{"dev_balance": 1}' + b" " * 70_000,
        ]
    ),
)
statuses = st.one_of(
    st.sampled_from([200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 405, 415, 429, 500]),
    st.integers(min_value=200, max_value=599),
)
retry_after = st.one_of(
    st.none(),
    st.sampled_from(["1", "0", "-1", "1e9", "nan", "inf", "99999999999999999999", "soon"]),
    st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
    header_text,
)


@dataclass(frozen=True)
class Served:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None
    key: str | None


served = st.builds(
    Served,
    statuses,
    jpush_body,
    st.sampled_from(["application/json", "text/html", "text/plain", "application/json; x=1"]),
    retry_after,
    st.sampled_from([None, "dev", "shop"]),
)


def numbers_served(answers: list[Served], kind: ScopeKind) -> list[dict[str, Any]]:
    """Every balance object an answer carried, in the field names of `kind`."""
    found = []
    for answer in answers:
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            prefix = PREFIX[kind]
            found.append({t.value: data.get(f"{prefix}_{t.value}") for t in QUOTA_TYPES})
    return found


class TickingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def one_jpush_example(sim: JPushSimulator, answers: list[Served]) -> None:
    assert sim.base_url is not None
    fake = FakeTime()
    clock = TickingClock()
    client = JPushClient(
        sim.base_url,
        timeout=5,
        concurrency=2,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
        clock=clock,
    )
    store = SqliteStore(":memory:", clock=clock)
    await store.open()
    monitor = Monitor(SCOPES, POLICY, client, store, clock=clock)
    try:
        # A clean cycle first, so warnings and criticals are open when the garbage comes.
        first = await monitor.cycle()
        assert all(r.error is None for r in first.readings)
        for answer in answers:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
            sim.fail_next(
                1,
                status=answer.status,
                body=answer.body,
                key=answer.key,
                content_type=answer.content_type,
                headers=headers,
            )
        result = await monitor.cycle()  # must not raise, whatever came back
    finally:
        sim.clear_failures()
        await client.close()
        await store.close()
    readings = {r.scope: r for r in result.readings}
    assert set(readings) == {"account", "shop"}
    for r in result.readings:
        outcome = "error" if r.error else ("unassigned" if r.unassigned else "read")
        tally(f"{r.scope}: {outcome}")
    tally(f"events: {sorted({e.kind.value for e in result.events})}")
    for scope in SCOPES:
        reading = readings[scope.name]
        if reading.error is not None or reading.unassigned:
            assert reading.balances is None, reading
            continue
        assert reading.balances is not None
        assert set(reading.balances) == set(QUOTA_TYPES)
        for value in reading.balances.values():
            assert value is None or (type(value) is int and value >= 0), reading
        got = {t.value: v for t, v in reading.balances.items()}
        assert got == TRUE[scope.name] or got in numbers_served(answers, scope.kind), (
            f"{scope.name} read {got}, which nobody served"
        )
    for event in result.events:
        if event.kind not in (EventKind.FIRED, EventKind.ESCALATED):
            continue
        reading = readings[event.scope]
        assert reading.error is None and reading.balances is not None, (
            f"{event.kind} from a failed read: {event} / {reading}"
        )
        assert event.quota_type is not None
        assert reading.balances[event.quota_type] == event.value


@FUZZ
@given(answers=st.lists(served, min_size=1, max_size=8))
def _jpush_property(harness: Harness, answers: list[Served]) -> None:
    ran["jpush"] += 1
    harness.run(one_jpush_example(harness.sim, answers))


def test_random_jpush_answers_never_break_a_cycle(harness: Harness) -> None:
    _jpush_property(harness)
    if VERBOSE:
        print(f"\nFUZZ jpush: {ran['jpush']} examples")
        print_outcomes()


# --- (c) /jpush/callback --------------------------------------------------------------------

CALLBACK_KINDS = ("valid",) * 16 + (
    "unsigned",
    "wrong secret",
    "other app key",
    "random signature",
    "uppercase hex",
    "stale",
    "future",
    "other nonce",
)
good_report = st.fixed_dictionaries(
    {
        "msgId": st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
        "status": st.sampled_from([*sorted(STATUS_NAMES), 4011, 0]),
        "receiveTime": st.integers(min_value=0, max_value=2 * 10**12),
        "phone": st.text(max_size=20),
    }
).map(json.dumps)
report_data = st.one_of(
    good_report,
    good_report,
    st.fixed_dictionaries(
        {
            "msgId": st.one_of(st.text(max_size=20), st.integers(), st.none()),
            "status": st.one_of(
                st.sampled_from([4001, 4002, 4005, 4006, 4100, 4010, "4005"]),
                st.integers(),
                st.text(max_size=6),
                st.none(),
            ),
            "receiveTime": st.one_of(st.integers(), st.text(max_size=25), st.none()),
            "phone": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        }
    ).map(json.dumps),
    st.text(max_size=200),
    st.sampled_from(["", "null", "[]", "{}", "{not json", '"x"', "1e999"]),
)
report_type = st.one_of(
    st.just("SMS_REPORT"),
    st.just("SMS_REPORT"),
    st.sampled_from(["SMS_REPORT", "SMS_REPLY", "SMS_OTHER", "", "sms_report"]),
    st.text(max_size=12),
)
nonces = iter(range(10**9, 2 * 10**9))


def callback_form(kind: str, data: str, kind_of: str, noise: str) -> tuple[bytes, bool]:
    """A callback body, and whether JPush (holding the shop's credentials) could have sent it."""
    nonce = str(next(nonces))
    now_ms = int(time.time() * 1000)
    ts = {"stale": now_ms - 25 * 3600 * 1000, "future": now_ms + 3600 * 1000}.get(kind, now_ms)
    key = "other" if kind == "other app key" else "shop"
    secret = "not-the-secret" if kind == "wrong secret" else "shop-secret"
    signed_nonce = nonce + "1" if kind == "other nonce" else nonce
    text = f"appKey={key}&appMasterSecret={secret}&nonce={signed_nonce}&timestamp={ts}"
    signature = hashlib.sha1(text.encode()).hexdigest()
    if kind == "random signature":
        signature = noise
    elif kind == "uppercase hex":
        signature = signature.upper()
    fields = {"nonce": nonce, "timestamp": str(ts), "type": kind_of, "data": data}
    if kind != "unsigned":
        fields["signature"] = signature
    return urlencode(fields).encode(), kind == "valid"


def reports_counted(harness: Harness) -> float:
    metrics = harness.client.app[SERVICES].metrics
    return sum(
        sample.value
        for family in metrics.delivery_reports.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def reports_remembered(harness: Harness) -> int:
    store = harness.client.app[SERVICES].store
    assert isinstance(store, SqliteStore)
    conn = store.sqlite._conn
    assert conn is not None
    with store.sqlite._lock:
        (count,) = conn.execute("SELECT COUNT(*) FROM seen_reports").fetchone()
    return int(count)


async def post_callback(harness: Harness, body: bytes) -> tuple[int, bytes]:
    response = await harness.client.post(
        "/jpush/callback",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=ClientTimeout(total=10),
    )
    async with response:
        return response.status, await response.read()


@FUZZ
@given(
    kind=st.sampled_from(CALLBACK_KINDS),
    data=report_data,
    kind_of=report_type,
    noise=st.text(max_size=45),
    # Mostly forms; now and then bytes that are no form at all.
    raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=300)),
)
def _callback_property(
    harness: Harness, kind: str, data: str, kind_of: str, noise: str, raw: bytes | None
) -> None:
    ran["callback"] += 1
    body, signed = callback_form(kind, data, kind_of, noise)
    if raw is not None:
        body, signed = raw, False  # random bytes: no signature JPush could have made
    counted, remembered = reports_counted(harness), reports_remembered(harness)
    status, answer = harness.run(post_callback(harness, body))
    tally(f"callback {'signed' if signed else 'forged'} -> {status}")
    assert status < 500, (status, answer[:200])
    if not signed:
        assert status in (400, 401, 413), (kind, status, answer[:200])
        assert reports_counted(harness) == counted, "an unsigned report was counted"
        assert reports_remembered(harness) == remembered, "an unsigned report was stored"
        return
    assert status in (200, 400), (status, answer[:200])
    if status == 200:
        assert reports_counted(harness) == counted + 1
        assert reports_remembered(harness) == remembered + 1
        # JPush's retry of the same report: answered, not counted again.
        assert harness.run(post_callback(harness, body))[0] == 200
        assert reports_counted(harness) == counted + 1
    else:
        assert reports_counted(harness) == counted
        assert reports_remembered(harness) == remembered


def test_jpush_callbacks_never_5xx_and_never_unsigned(harness: Harness) -> None:
    _callback_property(harness)
    harness.run(still_up(harness))
    if VERBOSE:
        print(f"\nFUZZ callback: {ran['callback']} examples")
        print_outcomes()


# --- (c) settings: random strings for every variable ----------------------------------------

# Hostile values worth trying on any variable, beside random text.
SETTING_VALUES = [
    "inf",
    "-inf",
    "nan",
    "-1",
    "0",
    "1e309",
    "9" * 40,
    "1000000d",
    "2d",
    "0.000001",
    "redis://:pw-fuzz-secret@[::1/0",
    "redis://:pw-fuzz-secret@127.0.0.1:6379/0?bogus=1",
    "http://user:pw-fuzz-secret@127.0.0.1:9/",
    "http://[::1/",
    "https://hooks.slack.com/services/T0/B0/fuzz-secret-path",
    "sqlite:///",
    "memory://",
    "256.1.1.1",
    "[]",
    "{}",
    "true",
    " ",
    "%s%s%n",
    "\u202e",
]
setting_text = st.one_of(
    st.sampled_from(SETTING_VALUES),
    st.text(max_size=40),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)


def setting_names() -> list[str]:
    """Every variable the bot reads: its settings fields, as environment names."""
    return sorted(name.upper() for name in Settings.model_fields)


def base_env() -> dict[str, str]:
    return {
        "JPUSH_DEV_KEY": "fuzz-dev-key",
        "JPUSH_DEV_SECRET": "fuzz-dev-secret",
        "JPUSH_APPS": '[{"name": "shop", "app_key": "k", "master_secret": "fuzz-app-secret"}]',
        "STATE_URL": "memory://",
    }


_HINT_WORDS = "expected sqlite:///PATH (sqlite:////PATH if absolute) redis:// rediss:// https://"


def check_config_line(message: str, variable: str, value: str) -> None:
    assert "\n" not in message, message
    named = message.split(":", 1)[0]
    assert re.fullmatch(r"[A-Z][A-Z0-9_/]*", named), message
    # The value itself never comes back (short values may be ordinary words in the reason,
    # and "sqlite:///" is the usage hint's own wording).
    if len(value.strip()) >= 6 and value not in _HINT_WORDS:
        assert value not in message, (variable, message)


def use_settings(settings: Settings) -> None:
    """What the bot does with its settings at start-up and in every cycle, short of I/O."""
    import aiohttp as http_client
    from yarl import URL

    from bot.app import build_services
    from bot.notify import ConsoleNotifier as Console
    from bot.store.factory import store_from_settings

    now = datetime.now(UTC)
    settings.require_scopes()
    store = store_from_settings(settings)
    services = build_services(settings, store=store, notifier=Console(io.StringIO()))
    assert services.worker.lease_ttl > timedelta(0)
    _ = now - settings.history_retention, now + settings.poll_interval * 3
    policy = settings.policy()
    if policy.forecast_horizon is not None:
        _ = now + policy.forecast_horizon * (1 + policy.resolve_margin_pct / 100)
    if policy.repeat_interval is not None:
        _ = now - policy.repeat_interval
    http_client.ClientTimeout(total=settings.jpush_timeout)
    URL(settings.jpush_base_url.rstrip("/") + "/v1/accounts/dev")
    URL(settings.slack_api_url)
    settings.secret_values()


@FUZZ
@given(variable=st.sampled_from(setting_names()), value=setting_text)
def test_random_settings_give_one_line_or_a_working_configuration(
    variable: str, value: str
) -> None:
    env = base_env()
    env[variable] = value
    try:
        loaded = load_settings(None, **{k.lower(): v for k, v in env.items()})
    except ConfigError as exc:
        tally(f"settings: refused {str(exc).split(':', 1)[0]}")
        check_config_line(str(exc), variable, value)
        return
    try:
        use_settings(loaded)
    except ConfigError as exc:
        # The store URL's directory or similar, found when the store is made: still one line.
        tally(f"settings: refused at start {str(exc).split(':', 1)[0]}")
        check_config_line(str(exc), variable, value)
        return
    tally("settings: accepted")


@settings(max_examples=max(8, EXAMPLES // 25), deadline=None)
@given(variable=st.sampled_from(setting_names()), value=setting_text)
def test_random_settings_through_serve(variable: str, value: str) -> None:
    """Through the console script: one line naming a variable and exit 2, or a bot that
    runs (and stops cleanly); never a traceback, never a secret value in the output."""
    asyncio.run(_serve_with(variable, value))


async def _serve_with(variable: str, value: str) -> None:
    import tempfile
    from pathlib import Path

    from botproc import BotProcess, free_port

    # The OS cannot carry these in an environment variable.
    value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **base_env(),
            "JPUSH_BASE_URL": "http://127.0.0.1:9/",
            "STATE_URL": f"sqlite:///{tmp}/state.db",
            "POLL_INTERVAL": "0.5",
            "PORT": str(free_port()),
            "HOST": "127.0.0.1",
        }
        bot = BotProcess(["serve"], env, Path(tmp), name="fuzz")
        bot.env[variable] = value  # after: BotProcess itself reads PORT as a number
        await bot.start()
        assert bot.proc is not None
        try:
            code: int | None = await asyncio.wait_for(bot.proc.wait(), timeout=6)
        except TimeoutError:
            code = None
        if code is None:
            code = await bot.terminate()
            assert code == 0, bot.stderr()[-2000:]
            tally(f"serve: ran with {variable}")
        else:
            assert code == 2, (variable, code, bot.stderr()[-2000:])
            line = bot.stderr().strip().splitlines()[-1]
            assert line.startswith("sms-balance-bot: configuration error: "), line
            check_config_line(line.split("configuration error: ", 1)[1], variable, value)
            tally(f"serve: refused {variable}")
        err = bot.stderr()
        assert "Traceback" not in err, err[-3000:]
        for secret in ("fuzz-dev-secret", "fuzz-app-secret", "pw-fuzz-secret", "fuzz-secret-path"):
            assert secret not in err, (variable, secret)


# --- (d) Retry-After from both upstreams -------------------------------------------------------

retry_after_text = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "-1", "1e400", "86400", "0", "", " ", "1.5", "soon"]),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    header_text,
)


@FUZZ
@given(value=retry_after_text)
def test_retry_after_values_are_bounded(value: str) -> None:
    seconds = parse_retry_after(value, lambda: datetime.now(UTC))
    assert seconds is not None and math.isfinite(seconds) and seconds >= 0
    assert 0 <= bounded_pause(seconds, 300) <= 300


@FUZZ
@given(value=retry_after_text, code=st.sampled_from([50009, 50019]))
def test_jpush_retry_after_never_breaks_a_read(harness: Harness, value: str, code: int) -> None:
    harness.run(_jpush_retry_after(harness.sim, value, code))


async def _jpush_retry_after(sim: JPushSimulator, value: str, code: int) -> None:
    assert sim.base_url is not None
    fake = FakeTime()
    client = JPushClient(
        sim.base_url,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
        max_pause=120,
        retry_budget=1000,
        max_attempts=3,
    )
    sim.fail_next(2, code=code, key="shop", headers={"Retry-After": value})
    try:
        reading = await client.fetch(SCOPES[1])
    finally:
        sim.clear_failures()
        await client.close()
    assert reading.error is None, reading.error
    for pause in fake.sleeps:
        assert math.isfinite(pause) and 0 <= pause <= 120, fake.sleeps
    tally(f"jpush retry-after: slept {sorted({round(p) for p in fake.sleeps})}"[:60])


@FUZZ
@given(value=retry_after_text)
def test_slack_retry_after_is_bounded(harness: Harness, value: str) -> None:
    harness.run(_slack_retry_after(value))


async def _slack_retry_after(value: str) -> None:
    from fake_slack import Answer, FakeSlack

    from bot.errors import DeliveryRetryable
    from bot.notify import MAX_SLACK_PAUSE, SlackWebNotifier
    from bot.render.alert import SlackMessage

    slack = FakeSlack()
    await slack.start()
    try:
        slack.answer_next(Answer(status=429, retry_after=value))
        notifier = SlackWebNotifier("xoxb-fuzz", "C0FUZZ", base_url=slack.url + "/api/")
        with pytest.raises(DeliveryRetryable) as raised:
            await notifier.send(SlackMessage(text="x", blocks=[]), "x")
    finally:
        await slack.stop()
    pause = raised.value.retry_after
    assert pause is not None and math.isfinite(pause) and 0 <= pause <= MAX_SLACK_PAUSE
    timedelta(seconds=pause)  # what the deliverer does with it
