"""The two clocks the bot reads, as injectable callables.

Wall time (aware UTC) stamps readings, alerts and replies; monotonic time measures durations
and expiries that must not jump when the system clock is set. Everything that keeps time takes
one of these as a parameter, so tests can drive it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
Monotonic = Callable[[], float]


def utcnow() -> datetime:
    return datetime.now(UTC)
