"""The state store: what the monitor, the deliverer and the web server remember.

`StateStore` holds every algorithm once (encoding, optimistic concurrency on the alert book,
retention upkeep); a `Backend` (SQLite: the embedded default; Redis: replicas) provides only
atomic primitives over encoded values. Both backends pass the one suite in tests/test_store.py.

Adding state means one codec or algorithm here plus one primitive per backend: e.g. a record
committed atomically with the cycle is a field of `Batch` that each backend's `write` applies
inside its transaction (SQLite) or script (Redis).
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.alerts_types import AlertBook, Event, Op
from bot.clock import Clock, utcnow
from bot.errors import StoreError
from bot.quota import FetchError, QuotaType, ScopeKind, ScopeReading

log = logging.getLogger(__name__)

DEFAULT_RETENTION = timedelta(days=14)
# A hard cap per (scope, type) series whatever the retention, so a very short poll interval
# cannot grow the store without limit (14 days at 1-minute polls is ~20k points).
MAX_POINTS_PER_SERIES = 20_000
# Delivery reports seen (their replay keys) are remembered until the sender's window closes, at
# most this many at once: the soonest to be forgotten go first when a flood exceeds it.
MAX_SEEN_REPORTS = 100_000
# Per-minute report counts are kept this long (the slash reply shows the last hour).
REPORT_COUNT_RETENTION = timedelta(hours=2)
# Retention pruning is housekeeping: doing it on every write would cost more than it saves.
UPKEEP_EVERY = timedelta(minutes=1)
# Checking a series against the cap reads up to MAX_POINTS_PER_SERIES index entries (SQLite:
# 0.5 s for 800 series at the cap, in the store's lock), so each upkeep checks one slice of
# the series, in turn: each series once an hour, overshooting by at most an hour of polls.
CAP_SLICES = 60
# mark_delivered is optimistic (compare-and-set on the book version); a commit landing in
# between makes it read again. Far more attempts than any real contention needs.
CAS_ATTEMPTS = 50

# Small facts shared through `set_meta`/`get_meta`, one name each.
META_LAST_CYCLE = "last_cycle_at"  # ISO time of the last committed poll cycle
META_FORECASTS = "forecasts"  # that cycle's forecasts (bot.forecast.encode_forecasts)
META_BURNS = "burns"  # that cycle's last-hour and usual burns (bot.forecast.encode_burns)
META_SLACK_NOT_BEFORE = "slack_not_before"  # no delivery before this ISO time (429/backoff)
# The bot's own alert channel: Slack (Web API or webhook) or the terminal. Other destinations
# (team chats) have queues of their own under their own names.
PRIMARY = "slack"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Integer microseconds since the epoch: exact, unlike float seconds."""
    if moment.tzinfo is None:
        # The bot works in aware UTC; a naive value is read as UTC rather than local time.
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def from_us(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message for one destination, waiting for (or past) delivery.

    Either one cycle's events grouped into one message (`op` None), or one Slack incident
    operation (post a root, reply in its thread, update it). Each destination drains its own
    queue in id order, so an incident's root is always sent before its replies and updates.
    """

    id: str  # sorts in creation order
    created_at: datetime
    events: tuple[Event, ...]
    attempts: int = 0
    last_error: str | None = None
    destination: str = PRIMARY
    op: Op | None = None
    # Set when a send started that may have reached the destination (no answer came back);
    # the next attempt looks the message up first instead of sending it twice.
    attempted_at: datetime | None = None

    @property
    def kind(self) -> str:
        """`grouped`, or the incident operation: `root`, `reply`, `update`."""
        return self.op.kind.value if self.op is not None else "grouped"

    @property
    def keys(self) -> list[str]:
        if self.op is not None:
            return sorted(self.op.keys)
        return sorted({event.key for event in self.events})

    @staticmethod
    def new_id(now: datetime) -> str:
        # Creation time first so ids sort in order across processes; random tail for uniqueness.
        return f"{int(now.timestamp() * 1_000_000):020d}-{uuid.uuid4().hex[:12]}"

    def encode(self) -> StoredMessage:
        return StoredMessage(
            id=self.id,
            created_at=self.created_at.isoformat(),
            events=json.dumps([e.to_json() for e in self.events], separators=(",", ":")),
            attempts=self.attempts,
            last_error=self.last_error,
            destination=self.destination,
            op=json.dumps(self.op.to_json(), separators=(",", ":")) if self.op else None,
            attempted_at_us=to_us(self.attempted_at) if self.attempted_at else None,
        )

    @classmethod
    def decode(cls, stored: StoredMessage) -> OutboxMessage:
        return cls(
            id=stored.id,
            created_at=datetime.fromisoformat(stored.created_at),
            events=decode_events(stored.events),
            attempts=stored.attempts,
            last_error=stored.last_error,
            destination=stored.destination,
            op=Op.from_json(json.loads(stored.op)) if stored.op else None,
            attempted_at=(
                from_us(stored.attempted_at_us) if stored.attempted_at_us is not None else None
            ),
        )


def decode_events(raw: str) -> tuple[Event, ...]:
    return tuple(Event.from_json(item) for item in json.loads(raw))


@dataclass(frozen=True, slots=True)
class CycleCommit:
    """Everything one poll cycle writes, applied atomically by `commit_cycle`."""

    readings: Sequence[ScopeReading]
    book: AlertBook
    messages: Sequence[OutboxMessage] = ()


# What the backends store: encoded values only ------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    created_at: str  # ISO time
    events: str  # JSON list of Event.to_json()
    attempts: int = 0
    last_error: str | None = None
    destination: str = PRIMARY
    op: str | None = None  # JSON of an incident operation (Op.to_json())
    attempted_at_us: int | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a delivered message became: its Slack `ts`, and the incident root it now is."""

    ts: str | None = None
    root_id: str | None = None  # the root (outbox id) whose message is now `ts`


@dataclass(frozen=True, slots=True)
class Point:
    scope: str
    quota_type: str
    ts_us: int
    value: int


@dataclass(frozen=True, slots=True)
class Batch:
    """One atomic write: latest readings, history points, and optionally the alert book (under
    a version check) and outbox messages (each into its destination's queue)."""

    latest: dict[str, str] = field(default_factory=dict)  # scope -> reading JSON
    points: list[Point] = field(default_factory=list)
    book: str | None = None  # the new alert book's JSON; None leaves it alone
    messages: list[StoredMessage] = field(default_factory=list)


class Backend(Protocol):
    """Atomic primitives over encoded values. Every method raises StoreError when down."""

    async def open(self) -> None:
        """Connect and create or migrate the schema. Idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def read_book(self) -> tuple[str | None, int]:
        """The alert book's JSON (None if never stored) and its version (0 if never stored)."""

    async def write(self, batch: Batch, expected_version: int | None) -> bool:
        """Apply `batch` atomically. With `expected_version`, only if the book's version is
        still that (returns False and writes nothing otherwise), and the book's version
        becomes expected_version + 1. Without it, `batch.book` must be None."""

    async def latest(self) -> dict[str, str]:
        """Scope -> latest reading JSON."""

    async def history(self, scope: str, quota_type: str, since_us: int) -> list[tuple[int, int]]:
        """(ts_us, value) of one series at or after `since_us`, oldest first."""

    async def histories(
        self, series: Sequence[tuple[str, str]], since_us: int
    ) -> list[list[tuple[int, int]]]:
        """`history` of many series at once (a rebuild after start-up or a takeover), in
        the order given: one round trip, and the backend may prepare for a bulk read."""

    async def prune(self, before_us: int, capped: set[tuple[str, str]] | None) -> int:
        """Drop history (and delivered messages) older than `before_us`, and cap the series in
        `capped` (every series when None) to the backend's maximum; returns items removed."""

    async def pending(self, limit: int, destination: str) -> list[StoredMessage]:
        """Undelivered messages of one destination, oldest first (claimed ones included)."""

    async def queued(self, message_id: str) -> StoredMessage | None:
        """An undelivered message, or None."""

    async def claim(self, message_id: str, holder: str, until: datetime, now: datetime) -> bool:
        """Take the right to send an undelivered message until `until`, unless another holder
        has an unexpired claim; on success set its attempted_at to `now` unless already set."""

    async def deliver(
        self,
        message_id: str,
        now: datetime,
        expected_version: int,
        book: str | None,
        receipt: Receipt,
    ) -> bool:
        """Atomically: unless the book's version moved from `expected_version` (then False,
        nothing written), take the message out of the queue, keep `receipt.ts` as its ts (and
        as `receipt.root_id`'s, when given) and, when `book` is given, store it as version
        expected_version + 1. True (and nothing written) if already delivered."""

    async def delivered_ts(self, message_id: str) -> str | None:
        """The ts kept for a delivered message, or None."""

    async def record_failure(self, message_id: str, error: str, maybe_sent: bool) -> None:
        """Count a failed attempt on an undelivered message and release its claim; unless
        `maybe_sent`, clear its attempted_at."""

    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool: ...

    async def release_lease(self, holder: str) -> None: ...

    async def set_meta(self, key: str, value: str) -> None: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def remember_report(
        self, key: str, forget_us: int, scope: str, minute: int, outcome: str, now_us: int
    ) -> bool:
        """Atomically: unless `key` is remembered with a forget time after `now_us`, remember
        it until `forget_us` and add one to the count of (scope, minute, outcome). True when it
        was new. At most the backend's maximum of keys is kept: the soonest to be forgotten go
        first; counts older than REPORT_COUNT_RETENTION may be dropped."""

    async def forget_report(self, key: str, scope: str, minute: int, outcome: str) -> None:
        """Undo `remember_report` (its key and its count)."""

    async def report_counts(
        self, scope: str, first_minute: int, last_minute: int
    ) -> dict[str, int]:
        """Counts per outcome of `scope` over the minutes first..last (inclusive)."""


# The store ------------------------------------------------------------------------------------


class StateStore:
    """The bot's shared state over one backend. Every method raises StoreError when down."""

    def __init__(
        self,
        backend: Backend,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
    ) -> None:
        self.backend = backend
        self._retention = retention
        self._clock = clock or utcnow
        self._last_upkeep: datetime | None = None
        # Series written since their slice was last checked: only those can have grown past
        # the cap.
        self._touched: set[tuple[str, str]] = set()
        self._cap_turn = 0

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        await self.backend.close()

    async def ping(self) -> None:
        await self.backend.ping()

    # alert state -----------------------------------------------------------------------
    async def load_book(self) -> tuple[AlertBook, int]:
        """The alert state and its version (0 when nothing was ever stored)."""
        raw, version = await self.backend.read_book()
        return (decode_book(raw) if raw is not None else AlertBook()), version

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        """Atomically: store the readings as latest, append successful values to history,
        replace the alert book (version becomes expected_version + 1) and append the messages
        to their destinations' queues. Returns False and writes nothing when the stored
        version is no longer `expected_version` (another process committed first)."""
        batch = self._batch(commit.readings)
        batch = Batch(
            latest=batch.latest,
            points=batch.points,
            book=encode_book(commit.book),
            messages=[m.encode() for m in commit.messages],
        )
        if not await self.backend.write(batch, expected_version):
            return False
        self._note_written(batch)
        await self._maybe_upkeep()
        return True

    # readings and history --------------------------------------------------------------
    async def save_readings(self, readings: Sequence[ScopeReading]) -> None:
        """Store readings as latest and append to history, without touching alert state
        (the slash command's live refresh)."""
        batch = self._batch(readings)
        await self.backend.write(batch, None)
        self._note_written(batch)
        await self._maybe_upkeep()

    async def latest_readings(self) -> dict[str, ScopeReading]:
        """The most recent reading of every scope, by scope name."""
        raw = await self.backend.latest()
        return {scope: reading_from_json(raw[scope]) for scope in sorted(raw)}

    async def history(
        self, scope: str, quota_type: QuotaType, since: datetime
    ) -> list[tuple[datetime, int]]:
        """Successful values of one series read at or after `since`, oldest first."""
        points = await self.backend.history(scope, quota_type.value, to_us(since))
        return [(from_us(ts), value) for ts, value in points]

    async def histories(
        self, series: Sequence[tuple[str, QuotaType]], since: datetime
    ) -> dict[tuple[str, QuotaType], list[tuple[datetime, int]]]:
        """`history` of many series, read at once."""
        found = await self.backend.histories(
            [(scope, quota_type.value) for scope, quota_type in series], to_us(since)
        )
        return {
            key: [(from_us(ts), value) for ts, value in points]
            for key, points in zip(series, found, strict=True)
        }

    async def prune_history(self, before: datetime) -> int:
        """Drop history older than `before` (and delivered messages); returns items removed."""
        return await self.backend.prune(to_us(before), None)

    # outbox ----------------------------------------------------------------------------
    async def pending_messages(
        self, limit: int = 50, destination: str = PRIMARY
    ) -> list[OutboxMessage]:
        """Undelivered messages of one destination, oldest first (claimed ones included)."""
        if limit <= 0:
            return []
        return [OutboxMessage.decode(m) for m in await self.backend.pending(limit, destination)]

    async def claim_message(
        self, message_id: str, holder: str, until: datetime, now: datetime
    ) -> bool:
        """Take the right to send a message until `until`. True if this holder now has it
        (unclaimed, claim expired, or already ours); False if someone else holds it or it
        was delivered. A successful claim sets `attempted_at` (if unset) to `now`: from
        here on a send may reach the destination without us hearing back."""
        return await self.backend.claim(message_id, holder, until, now)

    async def mark_delivered(
        self, message_id: str, now: datetime, receipt: Receipt | None = None
    ) -> None:
        """The message reached its destination: it leaves the queue, and in the same atomic
        step the alert book's entries for its keys stop being pending
        (`AlertBook.mark_delivered`). With a receipt's `root_id`, its `ts` becomes that
        incident root's message (`AlertBook.record_root`, and `delivered_ts(root_id)`)."""
        receipt = receipt or Receipt()
        for _ in range(CAS_ATTEMPTS):
            stored = await self.backend.queued(message_id)
            if stored is None:
                return  # already delivered (or never queued)
            book, version = await self.load_book()
            updated = book.mark_delivered(OutboxMessage.decode(stored).keys, now)
            if receipt.ts is not None and receipt.root_id is not None:
                updated = updated.record_root(receipt.root_id, receipt.ts)
            # An unchanged book keeps its version, so an in-flight cycle need not retry.
            new_book = None if updated == book else encode_book(updated)
            if await self.backend.deliver(message_id, now, version, new_book, receipt):
                return
        raise StoreError("could not mark a message delivered: the alert state kept changing")

    async def delivered_ts(self, message_id: str) -> str | None:
        """The Slack `ts` kept for a delivered message (None: unknown or not delivered)."""
        return await self.backend.delivered_ts(message_id)

    async def record_failure(
        self, message_id: str, error: str, now: datetime, *, maybe_sent: bool = False
    ) -> None:
        """A delivery attempt failed: count it, keep the message queued, release the claim.
        `maybe_sent` False (the destination answered with an error) clears `attempted_at`;
        True (timeout, connection lost) keeps it, so the next attempt looks first."""
        await self.backend.record_failure(message_id, error, maybe_sent)

    # poller lease (one poller among replicas) ------------------------------------------
    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take or renew the poller lease. True if `holder` holds it for `ttl` from now."""
        return await self.backend.acquire_lease(holder, ttl, now)

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if `holder` holds it."""
        await self.backend.release_lease(holder)

    # small shared facts ----------------------------------------------------------------
    async def set_meta(self, key: str, value: str) -> None:
        await self.backend.set_meta(key, value)

    async def get_meta(self, key: str) -> str | None:
        return await self.backend.get_meta(key)

    # delivery reports ------------------------------------------------------------------
    async def record_report(
        self, key: str, forget_after: datetime, scope: str, outcome: str, now: datetime
    ) -> bool:
        """Atomically: unless `key` is remembered already (a sender's retry, or the same report
        at another replica), remember it until `forget_after` and count `outcome` for `scope`
        in the minute of `now`. True when it was new."""
        minute = report_minute(now)
        return await self.backend.remember_report(
            key, to_us(forget_after), scope, minute, outcome, to_us(now)
        )

    async def unrecord_report(self, key: str, scope: str, outcome: str, at: datetime) -> None:
        """Undo a `record_report` made at `at` whose report could not be handled (the sender
        retries it)."""
        await self.backend.forget_report(key, scope, report_minute(at), outcome)

    async def report_counts(self, scope: str, since: datetime, now: datetime) -> dict[str, int]:
        """Reports counted for `scope` per outcome from the minute of `since` to that of `now`."""
        return await self.backend.report_counts(scope, report_minute(since), report_minute(now))

    # internals -------------------------------------------------------------------------
    @staticmethod
    def _batch(readings: Sequence[ScopeReading]) -> Batch:
        latest: dict[str, str] = {}
        points: list[Point] = []
        for reading in readings:
            latest[reading.scope] = reading_to_json(reading)
            ts = to_us(reading.read_at)
            points += [
                Point(reading.scope, quota_type.value, ts, value)
                for quota_type, value in history_points(reading)
            ]
        return Batch(latest=latest, points=points)

    def _note_written(self, batch: Batch) -> None:
        self._touched.update((p.scope, p.quota_type) for p in batch.points)

    async def _maybe_upkeep(self) -> None:
        now = self._clock()
        if self._last_upkeep is not None and now - self._last_upkeep < UPKEEP_EVERY:
            return
        self._last_upkeep = now
        turn, self._cap_turn = self._cap_turn, (self._cap_turn + 1) % CAP_SLICES
        due = {key for key in self._touched if cap_slice(key) == turn}
        self._touched -= due
        try:
            await self.backend.prune(to_us(now - self._retention), due)
        except StoreError as exc:
            # The write it follows has committed; failing that call now would mislead.
            log.warning("state store upkeep failed: %s", exc)


def cap_slice(series: tuple[str, str]) -> int:
    """The upkeep turn (of CAP_SLICES) in which a series is checked against the cap."""
    return zlib.crc32("/".join(series).encode()) % CAP_SLICES


def report_minute(moment: datetime) -> int:
    """The minute (since the epoch) a report is counted in."""
    return int(moment.timestamp() // 60)


# Codecs ---------------------------------------------------------------------------------------


def encode_book(book: AlertBook) -> str:
    return json.dumps(book.to_json(), separators=(",", ":"))


def decode_book(raw: str) -> AlertBook:
    return AlertBook.from_json(json.loads(raw))


def reading_to_json(reading: ScopeReading) -> str:
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
            "error": reading.error.to_json() if reading.error else None,
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
        error=FetchError.from_json(err) if err else None,
        unassigned=bool(d.get("unassigned", False)),
    )


def history_points(reading: ScopeReading) -> list[tuple[QuotaType, int]]:
    """The values of a reading that belong in history: successful, allocated ones."""
    if reading.error is not None or reading.balances is None:
        return []
    return [(t, v) for t, v in reading.balances.items() if v is not None]
