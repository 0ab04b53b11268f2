"""DingTalk, Feishu and WeCom group robots: sign, pace, post, and judge the answer.

These robots answer HTTP 200 even when they refuse, with `errcode` (DingTalk, WeCom) or
`code` (Feishu) in the body; anything but 0 is a failed delivery. Answers are sorted into
three kinds, by code, never by guessing:

- rate limited (DingTalk 130101, WeCom 45009, Feishu 11232): wait, then retry; the pacer also
  holds that destination back so the next message does not make it worse;
- refused (bad signature, missing keyword, unknown token, IP not allowed): a configuration
  error, kept queued and shown in /healthz, retried only rarely;
- anything else (5xx, network, unknown codes): transient, retried with backoff.

No third-party chat SDK: the maintained ones are for full apps, a custom robot is one POST.
Secrets (the signing secret, DingTalk's access_token, WeCom's key, Feishu's hook token) are
never put into an error message or a log line; `mask_url` is what may be shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from bot.destinations import ChatKind
from bot.errors import DeliveryRefused, DeliveryRetryable
from bot.pacing import Pacer, RateLimit, per_minute

SEND_TIMEOUT = 15.0  # seconds; below the outbox claim so a slow post cannot outlive it
MAX_ANSWER_BYTES = 64 * 1024  # a robot's answer is a few dozen bytes; never read a flood
MAX_DETAIL = 200  # characters of the robot's own message kept for /healthz


# What each robot accepts; a burst beyond this is answered with a rate-limit code.
DEFAULT_LIMITS: dict[ChatKind, tuple[RateLimit, ...]] = {
    ChatKind.DINGTALK: (per_minute(20),),
    ChatKind.WECOM: (per_minute(20),),
    ChatKind.FEISHU: (per_minute(100), RateLimit(5, 1.0)),
}

# Which settings an operator should look at when a robot refuses.
SETTINGS_HINT = {
    ChatKind.DINGTALK: "check DINGTALK_WEBHOOK_URL / DINGTALK_SECRET and the robot's security",
    ChatKind.FEISHU: "check FEISHU_WEBHOOK_URL / FEISHU_SECRET and the bot's security",
    ChatKind.WECOM: "check WECOM_WEBHOOK_URL",
}

# Codes, per robot. DingTalk answers 310000 for a bad signature, a stale timestamp, a missing
# keyword and an IP outside the allow-list alike (errmsg tells which).
RATE_LIMIT_CODES: dict[ChatKind, frozenset[int]] = {
    ChatKind.DINGTALK: frozenset({130101, 660026}),
    ChatKind.WECOM: frozenset({45009}),
    ChatKind.FEISHU: frozenset({11232}),
}
REFUSAL_CODES: dict[ChatKind, frozenset[int]] = {
    ChatKind.DINGTALK: frozenset({310000, 300001, 300005}),
    ChatKind.WECOM: frozenset({93000}),
    # 19001 token invalid, 19021 signature or timestamp, 19022 IP not allowed, 19024 keyword
    ChatKind.FEISHU: frozenset({19001, 19021, 19022, 19024}),
}
# Feishu also answers a generic 9499 "Bad Request", whose msg says when it is a rate limit.
_FEISHU_RATE_WORDS = re.compile(r"too many request|frequency limit", re.IGNORECASE)


# --- signing (pure) ----------------------------------------------------------------------------


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(key=secret, msg="{timestamp}\\n{secret}")), not yet URL-encoded."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """base64(HMAC-SHA256(key="{timestamp}\\n{secret}", msg=b""))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """`url` with `timestamp` and the URL-encoded `sign` appended to its query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in ("timestamp", "sign")]
    query += [("timestamp", str(timestamp_ms)), ("sign", dingtalk_sign(secret, timestamp_ms))]
    # quote with safe="" so base64's "+", "/" and "=" arrive as %2B, %2F, %3D.
    encoded = urlencode(query, quote_via=quote, safe="")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, encoded, parts.fragment))


def feishu_signed_body(payload: Mapping[str, Any], secret: str, timestamp_s: int) -> dict[str, Any]:
    body = dict(payload)
    body["timestamp"] = str(timestamp_s)
    body["sign"] = feishu_sign(secret, timestamp_s)
    return body


# --- what may be shown (pure) ----------------------------------------------------------------

_TOKENISH = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


def mask_url(url: str) -> str:
    """The URL with every credential replaced by `***`: safe for logs and /healthz.

    Query values (access_token, key, sign) and user info are always masked; so is every path
    segment after `hook` (Feishu's token) and any long token-like segment.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not host:
        return "<unparsable URL>"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    segments = parts.path.split("/")
    masked: list[str] = []
    after_hook = False
    for segment in segments:
        if segment and (after_hook or _TOKENISH.match(segment)):
            masked.append("***")
        else:
            masked.append(segment)
        after_hook = after_hook or segment.lower() in ("hook", "hooks")
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, "/".join(masked), query, ""))


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` on one line, clipped, with any secret that a server echoed back removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


# --- judging an answer (pure) ----------------------------------------------------------------


class Outcome(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"
    TRANSIENT = "transient"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    code: int | None = None
    message: str = ""  # the robot's own words, not yet scrubbed

    @property
    def reason(self) -> str:
        """A short stable id for metrics and /healthz, e.g. `errcode_310000` or `http_404`."""
        return f"errcode_{self.code}" if self.code is not None else self.message or "unknown"


def _as_code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,12}", value.strip()):
        return int(value)
    return None


def read_answer(kind: ChatKind, body: object) -> tuple[int | None, str]:
    """(code, message) from a robot's JSON answer; (None, "") when there is none."""
    if not isinstance(body, dict):
        return None, ""
    if kind is ChatKind.FEISHU:
        # Newer answers carry code/msg; older ones StatusCode/StatusMessage.
        code = _as_code(body.get("code", body.get("StatusCode")))
        message = body.get("msg", body.get("StatusMessage", ""))
    else:
        code = _as_code(body.get("errcode"))
        message = body.get("errmsg", "")
    return code, message if isinstance(message, str) else ""


def classify_answer(kind: ChatKind, status: int, body: object) -> Verdict:
    """Decide what an HTTP answer from a robot means."""
    code, message = read_answer(kind, body)
    if code is not None:
        if code == 0 and 200 <= status < 300:
            return Verdict(Outcome.OK, 0, message)
        if code in RATE_LIMIT_CODES[kind] or (
            kind is ChatKind.FEISHU and _FEISHU_RATE_WORDS.search(message)
        ):
            return Verdict(Outcome.RATE_LIMITED, code, message)
        if code in REFUSAL_CODES[kind]:
            return Verdict(Outcome.REFUSED, code, message)
        if code != 0:
            return Verdict(Outcome.TRANSIENT, code, message)
    if status == 429:
        return Verdict(Outcome.RATE_LIMITED, None, "http_429")
    if status in (401, 403, 404, 410):
        # No such robot (deleted, or a mistyped URL): retrying cannot fix it.
        return Verdict(Outcome.REFUSED, None, f"http_{status}")
    if 200 <= status < 300:
        return Verdict(Outcome.TRANSIENT, None, "unexpected answer")
    return Verdict(Outcome.TRANSIENT, None, f"http_{status}")


# --- the notifier (adapter) ------------------------------------------------------------------


class ChatWebhookNotifier:
    """Posts ready-made payloads to one robot, paced, signed when a secret is set.

    `send` returns when the robot accepted the message, or raises DeliveryRetryable (with
    `retry_after` for rate limits), DeliveryPaced (our own pacing, nothing was sent) or
    DeliveryRefused (a configuration error).
    """

    def __init__(
        self,
        kind: ChatKind,
        url: str,
        *,
        secret: str | None = None,
        limits: Sequence[RateLimit] | None = None,
        session: aiohttp.ClientSession | None = None,
        wall_clock: Callable[[], float] = time.time,
        pacer: Pacer | None = None,
        rate_limited_retry: float = 60.0,
        max_pace_wait: float = 5.0,
        timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.kind = kind
        self.name = kind.value
        self.display_url = mask_url(url)
        self._url = url
        self._secret = secret or None
        self._session = session
        self._own_session = session is None
        self._wall_clock = wall_clock
        self.pacer = pacer or Pacer(DEFAULT_LIMITS[kind] if limits is None else limits)
        self._rate_limited_retry = rate_limited_retry
        self._max_pace_wait = max_pace_wait
        self._timeout = timeout

    def seconds_until_ready(self) -> float:
        return self.pacer.delay()

    def _secrets(self) -> list[str]:
        found = [self._url]
        if self._secret:
            found.append(self._secret)
        parts = urlsplit(self._url)
        found += [v for _, v in parse_qsl(parts.query) if len(v) >= 4]
        found += [s for s in parts.path.split("/") if _TOKENISH.match(s)]
        return found

    def _request(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        now = self._wall_clock()
        if self.kind is ChatKind.DINGTALK and self._secret:
            return dingtalk_signed_url(self._url, self._secret, int(now * 1000)), dict(payload)
        if self.kind is ChatKind.FEISHU and self._secret:
            return self._url, feishu_signed_body(payload, self._secret, int(now))
        return self._url, dict(payload)

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self.pacer.acquire(self._max_pace_wait)
        url, body = self._request(payload)
        label = self.kind.label
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                URL(url, encoded=True),
                json=body,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                status = response.status
                raw = await response.content.read(MAX_ANSWER_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The exception text can hold the URL; only its type is safe to show.
            raise DeliveryRetryable(f"cannot reach {label}: {type(exc).__name__}") from None
        try:
            answer: object = json.loads(raw)
        except ValueError:
            answer = None
        verdict = classify_answer(self.kind, status, answer)
        detail = scrub(f"{verdict.reason} {verdict.message}".strip(), self._secrets())
        if verdict.outcome is Outcome.OK:
            return
        if verdict.outcome is Outcome.RATE_LIMITED:
            self.pacer.hold(self._rate_limited_retry)
            raise DeliveryRetryable(
                f"{label} rate limited ({detail})", retry_after=self._rate_limited_retry
            )
        if verdict.outcome is Outcome.REFUSED:
            raise DeliveryRefused(
                f"{label} refused the message ({detail}); {SETTINGS_HINT[self.kind]}",
                reason=scrub(verdict.reason, self._secrets()),
            )
        raise DeliveryRetryable(f"{label} did not accept the message ({detail})")

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
