"""The StateStore protocol: what the monitor, the notifier and the web server need to remember.

Backends: memory (unit tests, demo), SQLite (the embedded default), Redis (replicas).
Every backend passes the same suite in tests/test_store.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.alerts_types import AlertBook, Event
from bot.quota import FetchError, QuotaType, ScopeKind, ScopeReading

DEFAULT_RETENTION = timedelta(days=14)
# A hard cap per (scope, type) series whatever the retention, so a very short poll interval
# cannot grow the store without limit (14 days at 1-minute polls is ~20k points).
MAX_POINTS_PER_SERIES = 20_000

# Small facts shared through `set_meta`/`get_meta`, one name each.
META_LAST_CYCLE = "last_cycle_at"  # ISO time of the last committed poll cycle
META_FORECASTS = "forecasts"  # that cycle's forecasts (bot.forecast.encode_forecasts)
META_SLACK_NOT_BEFORE = "slack_not_before"  # no delivery before this ISO time (429/backoff)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One grouped alert message waiting for (or past) delivery."""

    id: str  # sorts in creation order
    created_at: datetime
    events: tuple[Event, ...]
    attempts: int = 0
    last_error: str | None = None

    @property
    def keys(self) -> list[str]:
        return sorted({event.key for event in self.events})

    @staticmethod
    def new_id(now: datetime) -> str:
        # Creation time first so ids sort in order across processes; random tail for uniqueness.
        return f"{int(now.timestamp() * 1_000_000):020d}-{uuid.uuid4().hex[:12]}"

    def events_json(self) -> str:
        return json.dumps([e.to_json() for e in self.events], separators=(",", ":"))

    @staticmethod
    def events_from_json(raw: str) -> tuple[Event, ...]:
        return tuple(Event.from_json(item) for item in json.loads(raw))


@dataclass(frozen=True, slots=True)
class CycleCommit:
    """Everything one poll cycle writes, applied atomically by `commit_cycle`."""

    readings: Sequence[ScopeReading]
    book: AlertBook
    message: OutboxMessage | None = None


class StateStore(Protocol):
    """Async state store. Every method raises bot.errors.StoreError when the backend is down."""

    async def open(self) -> None:
        """Connect and create or migrate the schema. Idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the backend answers."""

    # alert state -----------------------------------------------------------------------
    async def load_book(self) -> tuple[AlertBook, int]:
        """The alert state and its version (0 when nothing was ever stored)."""

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        """Atomically: store the readings as latest, append successful values to history,
        replace the alert book (version becomes expected_version + 1) and append the message
        to the outbox. Returns False and writes nothing when the stored version is no longer
        `expected_version` (another process committed first)."""

    # readings and history --------------------------------------------------------------
    async def save_readings(self, readings: Sequence[ScopeReading]) -> None:
        """Store readings as latest and append to history, without touching alert state
        (used by the slash command's live refresh)."""

    async def latest_readings(self) -> dict[str, ScopeReading]:
        """The most recent reading of every scope, by scope name."""

    async def history(
        self, scope: str, quota_type: QuotaType, since: datetime
    ) -> list[tuple[datetime, int]]:
        """Successful values of one series read at or after `since`, oldest first."""

    async def prune_history(self, before: datetime) -> int:
        """Drop history older than `before` (and delivered messages); returns rows removed."""

    # outbox ----------------------------------------------------------------------------
    async def pending_messages(self, limit: int = 50) -> list[OutboxMessage]:
        """Undelivered messages, oldest first (claimed ones included)."""

    async def claim_message(
        self, message_id: str, holder: str, until: datetime, now: datetime
    ) -> bool:
        """Take the right to send a message until `until`. True if this holder now has it
        (unclaimed, claim expired, or already ours); False if someone else holds it or it
        was delivered."""

    async def mark_delivered(self, message_id: str, now: datetime) -> None:
        """The message reached Slack: it leaves the queue, and in the same atomic step the
        alert book's entries for its keys stop being pending (`AlertBook.mark_delivered`)."""

    async def record_failure(self, message_id: str, error: str, now: datetime) -> None:
        """A delivery attempt failed: count it, keep the message queued, release the claim."""

    # poller lease (one poller among replicas) ------------------------------------------
    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take or renew the poller lease. True if `holder` holds it for `ttl` from now."""

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if `holder` holds it."""

    # small shared facts (last cycle time, delivery problems) -----------------------------
    async def set_meta(self, key: str, value: str) -> None: ...

    async def get_meta(self, key: str) -> str | None: ...


# JSON codec for readings, shared by the backends --------------------------------------------


def reading_to_json(reading: ScopeReading) -> str:
    err = reading.error
    return json.dumps(
        {
            "scope": reading.scope,
            "kind": reading.kind.value,
            "read_at": reading.read_at.isoformat(),
            "balances": (
                {t.value: v for t, v in reading.balances.items()}
                if reading.balances is not None
                else None
            ),
            "error": (
                {"code": err.code, "message": err.message, "config": err.config} if err else None
            ),
            "unassigned": reading.unassigned,
        },
        separators=(",", ":"),
    )


def reading_from_json(raw: str) -> ScopeReading:
    d = json.loads(raw)
    err = d.get("error")
    balances = d.get("balances")
    return ScopeReading(
        scope=d["scope"],
        kind=ScopeKind(d["kind"]),
        read_at=datetime.fromisoformat(d["read_at"]),
        balances=({QuotaType(t): v for t, v in balances.items()} if balances is not None else None),
        error=(
            FetchError(code=err.get("code"), message=err["message"], config=err["config"])
            if err
            else None
        ),
        unassigned=bool(d.get("unassigned", False)),
    )


def history_points(reading: ScopeReading) -> list[tuple[QuotaType, int]]:
    """The values of a reading that belong in history: successful, allocated ones."""
    if reading.error is not None or reading.balances is None:
        return []
    return [(t, v) for t, v in reading.balances.items() if v is not None]
