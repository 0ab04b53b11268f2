"""GET/POST /jpush/callback: JPush's address check and its delivery reports.

Thin: size limit, then `delivery_reports.read_callback` (signature before anything is parsed),
then the intake, which records and acts on the verified report. A bad request is answered
400/401/413 and reaches nothing; a store that cannot record the report gets 503 so JPush tries
again later (it retries after 3 minutes, 1 hour and 12 hours). Never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aiohttp import web

from bot.delivery_reports import MAX_BODY, DeliveryReport, Rejection, Signer, echo, read_callback
from bot.errors import StoreError

log = logging.getLogger(__name__)

PATH = "/jpush/callback"
_PLAIN = "text/plain"


class ReportIntake(Protocol):
    async def accept(self, report: DeliveryReport) -> bool:
        """Record and act on a verified report; False when it was seen before (a retry).

        Raises StoreError (or TimeoutError) when it could not be recorded: nothing is kept."""


class RejectionCounter(Protocol):
    def callback_refused(self, status: int) -> None: ...


@dataclass
class _Throttle:
    """Logs each kind of refusal at most once per second, with how many were refused."""

    interval: float = 1.0
    last: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)

    def warn(self, reason: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -self.interval) < self.interval:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            return
        self.last[reason] = now
        more = self.suppressed.pop(reason, 0)
        suffix = f" ({more} more since the last such line)" if more else ""
        log.warning("JPush callback refused: %s%s", reason, suffix)


@dataclass
class CallbackRoute:
    signer: Signer
    intake: ReportIntake
    clock: Callable[[], datetime]
    counter: RejectionCounter | None = None
    _throttle: _Throttle = field(default_factory=_Throttle)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.address_check)
        app.router.add_post(PATH, self.report)

    async def address_check(self, request: web.Request) -> web.Response:
        body = echo(request.query.get("echostr"))
        if body is None:
            return self._refuse(Rejection(400, "address check without a valid echostr"))
        return web.Response(text=body, content_type=_PLAIN)

    async def report(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return self._refuse(Rejection(413, "body over 64 KiB"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(Rejection(413, "body over 64 KiB"))
        try:
            report = read_callback(body, self.signer, self.clock())
        except Rejection as refused:
            return self._refuse(refused)
        try:
            fresh = await self.intake.accept(report)
        except (StoreError, TimeoutError) as exc:
            log.warning(
                "JPush report from %s not recorded, JPush will retry: %s", report.scope, exc
            )
            return web.Response(status=503, text="try again later", content_type=_PLAIN)
        except Exception:
            # A bug, not the sender's fault: say so in the log, let JPush retry, never a 500.
            log.exception("JPush report from %s could not be handled", report.scope)
            return web.Response(status=503, text="try again later", content_type=_PLAIN)
        return web.Response(text="ok" if fresh else "ok (seen before)", content_type=_PLAIN)

    def _refuse(self, refused: Rejection) -> web.Response:
        self._throttle.warn(refused.reason)
        if self.counter is not None:
            self.counter.callback_refused(refused.status)
        text = {400: "bad request", 401: "invalid signature", 413: "request body too large"}
        return web.Response(
            status=refused.status, text=text.get(refused.status, "refused"), content_type=_PLAIN
        )
