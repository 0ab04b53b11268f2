"""The aiohttp application: the Slack routes, /healthz, /metrics, and the worker's lifetime.

Handlers are thin: each asks the object that owns the answer (the worker's health, the views
in the store, the slash command) and encodes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from slack_sdk.signature import Clock as SignatureClock

from bot.app import Services
from bot.callback_route import CallbackRoute
from bot.interactions import InteractionsRoute
from bot.metrics import CONTENT_TYPE, authorized
from bot.report_intake import ReportIntake, callback_signer
from bot.slack_signature import MAX_BODY, SlackSignature
from bot.slash import SlashCommands
from bot.socket_mode import SocketMode

log = logging.getLogger(__name__)

STORE_DEADLINE = 1.5
SHUTDOWN_GRACE = 12.0

# A scrape is served from a rendering at most this old: a flood of scrapers costs one
# rendering per second, not one each.
METRICS_MAX_AGE_S = 1.0


class RenderedMetrics:
    """The last /metrics body and when it was rendered."""

    def __init__(self, services: Services, max_age: float = METRICS_MAX_AGE_S) -> None:
        self._services = services
        self._max_age = min(max_age, services.settings.poll_interval.total_seconds())
        self._body = b""
        self._at = -math.inf

    def body(self) -> bytes:
        now = self._services.monotonic()
        if now - self._at >= self._max_age:
            self._body, self._at = self._services.metrics.render(), now
        return self._body


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
METRICS: web.AppKey[RenderedMetrics] = web.AppKey("metrics", RenderedMetrics)
SLASH: web.AppKey[SlashCommands] = web.AppKey("slash", SlashCommands)
SOCKET_MODE: web.AppKey[SocketMode] = web.AppKey("socket_mode", SocketMode)
REPORTS: web.AppKey[ReportIntake] = web.AppKey("reports", ReportIntake)


def create_app(
    services: Services, *, signature_clock: SignatureClock | None = None
) -> web.Application:
    """The routes over `services`; the worker runs for as long as the application does."""
    settings = services.settings
    secret = settings.slack_signing_secret
    signature = SlackSignature(
        secret.get_secret_value() if secret is not None else None, clock=signature_clock
    )
    slash = SlashCommands(services, signature)
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[METRICS] = RenderedMetrics(services)
    app[SLASH] = slash
    if settings.slack_app_token is not None:
        # Beside the HTTP routes, not instead of them: both transports can be on at once.
        app[SOCKET_MODE] = SocketMode(
            settings.slack_app_token.get_secret_value(),
            settings.slack_api_url,
            slash=slash.reply,
            interactions=services.actions.handle_payload,
        )
    interactions = InteractionsRoute(services.actions, signature, services.metrics)
    app.router.add_post("/slack/commands", slash.handle)
    app.router.add_post("/slack/interactions", interactions.handle)
    intake = ReportIntake(
        services.scopes,
        services.store,
        services.monitor,
        services.client,
        clock=services.clock,
        metrics=services.metrics,
        wake_delivery=services.worker.wake_delivery,
    )
    app[REPORTS] = intake
    signer = callback_signer(services.scopes)
    CallbackRoute(signer, intake, services.clock, services.metrics).add_to(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/", index)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.worker.start()
    socket_mode = app.get(SOCKET_MODE)
    if socket_mode is not None:
        socket_mode.start()
    yield
    if socket_mode is not None:
        await socket_mode.close()
    await services.worker.shutdown(SHUTDOWN_GRACE)
    await app[SLASH].close()
    await app[REPORTS].close()
    await services.close()


async def index(request: web.Request) -> web.Response:
    return web.json_response({"name": "sms-balance-bot", "routes": ["/healthz", "/metrics"]})


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    health = services.worker.health(services.clock())
    last = health.last_cycle_at
    delivery = health.delivery
    body: dict[str, Any] = {
        "status": health.status,
        "last_cycle_at": last.isoformat() if last else None,
        "seconds_since_cycle": round(health.seconds_since_cycle, 1) if last else None,
        "poll_interval_s": health.poll_interval.total_seconds(),
        "poller": health.poller,
        "scopes": len(services.scopes),
        "scopes_unreadable": health.scopes_unreadable,
        "store": {"ok": health.store_error is None, "error": health.store_error},
        "delivery": {
            "status": delivery.state,
            "error": delivery.problem,
            "queued": delivery.queued,
            # Web API delivery looks a message up before re-sending it; without the history
            # scopes (or with a webhook) a lost answer can mean a second post.
            "guarantee": "exactly-once" if delivery.exactly_once else "at-least-once",
            "destinations": {
                name: {"status": d.state, "error": d.problem, "queued": d.queued, "url": d.target}
                for name, d in sorted(health.destinations.items())
            },
        },
        "socket_mode": "off",
        "socket_mode_error": None,
    }
    socket_mode = request.app.get(SOCKET_MODE)
    if socket_mode is not None:
        body["socket_mode"] = socket_mode.state.value
        body["socket_mode_error"] = socket_mode.error
        if socket_mode.error is not None and body["status"] == "ok":
            # A refused app token: restarting would not help, so say so without a 503.
            body["status"] = "degraded"
    return web.json_response(body, status=200 if health.serving else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    # The gauges are set by the worker's loop (after each cycle, or from the shared state
    # once per interval on a replica that does not poll): a scrape reads nothing, so no
    # number of scrapers can slow the cycle down.
    services = request.app[SERVICES]
    token = services.settings.metrics_token
    secret = token.get_secret_value() if token is not None else None
    if not authorized(secret, request.headers.get("Authorization")):
        return web.json_response(
            {"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return web.Response(body=request.app[METRICS].body(), headers={"Content-Type": CONTENT_TYPE})
