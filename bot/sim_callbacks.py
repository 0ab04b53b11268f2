"""The simulator's delivery reports: what JPush posts to an app's callback address.

Each simulated send of an app with a callback address produces one report, signed as JPush
signs it (`appKey`, `appMasterSecret`, a random `nonce`, the timestamp in ms). A send spends
one unit of its quota type: 4001 (delivered) while there is quota, 4005 (quota exhausted) once
it is 0. A draining quota is a stream of sends: every unit drained past zero is a failed send
and is reported as 4005. A report the callback does not answer with 200 is retried with the same
nonce and signature after `retry_delays` (JPush: 3 minutes, 1 hour, 12 hours).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from bot.delivery_reports import DELIVERED, QUOTA_EXHAUSTED, SMS_REPORT, signature_for

log = logging.getLogger(__name__)

JPUSH_RETRY_DELAYS: tuple[float, ...] = (180.0, 3600.0, 43200.0)
# A quota drained far past zero in one tick (a very fast demo) must not flood the callback.
MAX_REPORTS_PER_TICK = 200
TICK = 0.2


@dataclass(frozen=True, slots=True)
class CallbackForm:
    """One signed callback, as posted (kept identical across retries)."""

    fields: dict[str, str]
    status: int | None


@dataclass
class CallbackStats:
    posted: int = 0  # attempts, retries included
    accepted: int = 0  # answered 200
    failed: int = 0  # attempts answered otherwise or not at all
    dropped: int = 0  # reports not posted because a tick had too many
    by_status: dict[str, int] = field(default_factory=dict)  # reports created, per status
    answers: dict[str, int] = field(default_factory=dict)  # HTTP status (or "error") per attempt

    def to_json(self) -> dict[str, object]:
        return {
            "posted": self.posted,
            "accepted": self.accepted,
            "failed": self.failed,
            "dropped": self.dropped,
            "by_status": dict(self.by_status),
            "answers": dict(self.answers),
        }


def sign_report(
    app_key: str,
    master_secret: str,
    status: int,
    *,
    now_ms: int,
    phone: str = "13800138000",
    nonce: str | None = None,
) -> CallbackForm:
    """A delivery report for one message, signed with the app's credentials."""
    nonce = nonce if nonce is not None else str(secrets.randbits(63))
    timestamp = str(now_ms)
    data = {
        "msgId": str(secrets.randbits(40)),
        "status": status,
        "receiveTime": now_ms // 1000,
        "phone": phone,
    }
    return CallbackForm(
        fields={
            "nonce": nonce,
            "timestamp": timestamp,
            "signature": signature_for(app_key, master_secret, nonce, timestamp),
            "type": SMS_REPORT,
            "data": json.dumps(data, separators=(",", ":")),
        },
        status=status,
    )


def send_outcomes(available: int | None, n: int) -> tuple[list[int], int]:
    """The statuses of `n` sends against `available` units (None: no quota of that type),
    and how many units they spend."""
    spendable = max(0, available or 0)
    spent = min(spendable, max(0, n))
    return [DELIVERED] * spent + [QUOTA_EXHAUSTED] * (max(0, n) - spent), spent


class CallbackPoster:
    """Posts reports to callback addresses, retrying as JPush does, until stopped."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = JPUSH_RETRY_DELAYS,
    ) -> None:
        self.retry_delays = tuple(retry_delays)
        self.stats = CallbackStats()
        self._wall = wall_clock
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def now_ms(self) -> int:
        return int(self._wall() * 1000)

    def post(self, url: str, form: CallbackForm) -> None:
        key = str(form.status) if form.status is not None else "none"
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._deliver(url, form))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the reports in flight (their retries included) to settle."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, url: str, form: CallbackForm) -> None:
        for delay in (0.0, *self.retry_delays):
            if delay:
                await asyncio.sleep(delay)
            if await self._attempt(url, form):
                return

    async def _attempt(self, url: str, form: CallbackForm) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.stats.posted += 1
        try:
            async with self._session.post(url, data=form.fields) as response:
                await response.read()
                answer = str(response.status)
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            answer, ok = "error", False
            log.debug("callback to the bot failed: %s", type(exc).__name__)
        self.stats.answers[answer] = self.stats.answers.get(answer, 0) + 1
        if ok:
            self.stats.accepted += 1
        else:
            self.stats.failed += 1
        return ok
