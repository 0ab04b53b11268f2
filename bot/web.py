"""The aiohttp application: slash command, health, metrics, and the background loops it owns.

Handlers are thin: verify, parse, call the pure `commands` module, send the reply back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.commands import Command, parse_command
from bot.delivery import DEFAULT_BACKOFF_CAP, Deliverer
from bot.errors import StoreError
from bot.forecast import min_span_for
from bot.jpush import JPushClient
from bot.metrics import CONTENT_TYPE, Metrics
from bot.monitor import Monitor, Runner, load_views
from bot.notify import Notifier
from bot.quota import Scope, ScopeReading
from bot.render.slash import render_refresh_pending, render_reply
from bot.settings import Settings
from bot.snapshot import ScopeView
from bot.store.base import StateStore

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# Slack gives up after 3 s; leave room for the network on both sides.
REFRESH_DEADLINE = 2.0
STORE_DEADLINE = 1.5
SHUTDOWN_GRACE = 12.0
# A "show" reply is reused for this long (and until the next poll cycle): its "read 3 minutes
# ago" may lag by a second, and a burst of commands costs one store read and render, not one each.
REPLY_TTL = 1.0
_FORM_FIELDS = frozenset({"text", "ssl_check", "response_url"})
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CachedReply:
    cycle: datetime | None  # the runner's last cycle when it was rendered
    expires: float  # time.monotonic()
    task: asyncio.Task[tuple[bytes, bool]]  # (JSON body, cacheable)


@dataclass
class Bot:
    """Everything the handlers share; one per application."""

    settings: Settings
    scopes: list[Scope]
    store: StateStore
    client: JPushClient
    notifier: Notifier
    clock: Callable[[], datetime]
    metrics: Metrics
    runner: Runner
    verifier: SignatureVerifier | None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    refreshing: dict[str, asyncio.Task[ScopeReading]] = field(default_factory=dict)
    replies: dict[str | None, CachedReply] = field(default_factory=dict)

    @property
    def scope_names(self) -> list[str]:
        return [s.name for s in self.scopes]

    def deliverer_status(self) -> dict[str, Any]:
        status = self.runner.deliverer.status
        state = "refused" if status.refused else ("failing" if status.problem else "ok")
        return {"status": state, "error": status.problem, "queued": status.queued}

    def spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


BOT: web.AppKey[Bot] = web.AppKey("bot", Bot)


def create_app(
    settings: Settings,
    *,
    store: StateStore,
    notifier: Notifier,
    clock: Callable[[], datetime] = utcnow,
    signature_clock: Clock | None = None,
    client: JPushClient | None = None,
) -> web.Application:
    scopes = settings.require_scopes()
    metrics = Metrics()
    jpush = client or JPushClient(
        settings.jpush_base_url,
        timeout=settings.jpush_timeout,
        concurrency=settings.jpush_concurrency,
        clock=clock,
    )
    holder = f"{uuid.uuid4().hex[:12]}"
    deliverer = Deliverer(
        store,
        notifier,
        holder=holder,
        clock=clock,
        metrics=metrics,
        backoff_cap=min(settings.poll_interval, DEFAULT_BACKOFF_CAP),
    )
    monitor = Monitor(
        scopes,
        settings.policy(),
        jpush,
        store,
        clock=clock,
        metrics=metrics,
        forecast_min_span=min_span_for(settings.poll_interval),
    )
    runner = Runner(
        monitor,
        deliverer,
        store,
        poll_interval=settings.poll_interval,
        holder=holder,
        clock=clock,
        metrics=metrics,
    )
    verifier = None
    if settings.slack_signing_secret is not None:
        verifier = SignatureVerifier(
            settings.slack_signing_secret.get_secret_value(), clock=signature_clock or Clock()
        )
    bot = Bot(
        settings=settings,
        scopes=scopes,
        store=store,
        client=jpush,
        notifier=notifier,
        clock=clock,
        metrics=metrics,
        runner=runner,
        verifier=verifier,
    )
    app = web.Application(client_max_size=MAX_BODY)
    app[BOT] = bot
    app.router.add_post("/slack/commands", slack_commands)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/", index)
    app.cleanup_ctx.append(_background_loops)
    return app


async def _background_loops(app: web.Application) -> AsyncIterator[None]:
    bot = app[BOT]
    # Started in the background so the port binds at once, whatever JPush, Slack or the
    # state store are doing.
    poll = asyncio.create_task(bot.runner.poll_forever(), name="poll-loop")
    deliver = asyncio.create_task(bot.runner.deliver_forever(), name="delivery-loop")
    yield
    bot.runner.stop()
    if bot.runner.monitor.fetching:
        # Still waiting on JPush: nothing written yet, nothing to lose by stopping now.
        poll.cancel()
    # Let an in-flight commit or delivery finish (each is atomic either way), then give up.
    _, pending = await asyncio.wait({poll, deliver}, timeout=SHUTDOWN_GRACE)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if bot.background:
        await asyncio.wait(bot.background, timeout=3)
        for task in bot.background:
            task.cancel()
    for refresh in bot.refreshing.values():
        refresh.cancel()
    await bot.client.close()
    await bot.notifier.close()
    with contextlib.suppress(StoreError):
        await bot.store.close()


async def index(request: web.Request) -> web.Response:
    return web.json_response({"name": "sms-balance-bot", "routes": ["/healthz", "/metrics"]})


# /healthz ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    bot = request.app[BOT]
    runner = bot.runner
    now = bot.clock()
    interval = bot.settings.poll_interval
    store_error = runner.store_problem
    if store_error is None:
        try:
            await asyncio.wait_for(bot.store.ping(), timeout=STORE_DEADLINE)
        except (StoreError, TimeoutError) as exc:
            store_error = str(exc) or "state store did not answer in time"
    last = await runner.last_completed_cycle() if store_error is None else runner.last_cycle_at
    reference = last or runner.started_at
    age = (now - reference).total_seconds()
    stale = age > 3 * interval.total_seconds()
    delivery = bot.deliverer_status()
    body: dict[str, Any] = {
        "status": "ok",
        "last_cycle_at": last.isoformat() if last else None,
        "seconds_since_cycle": round(age, 1) if last else None,
        "poll_interval_s": interval.total_seconds(),
        "poller": runner.is_poller,
        "scopes": len(bot.scopes),
        "store": {"ok": store_error is None, "error": store_error},
        "delivery": delivery,
    }
    status = 200
    if store_error is not None:
        body["status"] = "store_unavailable"
        status = 503
    elif stale:
        body["status"] = "stale"
        status = 503
    elif delivery["status"] != "ok":
        # Polling is alive, so the process should not be restarted; say what is wrong.
        body["status"] = "degraded"
    return web.json_response(body, status=status)


# /metrics ------------------------------------------------------------------------------------


async def metrics_handler(request: web.Request) -> web.Response:
    bot = request.app[BOT]
    now = bot.clock()
    try:
        views = await asyncio.wait_for(load_views(bot.store, bot.scopes, now), STORE_DEADLINE)
        bot.metrics.observe_views(views, now)
    except (StoreError, TimeoutError):
        log.warning("metrics: state store unavailable; serving the last known gauges")
    return web.Response(body=bot.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


# /slack/commands -----------------------------------------------------------------------------


def _unauthorized(reason: str) -> web.Response:
    # Why it was refused goes to the log (clock skew is the usual culprit), never the secret.
    log.warning("slash command rejected: %s", reason)
    return web.json_response({"error": "invalid signature"}, status=401)


def verify_signature(
    verifier: SignatureVerifier, body: bytes, timestamp: str | None, signature: str | None
) -> tuple[str, None] | tuple[None, str]:
    """(the decoded body, None) when the request is authentic, else (None, why not).

    The reason is for the log (clock skew is the usual culprit), never holds the secret.
    """
    if not timestamp or not signature:
        return None, "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    if not _TIMESTAMP.match(timestamp):
        return None, "malformed X-Slack-Request-Timestamp"
    if not _SIGNATURE.match(signature):
        return None, "malformed X-Slack-Signature"
    skew = verifier.clock.now() - int(timestamp)
    if abs(skew) > 300:
        return None, f"stale timestamp ({skew:+.0f} s off; check the server clock if this repeats)"
    try:
        # slack-sdk decodes the body itself and would raise on invalid UTF-8.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not valid UTF-8"
    # The window was checked above; slack-sdk computes the v0 HMAC.
    expected = verifier.generate_signature(timestamp=timestamp, body=text)
    if expected is None or not hmac.compare_digest(expected, signature):
        return None, "signature mismatch (wrong SLACK_SIGNING_SECRET or altered body)"
    return text, None


async def slack_commands(request: web.Request) -> web.Response:
    bot = request.app[BOT]
    if bot.verifier is None:
        return web.json_response({"error": "SLACK_SIGNING_SECRET is not configured"}, status=503)
    if request.content_length is not None and request.content_length > MAX_BODY:
        bot.metrics.commands_too_large.inc()
        return web.json_response({"error": "request body too large"}, status=413)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        bot.metrics.commands_too_large.inc()
        return web.json_response({"error": "request body too large"}, status=413)
    text, reason = verify_signature(
        bot.verifier,
        body,
        request.headers.get("X-Slack-Request-Timestamp"),
        request.headers.get("X-Slack-Signature"),
    )
    if text is None:
        bot.metrics.commands_rejected.inc()
        return _unauthorized(reason or "invalid")
    form = form_fields(text)
    if form.get("ssl_check") == "1":
        bot.metrics.commands_ssl_check.inc()
        return web.Response(status=200)
    bot.metrics.commands_answered.inc()
    command = parse_command(form.get("text", ""), bot.scope_names)
    if command.action == "show":
        body = await _show_body(bot, command)
        return web.Response(body=body, content_type="application/json", charset="utf-8")
    reply = await answer(bot, command, form.get("response_url"))
    return web.json_response(reply)


def form_fields(body: str) -> dict[str, str]:
    """The first value of each field the command uses, exactly as parse_qs would give it.

    Slack sends a dozen fields; unquoting all of them was a sixth of the handler's time.
    """
    fields: dict[str, str] = {}
    for pair in body.split("&"):
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in _FORM_FIELDS and name not in fields:
            fields[name] = unquote_plus(value) if "%" in value or "+" in value else value
    return fields


async def _show_body(bot: Bot, command: Command) -> bytes:
    """The encoded reply, rendered at most once per REPLY_TTL and scope, shared by all callers."""
    cycle = bot.runner.last_cycle_at
    entry = bot.replies.get(command.scope)
    now = time.monotonic()
    if entry is None or entry.cycle != cycle or (entry.task.done() and entry.expires <= now):
        task = asyncio.ensure_future(_render_show(bot, command))
        entry = CachedReply(cycle=cycle, expires=now + REPLY_TTL, task=task)
        bot.replies[command.scope] = entry
    # Shielded: a caller that goes away must not cancel the render the others are waiting on.
    cacheable = True
    try:
        body, cacheable = await asyncio.shield(entry.task)
    except Exception:
        cacheable = False
        raise
    finally:
        # A store-error reply (or a failure) is not kept: the next command tries again.
        if not cacheable and bot.replies.get(command.scope) is entry:
            del bot.replies[command.scope]
    return body


async def _render_show(bot: Bot, command: Command) -> tuple[bytes, bool]:
    reply, store_answered = await _from_store(bot, command)
    return json.dumps(reply).encode(), store_answered


async def answer(bot: Bot, command: Command, response_url: str | None) -> dict[str, Any]:
    if command.action == "refresh":
        return await _refresh(bot, command, response_url)
    if command.action in ("help", "unknown"):
        # Usage needs only the configured scope names: no store read, and it still names
        # them while the store is down.
        return render_reply(command, _unread_views(bot), bot.clock())
    reply, _ = await _from_store(bot, command)
    return reply


def _unread_views(bot: Bot, readings: Mapping[str, ScopeReading] | None = None) -> list[ScopeView]:
    """Every configured scope with only the given readings: what is known without the store."""
    readings = readings or {}
    return [
        ScopeView(scope=s.name, kind=s.kind, reading=readings.get(s.name), thresholds=s.thresholds)
        for s in bot.scopes
    ]


async def _from_store(bot: Bot, command: Command) -> tuple[dict[str, Any], bool]:
    """The reply from the shared state, and whether the store answered."""
    now = bot.clock()
    stale_after = bot.settings.poll_interval * 2
    try:
        views = await asyncio.wait_for(
            load_views(bot.store, bot.scopes, now, trend_for=command.scope), STORE_DEADLINE
        )
    except (StoreError, TimeoutError) as exc:
        # The loop's own error names the cause (e.g. connection refused) where this call may
        # only know that the store is not open yet.
        problem = bot.runner.store_problem or str(exc) or "no answer in time"
        reply = render_reply(
            command, _unread_views(bot), now, store_error=problem, stale_after=stale_after
        )
        return reply, False
    return render_reply(command, views, now, stale_after=stale_after), True


def _targets(bot: Bot, command: Command) -> list[Scope]:
    return [s for s in bot.scopes if command.scope in (None, s.name)]


def _refresh_task(bot: Bot, scope: Scope) -> asyncio.Task[ScopeReading]:
    """One in-flight JPush read per scope, shared by every concurrent refresh."""
    task = bot.refreshing.get(scope.name)
    if task is None or task.done():
        task = asyncio.create_task(bot.client.fetch(scope))
        bot.refreshing[scope.name] = task

        def _forget(done: asyncio.Task[ScopeReading], name: str = scope.name) -> None:
            if bot.refreshing.get(name) is done:
                del bot.refreshing[name]

        task.add_done_callback(_forget)
    return task


async def _refresh(bot: Bot, command: Command, response_url: str | None) -> dict[str, Any]:
    tasks = [_refresh_task(bot, scope) for scope in _targets(bot, command)]
    show = Command(action="show", scope=command.scope)
    gathered = asyncio.ensure_future(asyncio.gather(*[asyncio.shield(t) for t in tasks]))
    done, _ = await asyncio.wait({gathered}, timeout=REFRESH_DEADLINE)
    if done:
        return await _fresh_reply(bot, show, gathered.result())
    if not response_url:
        gathered.cancel()
        return render_refresh_pending(command.scope)

    async def follow_up() -> None:
        readings = await gathered
        reply = await _fresh_reply(bot, show, readings)
        await _post_response_url(response_url, reply)

    bot.spawn(follow_up())
    return render_refresh_pending(command.scope)


async def _fresh_reply(
    bot: Bot, command: Command, readings: Sequence[ScopeReading]
) -> dict[str, Any]:
    now = bot.clock()
    fresh = {r.scope: r for r in readings}
    bot.replies.clear()  # fresh numbers: no cached reply may show the old ones
    try:
        await asyncio.wait_for(bot.store.save_readings(list(readings)), STORE_DEADLINE)
    except (StoreError, TimeoutError):
        log.warning("refresh: could not store the fresh readings")
    try:
        views = await asyncio.wait_for(
            load_views(bot.store, bot.scopes, now, trend_for=command.scope, readings=fresh),
            STORE_DEADLINE,
        )
    except (StoreError, TimeoutError):
        views = _unread_views(bot, fresh)
    return render_reply(command, views, now, stale_after=bot.settings.poll_interval * 2)


async def _post_response_url(url: str, reply: dict[str, Any]) -> None:
    body = dict(reply)
    body["replace_original"] = False
    try:
        response = await AsyncWebhookClient(url=url, timeout=10).send_dict(body)
    except Exception as exc:
        log.warning("could not post the refreshed numbers to response_url: %s", type(exc).__name__)
        return
    if response.status_code != 200:
        log.warning("response_url answered HTTP %s", response.status_code)
