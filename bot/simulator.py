"""A JPush SMS balance API simulator (an aiohttp app).

Used by the tests, by `sms-balance-bot demo` and, via `sms-balance-bot simulate --port N`, by
anyone who wants to stage the bot without a JPush account. It speaks the documented API:

    GET /v1/accounts/dev   Basic devKey:apiDevSecret   -> {"dev_balance": .., "dev_voice": .., ..}
    GET /v1/accounts/app   Basic appKey:masterSecret   -> {"app_balance": .., "app_voice": .., ..}

with the documented failures, `{"error": {"code": N, "message": "..."}}`:

    400/50001 missing or garbled Authorization     401/50002 wrong key, secret or endpoint
    403/50008 SMS not enabled (SimScope.sms_disabled)
    403/50009 rate limited (JPushSimulator(rate_limit=R): more than R admitted requests in the
              last second, all keys together; rejected requests do not use up the window and
              carry a `Retry-After` header)
    404/50016 unknown path under /v1               405/50018 method other than GET
    415/50017 a body that is not application/json  500/50019 (only through fail_next)
    403/50033 app quota not assigned (SimScope.not_assigned)

Balances drain linearly with the injected monotonic clock: value(t) = max(0, start -
floor(per_hour * hours since start)); a `null` stays null; set_balance restarts the drain.

Control API (JSON in, JSON out), for scripting an out-of-process bot. It is not affected by
`down`, fail_next or the rate limit:

    POST /_sim/balance     {"key": K, "type": "industry", "value": 500 | null}
    POST /_sim/fail        {"n": 2, "code"?: 50019, "status"?: 502, "body"?: "<html>..",
                            "key"?: K, "content_type"?: "text/html", "headers"?: {..}}
    POST /_sim/latency     {"key"?: K, "seconds": 0.5}          (no key: every scope)
    POST /_sim/down        {"down": true}                       (connections get reset)
    POST /_sim/rate_limit  {"rate": 20 | null}
    POST /_sim/scopes      a SimScope as an object, or a list of them:
                           {"key", "secret", "kind": "account"|"app", "balances": {..},
                            "drain_per_hour"?, "latency"?, "not_assigned"?, "sms_disabled"?,
                            "name"?}
    POST /_sim/callback    {"key": K, "url": "http://.../jpush/callback" | null,
                            "retry_delays"?: [180, 3600, 43200]}
                           (delivery reports for that app, see bot/sim_callbacks.py)
    POST /_sim/send        {"key": K, "type"?: "industry", "n"?: 1} -> {"statuses": [4001, ..]}
                           (n simulated sends, each spending one unit or failing with 4005)
    GET  /_sim/stats       {"requests", "requests_by_key", "in_flight", "max_in_flight",
                            "balances": {key: {type: value}}, "callbacks": {..}}
    POST /_sim/reset_stats
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import math
import shlex
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.delivery_reports import QUOTA_EXHAUSTED
from bot.sim_callbacks import (
    MAX_REPORTS_PER_TICK,
    TICK,
    CallbackPoster,
    send_outcomes,
    sign_report,
)

QUOTA_FIELDS: tuple[str, ...] = ("balance", "voice", "industry", "market")

# JPush's documented error codes: code -> (HTTP status, message) as its API answers them.
ERRORS: dict[int, tuple[int, str]] = {
    50001: (400, "missing auth"),
    50002: (401, "auth failed"),
    50008: (403, "sms service not enabled"),
    50009: (403, "out of frequency"),
    50016: (404, "api not found"),
    50017: (415, "media type not supported"),
    50018: (405, "method not supported"),
    50019: (500, "server error"),
    50033: (403, "app quota not assigned"),
}

_ENDPOINTS: dict[str, Literal["account", "app"]] = {
    "/v1/accounts/dev": "account",
    "/v1/accounts/app": "app",
}
_PREFIX: dict[str, str] = {"account": "dev", "app": "app"}


@dataclass
class SimScope:
    key: str
    secret: str
    kind: Literal["account", "app"]
    balances: dict[str, int | None]
    drain_per_hour: dict[str, float] = field(default_factory=dict)
    latency: float = 0.0
    not_assigned: bool = False  # answers 403/50033
    sms_disabled: bool = False  # answers 403/50008
    name: str | None = None  # the app name a bot should use (demo env); defaults to the key

    def __post_init__(self) -> None:
        if self.kind not in ("account", "app"):
            raise ValueError("kind must be 'account' or 'app'")
        unknown = (set(self.balances) | set(self.drain_per_hour)) - set(QUOTA_FIELDS)
        if unknown:
            raise ValueError(f"unknown quota types: {sorted(unknown)}")
        for quota_type in QUOTA_FIELDS:
            self.balances.setdefault(quota_type, None)


@dataclass
class SimStats:
    requests: int = 0
    requests_by_key: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass
class _Failure:
    remaining: int
    key: str | None
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


@dataclass
class _Drain:
    start_value: int | None
    started_at: float


class JPushSimulator:
    def __init__(
        self,
        *,
        rate_limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate_limit = rate_limit
        self._clock = clock
        self.callbacks = CallbackPoster(wall_clock=wall_clock)
        self._callback_urls: dict[str, str] = {}
        # Units drained past zero already reported as 4005, per (key, type).
        self._reported_past_zero: dict[tuple[str, str], int] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._scopes: dict[str, SimScope] = {}
        self._drains: dict[str, dict[str, _Drain]] = {}
        self._failures: list[_Failure] = []
        self._admitted: collections.deque[float] = collections.deque()
        self._default_latency = 0.0
        self._down = False
        self.stats = SimStats()
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # -- configuration -------------------------------------------------------------------

    def add_scope(self, scope: SimScope) -> None:
        self._scopes[scope.key] = scope
        now = self._clock()
        self._drains[scope.key] = {t: _Drain(scope.balances.get(t), now) for t in QUOTA_FIELDS}

    @property
    def scopes(self) -> list[SimScope]:
        return list(self._scopes.values())

    def set_balance(self, key: str, quota_type: str, value: int | None) -> None:
        scope = self._scope(key)
        _check_type(quota_type)
        scope.balances[quota_type] = value
        self._drains[key][quota_type] = _Drain(value, self._clock())
        self._reported_past_zero.pop((key, quota_type), None)

    def set_callback(
        self, key: str, url: str | None, *, retry_delays: Sequence[float] | None = None
    ) -> None:
        """Post the app's delivery reports to `url` (None: stop reporting)."""
        if self._scope(key).kind != "app":
            raise ValueError("delivery reports are configured per app")
        if url is None:
            self._callback_urls.pop(key, None)
        else:
            self._callback_urls[key] = url
        if retry_delays is not None:
            self.callbacks.retry_delays = tuple(float(d) for d in retry_delays)

    def send(self, key: str, quota_type: str = "industry", n: int = 1) -> list[int]:
        """`n` simulated sends: each spends one unit (4001) or fails for lack of quota (4005);
        each is reported to the app's callback address, if one is set."""
        scope = self._scope(key)
        _check_type(quota_type)
        statuses, spent = send_outcomes(self.current_balance(key, quota_type), n)
        drain = self._drains[key][quota_type]
        if spent and drain.start_value is not None:
            drain.start_value -= spent
            scope.balances[quota_type] = drain.start_value
        for status in statuses:
            self._report(key, status)
        return statuses

    def _report(self, key: str, status: int) -> None:
        url = self._callback_urls.get(key)
        if url is None:
            return
        scope = self._scopes[key]
        self.callbacks.post(
            url, sign_report(scope.key, scope.secret, status, now_ms=self.callbacks.now_ms())
        )

    def report_drain(self) -> int:
        """Report 4005 for every unit drained past zero since the last call; returns how many."""
        reported = 0
        for key in self._callback_urls:
            scope = self._scopes[key]
            for quota_type, rate in scope.drain_per_hour.items():
                drain = self._drains[key][quota_type]
                if drain.start_value is None or rate <= 0:
                    continue
                hours = (self._clock() - drain.started_at) / 3600.0
                past_zero = max(0, math.floor(rate * hours) - drain.start_value)
                new = past_zero - self._reported_past_zero.get((key, quota_type), 0)
                if new <= 0:
                    continue
                self._reported_past_zero[(key, quota_type)] = past_zero
                posted = min(new, MAX_REPORTS_PER_TICK)
                self.callbacks.stats.dropped += new - posted
                for _ in range(posted):
                    self._report(key, QUOTA_EXHAUSTED)
                reported += posted
        return reported

    async def _tick_reports(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.report_drain()

    def set_latency(self, key: str | None, seconds: float) -> None:
        if key is None:
            self._default_latency = seconds
            for scope in self._scopes.values():
                scope.latency = seconds
        else:
            self._scope(key).latency = seconds

    def set_down(self, down: bool) -> None:
        self._down = down

    def fail_next(
        self,
        n: int,
        *,
        code: int | None = None,
        status: int | None = None,
        body: str | bytes | None = None,
        key: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next `n` requests (for `key`, or any key) get this failure instead of an answer.

        `code` answers JPush's HTTP status for that code (or `status`) with a JPush error
        body; `body` answers those raw bytes with `status` (default 200).
        """
        if n <= 0:
            return
        if body is not None:
            raw = body.encode() if isinstance(body, str) else body
            final_status = status if status is not None else 200
        elif code is not None:
            default_status, message = ERRORS.get(code, (500, "error"))
            final_status = status if status is not None else default_status
            raw = _error_json(code, message)
        elif status is not None:
            final_status, raw = status, b""
        else:
            raise ValueError("fail_next needs a code, a status or a body")
        self._failures.append(
            _Failure(n, key, final_status, raw, content_type, dict(headers or {}))
        )

    def clear_failures(self) -> None:
        self._failures.clear()

    def current_balance(self, key: str, quota_type: str) -> int | None:
        self._scope(key)
        _check_type(quota_type)
        drain = self._drains[key][quota_type]
        if drain.start_value is None:
            return None
        rate = self._scopes[key].drain_per_hour.get(quota_type, 0.0)
        hours = (self._clock() - drain.started_at) / 3600.0
        # Whole messages are spent: nothing is gone until a full unit has drained.
        return max(0, drain.start_value - math.floor(rate * hours))

    def reset_stats(self) -> None:
        in_flight = self.stats.in_flight
        self.stats = SimStats(in_flight=in_flight, max_in_flight=in_flight)

    # Read-only shortcuts for the most used counters.
    @property
    def requests(self) -> int:
        return self.stats.requests

    @property
    def max_in_flight(self) -> int:
        return self.stats.max_in_flight

    def _scope(self, key: str) -> SimScope:
        try:
            return self._scopes[key]
        except KeyError:
            raise KeyError(f"no simulated scope with key {key!r}") from None

    # -- serving ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[_control_errors])
        app.router.add_route("*", "/v1/{tail:.*}", self._handle_api)
        app.router.add_post("/_sim/balance", self._ctl_balance)
        app.router.add_post("/_sim/fail", self._ctl_fail)
        app.router.add_post("/_sim/latency", self._ctl_latency)
        app.router.add_post("/_sim/down", self._ctl_down)
        app.router.add_post("/_sim/rate_limit", self._ctl_rate_limit)
        app.router.add_post("/_sim/scopes", self._ctl_scopes)
        app.router.add_get("/_sim/stats", self._ctl_stats)
        app.router.add_post("/_sim/reset_stats", self._ctl_reset_stats)
        app.router.add_post("/_sim/callback", self._ctl_callback)
        app.router.add_post("/_sim/send", self._ctl_send)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # handler_cancellation: a client that gave up (timeout) frees its in_flight slot, and
        # stop() does not wait for simulated latency to run out.
        runner = web.AppRunner(
            self.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._ticker = asyncio.create_task(self._tick_reports(), name="sim-reports")
        bound_port = runner.addresses[0][1]
        url_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        if ":" in url_host:
            url_host = "[::1]" if url_host == "::" else f"[{url_host}]"
        self.base_url = f"http://{url_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._ticker is not None:
            ticker, self._ticker = self._ticker, None
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self.callbacks.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        key = _auth_key(request.headers.get("Authorization"))
        stats = self.stats
        stats.requests += 1
        stats.requests_by_key[key or ""] = stats.requests_by_key.get(key or "", 0) + 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._answer(request, key)
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request, key: str | None) -> web.StreamResponse:
        if self._down:
            _reset_connection(request)
            raise asyncio.CancelledError  # nothing more to say on a dead connection
        scope = self._scopes.get(key) if key is not None else None
        latency = scope.latency if scope is not None else self._default_latency
        if latency > 0:
            await asyncio.sleep(latency)
        failure = self._take_failure(key)
        if failure is not None:
            return web.Response(
                status=failure.status,
                body=failure.body,
                headers={"Content-Type": failure.content_type, **failure.headers},
            )
        retry_after = self._admit()
        if retry_after is not None:
            return _error(50009, headers={"Retry-After": str(retry_after)})
        return await self._route(request, key)

    async def _route(self, request: web.Request, key: str | None) -> web.Response:
        endpoint = _ENDPOINTS.get(request.path.rstrip("/"))
        if endpoint is None:
            return _error(50016)
        if request.method != "GET":
            return _error(50018)
        if request.body_exists:
            content_type = request.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                return _error(50017)
        header = request.headers.get("Authorization")
        if key is None or not header:
            return _error(50001)
        scope = self._scopes.get(key)
        if scope is None or scope.kind != endpoint or _auth_secret(header) != scope.secret:
            return _error(50002)
        if scope.sms_disabled:
            return _error(50008)
        if scope.not_assigned:
            return _error(50033)
        prefix = _PREFIX[scope.kind]
        return web.json_response(
            {f"{prefix}_{t}": self.current_balance(key, t) for t in QUOTA_FIELDS}
        )

    def _take_failure(self, key: str | None) -> _Failure | None:
        for failure in self._failures:
            if failure.key is None or failure.key == key:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _admit(self) -> int | None:
        """Record an admitted request, or return the Retry-After seconds if over the limit."""
        if self.rate_limit is None:
            return None
        now = self._clock()
        window = self._admitted
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.rate_limit:
            wait = window[0] + 1.0 - now if window else 1.0
            return max(1, math.ceil(wait))
        window.append(now)
        return None

    # -- control API ---------------------------------------------------------------------

    async def _ctl_balance(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        self.set_balance(str(data["key"]), str(data["type"]), data.get("value"))
        return web.json_response({"ok": True})

    async def _ctl_fail(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        self.fail_next(
            int(data.get("n", 1)),
            code=data.get("code"),
            status=data.get("status"),
            body=data.get("body"),
            key=data.get("key"),
            content_type=data.get("content_type", "application/json"),
            headers=data.get("headers"),
        )
        return web.json_response({"ok": True})

    async def _ctl_latency(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        self.set_latency(data.get("key"), float(data["seconds"]))
        return web.json_response({"ok": True})

    async def _ctl_down(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        self.set_down(bool(data.get("down", True)))
        return web.json_response({"ok": True})

    async def _ctl_rate_limit(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        rate = data.get("rate")
        self.rate_limit = None if rate is None else float(rate)
        self._admitted.clear()
        return web.json_response({"ok": True})

    async def _ctl_scopes(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        items = data if isinstance(data, list) else [data]
        try:
            scopes = [SimScope(**item) for item in items]
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad scope: {exc}") from None
        for scope in scopes:
            self.add_scope(scope)
        return web.json_response({"ok": True, "added": len(scopes)})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        stats = self.stats
        return web.json_response(
            {
                "requests": stats.requests,
                "requests_by_key": stats.requests_by_key,
                "in_flight": stats.in_flight,
                "max_in_flight": stats.max_in_flight,
                "balances": {
                    key: {t: self.current_balance(key, t) for t in QUOTA_FIELDS}
                    for key in self._scopes
                },
                "callbacks": self.callbacks.stats.to_json(),
            }
        )

    async def _ctl_callback(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        url = data.get("url")
        delays = data.get("retry_delays")
        self.set_callback(
            str(data["key"]),
            None if url is None else str(url),
            retry_delays=None if delays is None else [float(d) for d in delays],
        )
        return web.json_response({"ok": True})

    async def _ctl_send(self, request: web.Request) -> web.Response:
        data = await _json_object(request)
        n = int(data.get("n", 1))
        if not 0 <= n <= 10_000:
            raise ValueError("n must be between 0 and 10000")
        statuses = self.send(str(data["key"]), str(data.get("type", "industry")), n)
        return web.json_response({"ok": True, "statuses": statuses})

    async def _ctl_reset_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})


@web.middleware
async def _control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bad control request (unknown key or type, wrong field) is the caller's error: 400."""
    try:
        return await handler(request)
    except (KeyError, ValueError, TypeError) as exc:
        if not request.path.startswith("/_sim/"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise web.HTTPBadRequest(text=f"bad control request: {message}") from None


def _check_type(quota_type: str) -> None:
    if quota_type not in QUOTA_FIELDS:
        raise ValueError(f"unknown quota type {quota_type!r}")


def _decode_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    if not sep or not key:
        return None
    return key, secret


def _auth_key(header: str | None) -> str | None:
    decoded = _decode_basic(header)
    return decoded[0] if decoded else None


def _auth_secret(header: str) -> str | None:
    decoded = _decode_basic(header)
    return decoded[1] if decoded else None


def _error_json(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _error(code: int, *, headers: Mapping[str, str] | None = None) -> web.Response:
    status, message = ERRORS[code]
    return web.Response(
        status=status,
        body=_error_json(code, message),
        content_type="application/json",
        headers=headers,
    )


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST, as a crashed proxy or a network failure would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout turns close() into an RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be a JSON object") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


# -- the demo preset -------------------------------------------------------------------------

DEMO_DEV_KEY = "demo-dev-key"
DEMO_DEV_SECRET = "demo-dev-secret"  # a simulator credential, safe to print
DEMO_APPS: tuple[tuple[str, str, str], ...] = (
    ("shop", "demo-shop-key", "demo-shop-secret"),
    ("crm", "demo-crm-key", "demo-crm-secret"),
)


def demo_simulator(
    *, clock: Callable[[], float] = time.monotonic, speed: float = 1.0
) -> JPushSimulator:
    """A simulator with one account and two apps, some quotas draining.

    With the default thresholds (warning 1000, critical 100) the account starts with a
    critical `balance`, `shop` crosses the industry warning within minutes, and `crm` has
    an unassigned voice quota. `speed` multiplies every drain rate (a faster demo).
    """
    sim = JPushSimulator(clock=clock)
    sim.add_scope(
        SimScope(
            key=DEMO_DEV_KEY,
            secret=DEMO_DEV_SECRET,
            kind="account",
            name="account",
            balances={"balance": 9, "voice": 702, "industry": 121981, "market": 11683},
            drain_per_hour={"industry": 1200.0 * speed, "market": 90.0 * speed},
        )
    )
    shop_key, shop_secret = DEMO_APPS[0][1], DEMO_APPS[0][2]
    sim.add_scope(
        SimScope(
            key=shop_key,
            secret=shop_secret,
            kind="app",
            name="shop",
            balances={"balance": 5200, "voice": 1500, "industry": 1150, "market": 4300},
            drain_per_hour={"industry": 600.0 * speed, "market": 240.0 * speed},
        )
    )
    crm_key, crm_secret = DEMO_APPS[1][1], DEMO_APPS[1][2]
    sim.add_scope(
        SimScope(
            key=crm_key,
            secret=crm_secret,
            kind="app",
            name="crm",
            balances={"balance": 2400, "voice": None, "industry": 18000, "market": 640},
            drain_per_hour={"industry": 150.0 * speed},
        )
    )
    return sim


def simulator_env(sim: JPushSimulator, base_url: str) -> dict[str, str]:
    """Environment variables that point a bot at `sim` (its first account and every app)."""
    env = {"JPUSH_BASE_URL": base_url}
    apps = []
    for scope in sim.scopes:
        if scope.kind == "account" and "JPUSH_DEV_KEY" not in env:
            env["JPUSH_DEV_KEY"] = scope.key
            env["JPUSH_DEV_SECRET"] = scope.secret
        elif scope.kind == "app":
            apps.append(
                {
                    "name": scope.name or scope.key.lower(),
                    "app_key": scope.key,
                    "master_secret": scope.secret,
                }
            )
    if apps:
        env["JPUSH_APPS"] = json.dumps(apps, separators=(",", ":"))
    return env


def demo_env(base_url: str) -> dict[str, str]:
    """The environment that points a bot at a `demo_simulator()` served at `base_url`."""
    return simulator_env(demo_simulator(), base_url)


async def run_simulator(host: str, port: int, simulator: JPushSimulator | None = None) -> None:
    """Serve a simulator (the demo preset by default) until cancelled."""
    sim = simulator if simulator is not None else demo_simulator()
    url = await sim.start(host, port)
    try:
        env = simulator_env(sim, url)
        settings = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        print(
            f"JPush simulator listening on {url} (control API under {url}/_sim/); "
            f"point the bot at it with: {settings}",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await sim.stop()
