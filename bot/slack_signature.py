"""Reads and authenticates the HTTP requests Slack signs (slash commands, interactivity).

Every Slack route reads its body through one `SlackSignature`, so the size limit, the v0
signature and the five-minute replay window are checked the same way everywhere.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier

from bot.log_hygiene import LogThrottle
from bot.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# A body still not complete after this long is dropped: slow clients must not hold
# connections (Slack itself sends a few hundred bytes at once).
BODY_DEADLINE_S = 10.0
# Slack's replay window: a signed request is accepted for five minutes either side.
MAX_SKEW_S = 300
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")

Outcome = Literal["unconfigured", "too_large", "rejected", "dropped"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not let through, and the response that says so."""

    outcome: Outcome
    response: web.Response

    def counted(self, metrics: Metrics) -> web.Response:
        """The response, once the refusal is counted (every Slack route counts alike)."""
        if self.outcome == "rejected":
            metrics.commands_rejected.inc()
        elif self.outcome == "too_large":
            metrics.commands_too_large.inc()
        return self.response


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
    if abs(skew) > MAX_SKEW_S:
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


class SlackSignature:
    def __init__(
        self,
        signing_secret: str | None,
        *,
        clock: Clock | None = None,
        max_body: int = MAX_BODY,
        body_deadline: float = BODY_DEADLINE_S,
    ) -> None:
        self._verifier = (
            SignatureVerifier(signing_secret, clock=clock or Clock()) if signing_secret else None
        )
        self._max_body = max_body
        self._body_deadline = body_deadline
        # An unsigned flood must not write a line per request.
        self._throttle = LogThrottle()

    async def read(self, request: web.Request) -> str | Refusal:
        """The request's body, decoded, if Slack signed it; else a Refusal to send back."""
        if self._verifier is None:
            return Refusal(
                "unconfigured",
                web.json_response({"error": "SLACK_SIGNING_SECRET is not configured"}, status=503),
            )
        if request.content_length is not None and request.content_length > self._max_body:
            return _too_large()
        try:
            if request.content.is_eof():
                # Slack's few hundred bytes usually arrive with the headers. A timer armed
                # per request would keep each request's objects alive for the whole
                # deadline (asyncio drops cancelled timers lazily), and under load the
                # collector would then scan them all every half second: 30 ms stalls.
                body = await request.read()
            else:
                body = await asyncio.wait_for(request.read(), self._body_deadline)
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        except (TimeoutError, ConnectionError) as exc:
            # Too slow, or gone mid-body: nobody is there to read an answer.
            if request.transport is not None:
                request.transport.close()
            why = "body not complete in time" if isinstance(exc, TimeoutError) else "dropped"
            self._throttle.log(
                why, lambda n: log.warning("%s: request %s%s", request.path, why, _more(n))
            )
            return Refusal("dropped", web.Response(status=408))
        text, reason = verify_signature(
            self._verifier,
            body,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
        )
        if text is None:
            # Why goes to the log (clock skew is the usual culprit), never the secret; a flood
            # of them gives one line per second per kind of reason, with a count.
            kind = (reason or "invalid").split(" (")[0]
            path = request.path
            self._throttle.log(
                kind, lambda n: log.warning("%s rejected: %s%s", path, reason, _more(n))
            )
            return Refusal(
                "rejected", web.json_response({"error": "invalid signature"}, status=401)
            )
        return text


def _more(count: int) -> str:
    return f" ({count} rejected like this since the last line)" if count > 1 else ""


def _too_large() -> Refusal:
    return Refusal("too_large", web.json_response({"error": "request body too large"}, status=413))
