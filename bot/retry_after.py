"""`Retry-After` from an upstream (JPush, Slack) as a bounded number of seconds.

A header is input from the network: whatever it says, the answer is a finite pause between
0 and the caller's cap, and reading it never raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A Retry-After that is there but unusable (negative, not a number, infinite, NaN, a date
# that does not parse), or a rate limit that names no pause, is read as this many seconds.
DEFAULT_PAUSE = 30.0


def parse_retry_after(
    value: str | None, clock: Callable[[], datetime], default: float = DEFAULT_PAUSE
) -> float | None:
    """Delta-seconds or an HTTP date as seconds; None when absent, `default` when unusable.

    A date already past means no wait. The result is finite and not negative; the caller
    applies its own cap.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = max(0.0, (when - clock()).total_seconds())
        except Exception:
            # Any way a date fails to parse (ValueError, OverflowError, IndexError, ...)
            # means the same thing: the server asked for a pause, just not legibly.
            return default
    if not math.isfinite(seconds) or seconds < 0:
        return default
    return seconds


def bounded_pause(seconds: float | None, cap: float, default: float = DEFAULT_PAUSE) -> float:
    """`seconds` (or `default` when None) limited to [0, cap]."""
    pause = default if seconds is None else seconds
    return max(0.0, min(pause, cap))
