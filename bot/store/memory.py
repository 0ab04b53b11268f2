"""In-process state store: unit tests and the demo. Same semantics as the durable backends.

Several MemoryStore instances may share one MemoryData, standing in for replicas that share
a STATE_URL.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.alerts_types import AlertBook
from bot.clock import Clock, utcnow
from bot.quota import QuotaType, ScopeReading
from bot.store._util import Upkeep, from_us, to_us
from bot.store.base import (
    DEFAULT_RETENTION,
    MAX_POINTS_PER_SERIES,
    CycleCommit,
    OutboxMessage,
    history_points,
)

Series = tuple[str, QuotaType]


@dataclass(slots=True)
class _Queued:
    message: OutboxMessage
    claimed_by: str | None = None
    claim_until: datetime | None = None


@dataclass(slots=True)
class MemoryData:
    """Everything a MemoryStore remembers; shareable between instances."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    book: AlertBook = field(default_factory=AlertBook)
    version: int = 0
    latest: dict[str, ScopeReading] = field(default_factory=dict)
    # (ts_us, value) kept sorted by time, one value per instant.
    history: dict[Series, list[tuple[int, int]]] = field(default_factory=dict)
    outbox: dict[str, _Queued] = field(default_factory=dict)
    lease_holder: str | None = None
    lease_until: datetime | None = None
    meta: dict[str, str] = field(default_factory=dict)


class MemoryStore:
    def __init__(
        self,
        data: MemoryData | None = None,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
        max_points: int = MAX_POINTS_PER_SERIES,
    ) -> None:
        self.data = data if data is not None else MemoryData()
        self._retention = retention
        self._clock = clock or utcnow
        self._max_points = max_points
        self._upkeep = Upkeep()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # alert state -----------------------------------------------------------------------
    async def load_book(self) -> tuple[AlertBook, int]:
        with self.data.lock:
            return self.data.book, self.data.version

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        d = self.data
        with d.lock:
            if d.version != expected_version:
                return False
            self._write_readings(commit.readings)
            d.book = commit.book
            d.version = expected_version + 1
            if commit.message is not None:
                d.outbox[commit.message.id] = _Queued(commit.message)
            self._maybe_prune()
        return True

    # readings and history --------------------------------------------------------------
    async def save_readings(self, readings: Sequence[ScopeReading]) -> None:
        with self.data.lock:
            self._write_readings(readings)
            self._maybe_prune()

    async def latest_readings(self) -> dict[str, ScopeReading]:
        with self.data.lock:
            return dict(self.data.latest)

    async def history(
        self, scope: str, quota_type: QuotaType, since: datetime
    ) -> list[tuple[datetime, int]]:
        with self.data.lock:
            points = self.data.history.get((scope, quota_type), [])
            start = bisect.bisect_left(points, (to_us(since), -(2**63)))
            return [(from_us(ts), value) for ts, value in points[start:]]

    async def prune_history(self, before: datetime) -> int:
        with self.data.lock:
            return self._prune(before)

    # outbox ----------------------------------------------------------------------------
    async def pending_messages(self, limit: int = 50) -> list[OutboxMessage]:
        with self.data.lock:
            ids = sorted(self.data.outbox)[:limit]
            return [self.data.outbox[i].message for i in ids]

    async def claim_message(
        self, message_id: str, holder: str, until: datetime, now: datetime
    ) -> bool:
        with self.data.lock:
            queued = self.data.outbox.get(message_id)
            if queued is None:
                return False
            held_by_other = (
                queued.claimed_by is not None
                and queued.claimed_by != holder
                and queued.claim_until is not None
                and queued.claim_until > now
            )
            if held_by_other:
                return False
            queued.claimed_by, queued.claim_until = holder, until
            return True

    async def mark_delivered(self, message_id: str, now: datetime) -> None:
        d = self.data
        with d.lock:
            queued = d.outbox.pop(message_id, None)
            if queued is None:
                return
            book = d.book.mark_delivered(queued.message.keys, now)
            if book != d.book:
                d.book, d.version = book, d.version + 1

    async def record_failure(self, message_id: str, error: str, now: datetime) -> None:
        with self.data.lock:
            queued = self.data.outbox.get(message_id)
            if queued is None:
                return
            msg = queued.message
            queued.message = OutboxMessage(
                id=msg.id,
                created_at=msg.created_at,
                events=msg.events,
                attempts=msg.attempts + 1,
                last_error=error,
            )
            queued.claimed_by = queued.claim_until = None

    # poller lease ----------------------------------------------------------------------
    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        d = self.data
        with d.lock:
            free = d.lease_holder is None or d.lease_until is None or d.lease_until <= now
            if not free and d.lease_holder != holder:
                return False
            d.lease_holder, d.lease_until = holder, now + ttl
            return True

    async def release_lease(self, holder: str) -> None:
        d = self.data
        with d.lock:
            if d.lease_holder == holder:
                d.lease_holder = d.lease_until = None

    # meta ------------------------------------------------------------------------------
    async def set_meta(self, key: str, value: str) -> None:
        with self.data.lock:
            self.data.meta[key] = value

    async def get_meta(self, key: str) -> str | None:
        with self.data.lock:
            return self.data.meta.get(key)

    # internals (caller holds the lock) -------------------------------------------------
    def _write_readings(self, readings: Sequence[ScopeReading]) -> None:
        d = self.data
        for reading in readings:
            d.latest[reading.scope] = reading
            ts = to_us(reading.read_at)
            for quota_type, value in history_points(reading):
                points = d.history.setdefault((reading.scope, quota_type), [])
                at = bisect.bisect_left(points, (ts, -(2**63)))
                if at < len(points) and points[at][0] == ts:
                    points[at] = (ts, value)
                else:
                    points.insert(at, (ts, value))
                if len(points) > self._max_points:
                    del points[: len(points) - self._max_points]

    def _maybe_prune(self) -> None:
        now = self._clock()
        if self._upkeep.due(now):
            self._prune(now - self._retention)

    def _prune(self, before: datetime) -> int:
        cut = to_us(before)
        removed = 0
        for series, points in list(self.data.history.items()):
            keep_from = bisect.bisect_left(points, (cut, -(2**63)))
            keep_from = max(keep_from, len(points) - self._max_points)
            removed += keep_from
            del points[:keep_from]
            if not points:
                del self.data.history[series]
        return removed
