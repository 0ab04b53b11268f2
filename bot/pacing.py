"""Client-side pacing for chat webhooks: at most N sends per window, in order, never dropped.

DingTalk and WeCom robots take 20 messages a minute, Feishu 100 a minute and 5 a second;
past that they answer with a rate-limit code (DingTalk then mutes the robot for minutes).
Staying under the limit on our side is cheaper than being told off, so every send first asks
the pacer. A send that would have to wait longer than the caller can hold its outbox claim
is not dropped: it is handed back as DeliveryPaced and the message stays queued.

`pace_delay` is the pure decision; `Pacer` holds the send times and the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.errors import DeliveryPaced


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` sends in any `per` seconds."""

    count: int
    per: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.per <= 0:
            raise ValueError("a rate limit needs count >= 1 and per > 0")


def per_minute(count: int) -> RateLimit:
    return RateLimit(count, 60.0)


def pace_delay(
    sent: Sequence[float], limits: Sequence[RateLimit], now: float, blocked_until: float = 0.0
) -> float:
    """Seconds from `now` until one more send keeps every limit (0.0: send now).

    `sent` holds earlier send times, oldest first. For each limit the send `count` places
    back must have left the window; `blocked_until` is a pause the remote side asked for.
    """
    wait = max(0.0, blocked_until - now)
    for limit in limits:
        if len(sent) >= limit.count:
            wait = max(wait, sent[-limit.count] + limit.per - now)
    return wait


class Pacer:
    """Send times for one destination; FIFO so messages leave in the order they asked."""

    def __init__(
        self,
        limits: Sequence[RateLimit],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = tuple(limits)
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque(maxlen=max((lim.count for lim in self.limits), default=1))
        self._blocked_until = 0.0
        # asyncio.Lock wakes waiters first come, first served: that is what keeps order.
        self._lock = asyncio.Lock()

    def delay(self) -> float:
        return pace_delay(self._sent, self.limits, self._clock(), self._blocked_until)

    def hold(self, seconds: float) -> None:
        """The remote side said "too fast": send nothing for `seconds`."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    async def acquire(self, max_wait: float) -> None:
        """Wait for a slot and take it; raise DeliveryPaced if that is more than `max_wait`."""
        async with self._lock:
            while True:
                wait = self.delay()
                if wait <= 0:
                    self._sent.append(self._clock())
                    return
                if wait > max_wait:
                    raise DeliveryPaced(
                        f"paced: next send allowed in {wait:.1f} s", retry_after=wait
                    )
                await self._sleep(wait)
