"""What the log must never hold, and how often it may repeat itself.

`SecretMask` is a logging filter on the bot's one handler, so it sees every record, the
libraries' debug logs included (slack-sdk prints the webhook URL it posts to, a response_url
and its headers at DEBUG). It masks the configured secrets wherever they appear, Slack and
JPush credentials by their shape, and the path of any URL a library logs, since for a Slack
webhook or a response_url the path is the credential.

`LogThrottle` lets a hostile flood (unsigned requests, say) write one line per second per
reason, with a count of what it stood for, instead of one line per request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MASK = "***"
# Shorter values are not worth masking (and would mask ordinary words).
_MIN_SECRET = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: bot, user, app-level, refresh, config.
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"), "xox*-" + MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), "xapp-" + MASK),
    # Authorization header values (JPush Basic auth is key:secret in base64).
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    # Slack incoming webhooks and response_urls: the path is the credential.
    (re.compile(r"(https?://hooks\.slack(?:-gov)?\.com)/[^\s'\",)>]*"), r"\1/" + MASK),
    # Chat robots put their credential in the query string.
    (re.compile(r"([?&](?:access_token|key|token|sign)=)[^&\s'\",)>]*"), r"\1" + MASK),
    (re.compile(r"(response_url[\"']?\s*[:=]\s*[\"']?)[^&\s'\",)>]+"), r"\1" + MASK),
)
# Libraries that log the URLs they call: every path they print is masked.
_URL = re.compile(r"(https?://[^/\s'\",)>]+)/[^\s'\",)>]*")
_URL_LOGGERS = ("slack_sdk", "slack_bolt", "aiohttp.client")


def mask_text(text: str, secrets: Iterable[str] = (), *, urls: bool = False) -> str:
    """`text` with every secret, token-shaped string (and, with `urls`, URL path) masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if urls:
        text = _URL.sub(r"\1/" + MASK, text)
    return text


class SecretMask(logging.Filter):
    """Rewrites each record's message (and string extras) with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        urls = record.name.startswith(_URL_LOGGERS)
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string is the logging call's bug; show it, masked, not a crash.
            message = f"{record.msg!r} {record.args!r}"
        masked = mask_text(message, self._secrets, urls=urls)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                clean = mask_text(value, self._secrets, urls=urls)
                if clean != value:
                    setattr(record, key, clean)
        if record.exc_info and not record.exc_text:
            # Formatted here once, so the traceback text is masked like the message.
            record.exc_text = mask_text(
                logging.Formatter().formatException(record.exc_info), self._secrets, urls=urls
            )
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text, self._secrets, urls=urls)
        return True


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@dataclass
class _Window:
    started: float
    suppressed: int = 0


class LogThrottle:
    """At most one line per `every` seconds per reason; the next line says how many it stood
    for. Call `log(reason, emit)`: `emit(count)` runs when a line is due."""

    def __init__(self, every: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._monotonic = monotonic
        self._windows: dict[str, _Window] = {}

    def log(self, reason: str, emit: Callable[[int], None]) -> None:
        self.tally(reason, 1, lambda count, _first: emit(count))

    def tally(self, reason: str, n: int, emit: Callable[[int, bool], None]) -> None:
        """Like `log` for `n` occurrences at once: `emit(count, first)` gets the total since
        the last line, and whether this is the reason's first line."""
        now = self._monotonic()
        window = self._windows.get(reason)
        if window is not None and now - window.started < self._every:
            window.suppressed += n
            return
        count = n + (window.suppressed if window is not None else 0)
        self._windows[reason] = _Window(started=now)
        if len(self._windows) > 1000:
            # Reasons are a handful of fixed strings; this only guards against a caller bug.
            self._windows = {reason: self._windows[reason]}
        emit(count, window is None)


class ClientErrorFilter(logging.Filter):
    """For aiohttp's server logger: a malformed request (an oversized header, garbage bytes)
    or a client that went away mid-request is the client's problem, not a server error. It
    becomes one WARNING line without a traceback, at most once per second per kind."""

    def __init__(self, throttle: LogThrottle | None = None) -> None:
        super().__init__()
        self._throttle = throttle or LogThrottle()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _client_fault(exc):
            return True
        kind = type(exc).__name__
        shown: list[int] = []
        self._throttle.log(kind, shown.append)
        if not shown:
            return False
        reason = str(exc).splitlines()[0][:120] if str(exc) else kind
        more = f" ({shown[0]} like it since the last line)" if shown[0] > 1 else ""
        record.msg, record.args = f"bad or interrupted request: {kind}: {reason}{more}", None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def _client_fault(exc: BaseException) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError | ConnectionError | TimeoutError)
