"""Small helpers shared by the store backends (time encoding, URL redaction, upkeep pacing)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Retention pruning is housekeeping: doing it on every write would cost more than it saves.
UPKEEP_EVERY = timedelta(minutes=1)


def to_us(moment: datetime) -> int:
    """Integer microseconds since the epoch: exact, unlike float seconds."""
    if moment.tzinfo is None:
        # The bot works in aware UTC; a naive value is read as UTC rather than local time.
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def from_us(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


_USERINFO = re.compile(r"(?<=://)([^/@]*)@")


def redact_url(url: str) -> str:
    """The URL with any user:password part replaced, safe for logs and messages."""
    return _USERINFO.sub("***@", url)


def scrub(text: str, secret: str | None) -> str:
    """Remove `secret` from a driver's error text before it reaches a message or a log."""
    if secret:
        text = text.replace(secret, "***")
    return text


class Upkeep:
    """Paces opportunistic maintenance: `due(now)` is True at most once per interval."""

    def __init__(self, every: timedelta = UPKEEP_EVERY) -> None:
        self._every = every
        self._last: datetime | None = None

    def due(self, now: datetime) -> bool:
        if self._last is not None and now - self._last < self._every:
            return False
        self._last = now
        return True
