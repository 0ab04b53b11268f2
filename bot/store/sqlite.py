"""SQLite state store: the embedded default.

One connection, used from worker threads (asyncio.to_thread) behind a lock, so the event loop
never blocks on disk. WAL mode lets readers run beside the writer; every write runs in one
`BEGIN IMMEDIATE` transaction, which also serialises two processes sharing the file.
The schema version lives in `PRAGMA user_version`; `_MIGRATIONS[n]` upgrades n -> n+1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from bot.alerts_types import AlertBook
from bot.clock import Clock, utcnow
from bot.errors import StoreError
from bot.quota import QuotaType, ScopeReading
from bot.store._util import Upkeep, from_us, to_us
from bot.store.base import (
    DEFAULT_RETENTION,
    MAX_POINTS_PER_SERIES,
    CycleCommit,
    OutboxMessage,
    history_points,
    reading_from_json,
    reading_to_json,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
_LEASE = "poller"

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE book (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE latest (scope TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE history (
    scope TEXT NOT NULL,
    type TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (scope, type, ts_us)
) WITHOUT ROWID;
CREATE INDEX history_ts ON history (ts_us);
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    events_json TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_by TEXT,
    claim_until_us INTEGER,
    delivered_at_us INTEGER
);
CREATE TABLE lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at_us INTEGER NOT NULL);
"""


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V1)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the surrounding transaction; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


# _MIGRATIONS[n] takes a database at version n to version n + 1.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_1]
SCHEMA_VERSION = len(_MIGRATIONS)


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///rel/path` -> `rel/path`; `sqlite:////abs/path` -> `/abs/path`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("expected sqlite:///PATH")
    return url[len(prefix) :]


class SqliteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
        max_points: int = MAX_POINTS_PER_SERIES,
        busy_timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = str(path)
        self._retention = retention
        self._clock = clock or utcnow
        self._max_points = max_points
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._upkeep = Upkeep()
        # Series written since the last upkeep: only those can have grown past the cap.
        self._touched: set[tuple[str, str]] = set()

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._locked, self._open)

    async def close(self) -> None:
        await asyncio.to_thread(self._locked, self._close)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    def _open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            parent = Path(self.path).resolve().parent
            if not parent.is_dir():
                raise StoreError(f"STATE_URL: directory {parent} does not exist")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # used from worker threads, one at a time (lock)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: cannot open {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL keeps every committed transaction across a process crash.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite: cannot open {self.path}: {exc}") from exc
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"sqlite: {self.path} has schema version {version}, newer than this bot "
                    f"understands ({SCHEMA_VERSION}); upgrade the bot or use another STATE_URL"
                )
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](conn)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # plumbing --------------------------------------------------------------------------
    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._conn is None:
                    raise StoreError("sqlite store is not open")
                try:
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite: {exc}") from exc

        return await asyncio.to_thread(call)

    # alert state -----------------------------------------------------------------------
    async def load_book(self) -> tuple[AlertBook, int]:
        def load(conn: sqlite3.Connection) -> tuple[AlertBook, int]:
            return _read_book(conn)

        return await self._run(load)

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        book_json = json.dumps(commit.book.to_json(), separators=(",", ":"))

        def write(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                _, version = _read_book(conn)
                if version != expected_version:
                    return False
                self._write_readings(conn, commit.readings)
                _write_book(conn, book_json, version + 1)
                if commit.message is not None:
                    msg = commit.message
                    conn.execute(
                        "INSERT INTO outbox (id, created_at, events_json, attempts, last_error)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            msg.id,
                            msg.created_at.isoformat(),
                            msg.events_json(),
                            msg.attempts,
                            msg.last_error,
                        ),
                    )
            self._maybe_upkeep(conn)
            return True

        return await self._run(write)

    # readings and history --------------------------------------------------------------
    async def save_readings(self, readings: Sequence[ScopeReading]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                self._write_readings(conn, readings)
            self._maybe_upkeep(conn)

        await self._run(write)

    async def latest_readings(self) -> dict[str, ScopeReading]:
        def read(conn: sqlite3.Connection) -> dict[str, ScopeReading]:
            rows = conn.execute("SELECT scope, json FROM latest ORDER BY scope").fetchall()
            return {scope: reading_from_json(raw) for scope, raw in rows}

        return await self._run(read)

    async def history(
        self, scope: str, quota_type: QuotaType, since: datetime
    ) -> list[tuple[datetime, int]]:
        def read(conn: sqlite3.Connection) -> list[tuple[datetime, int]]:
            rows = conn.execute(
                "SELECT ts_us, value FROM history WHERE scope = ? AND type = ? AND ts_us >= ?"
                " ORDER BY ts_us",
                (scope, quota_type.value, to_us(since)),
            ).fetchall()
            return [(from_us(ts), value) for ts, value in rows]

        return await self._run(read)

    async def prune_history(self, before: datetime) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                series = conn.execute("SELECT DISTINCT scope, type FROM history").fetchall()
                return self._prune(conn, before, {(s, t) for s, t in series})

        return await self._run(prune)

    # outbox ----------------------------------------------------------------------------
    async def pending_messages(self, limit: int = 50) -> list[OutboxMessage]:
        def read(conn: sqlite3.Connection) -> list[OutboxMessage]:
            rows = conn.execute(
                "SELECT id, created_at, events_json, attempts, last_error FROM outbox"
                " WHERE delivered_at_us IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                OutboxMessage(
                    id=mid,
                    created_at=datetime.fromisoformat(created),
                    events=OutboxMessage.events_from_json(events),
                    attempts=attempts,
                    last_error=last_error,
                )
                for mid, created, events, attempts, last_error in rows
            ]

        return await self._run(read)

    async def claim_message(
        self, message_id: str, holder: str, until: datetime, now: datetime
    ) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            # One conditional UPDATE: the check and the claim cannot interleave.
            cursor = conn.execute(
                "UPDATE outbox SET claimed_by = ?, claim_until_us = ?"
                " WHERE id = ? AND delivered_at_us IS NULL"
                " AND (claimed_by IS NULL OR claimed_by = ? OR claim_until_us <= ?)",
                (holder, to_us(until), message_id, holder, to_us(now)),
            )
            return cursor.rowcount == 1

        return await self._run(claim)

    async def mark_delivered(self, message_id: str, now: datetime) -> None:
        def deliver(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT events_json FROM outbox WHERE id = ? AND delivered_at_us IS NULL",
                    (message_id,),
                ).fetchone()
                if row is None:
                    return
                conn.execute(
                    "UPDATE outbox SET delivered_at_us = ?, claimed_by = NULL,"
                    " claim_until_us = NULL WHERE id = ?",
                    (to_us(now), message_id),
                )
                keys = sorted({e.key for e in OutboxMessage.events_from_json(row[0])})
                book, version = _read_book(conn)
                updated = book.mark_delivered(keys, now)
                # An unchanged book keeps its version, so an in-flight cycle need not retry.
                if updated != book:
                    _write_book(
                        conn, json.dumps(updated.to_json(), separators=(",", ":")), version + 1
                    )

        await self._run(deliver)

    async def record_failure(self, message_id: str, error: str, now: datetime) -> None:
        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, claimed_by = NULL,"
                " claim_until_us = NULL WHERE id = ? AND delivered_at_us IS NULL",
                (error, message_id),
            )

        await self._run(fail)

    # poller lease ----------------------------------------------------------------------
    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        def acquire(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO lease (name, holder, expires_at_us) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at_us = excluded.expires_at_us"
                " WHERE lease.holder = excluded.holder OR lease.expires_at_us <= ?",
                (_LEASE, holder, to_us(now + ttl), to_us(now)),
            )
            return cursor.rowcount == 1

        return await self._run(acquire)

    async def release_lease(self, holder: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "DELETE FROM lease WHERE name = ? AND holder = ?", (_LEASE, holder)
            )
        )

    # meta ------------------------------------------------------------------------------
    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    async def get_meta(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    # internals (run in the worker thread, lock held) -----------------------------------
    def _write_readings(self, conn: sqlite3.Connection, readings: Sequence[ScopeReading]) -> None:
        for reading in readings:
            conn.execute(
                "INSERT INTO latest (scope, json) VALUES (?, ?)"
                " ON CONFLICT (scope) DO UPDATE SET json = excluded.json",
                (reading.scope, reading_to_json(reading)),
            )
            ts = to_us(reading.read_at)
            for quota_type, value in history_points(reading):
                conn.execute(
                    "INSERT OR REPLACE INTO history (scope, type, ts_us, value)"
                    " VALUES (?, ?, ?, ?)",
                    (reading.scope, quota_type.value, ts, value),
                )
                self._touched.add((reading.scope, quota_type.value))

    def _maybe_upkeep(self, conn: sqlite3.Connection) -> None:
        now = self._clock()
        if not self._upkeep.due(now):
            return
        touched, self._touched = self._touched, set()
        try:
            with _transaction(conn):
                self._prune(conn, now - self._retention, touched)
        except sqlite3.Error as exc:
            # The write it follows has committed; failing that call now would mislead.
            log.warning("sqlite store upkeep failed: %s", exc)

    def _prune(
        self, conn: sqlite3.Connection, before: datetime, series: set[tuple[str, str]]
    ) -> int:
        cut = to_us(before)
        removed = conn.execute("DELETE FROM history WHERE ts_us < ?", (cut,)).rowcount
        for scope, quota_type in series:
            row = conn.execute(
                "SELECT ts_us FROM history WHERE scope = ? AND type = ?"
                " ORDER BY ts_us DESC LIMIT 1 OFFSET ?",
                (scope, quota_type, self._max_points),
            ).fetchone()
            if row is not None:
                removed += conn.execute(
                    "DELETE FROM history WHERE scope = ? AND type = ? AND ts_us <= ?",
                    (scope, quota_type, row[0]),
                ).rowcount
        removed += conn.execute(
            "DELETE FROM outbox WHERE delivered_at_us IS NOT NULL AND delivered_at_us < ?",
            (cut,),
        ).rowcount
        return removed


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-then-write cannot be overtaken by
    # another process between the read and the write.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _read_book(conn: sqlite3.Connection) -> tuple[AlertBook, int]:
    row = conn.execute("SELECT version, json FROM book WHERE id = 1").fetchone()
    if row is None:
        return AlertBook(), 0
    return AlertBook.from_json(json.loads(row[1])), int(row[0])


def _write_book(conn: sqlite3.Connection, book_json: str, version: int) -> None:
    conn.execute(
        "INSERT INTO book (id, version, json) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version, json = excluded.json",
        (version, book_json),
    )
