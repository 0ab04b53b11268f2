"""SQLite state store: the embedded default.

One connection, used from worker threads (asyncio.to_thread) behind a lock, so the event loop
never blocks on disk. WAL mode lets readers run beside the writer; every write runs in one
`BEGIN IMMEDIATE` transaction, which also serialises two processes sharing the file.
The schema version lives in `PRAGMA user_version`; `_MIGRATIONS[n]` upgrades n -> n+1.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from bot.clock import Clock
from bot.errors import StoreError
from bot.store.base import (
    DEFAULT_RETENTION,
    MAX_POINTS_PER_SERIES,
    MAX_SEEN_REPORTS,
    REPORT_COUNT_RETENTION,
    Batch,
    Receipt,
    StateStore,
    StoredMessage,
    to_us,
)

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


# Version 2: per-destination queues, incident operations, look-up before a re-send, kept ts.
_SCHEMA_V2 = """
ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'slack';
ALTER TABLE outbox ADD COLUMN op_json TEXT;
ALTER TABLE outbox ADD COLUMN attempted_at_us INTEGER;
ALTER TABLE outbox ADD COLUMN ts TEXT;
CREATE INDEX outbox_queue ON outbox (destination, delivered_at_us, id);
"""


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V2)


_SCHEMA_V3 = """
CREATE TABLE seen_reports (key TEXT PRIMARY KEY, expires_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX seen_reports_expiry ON seen_reports (expires_us);
CREATE TABLE report_counts (
    scope TEXT NOT NULL,
    minute INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (scope, minute, outcome)
) WITHOUT ROWID;
"""


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    """Delivery reports: the keys seen (replays) and per-minute counts."""
    _run_script(conn, _SCHEMA_V3)


# Version 4: new points go to a journal ordered by time. `history` is ordered by series, so
# one cycle's points land on one page per series once a series fills a page: the pages a
# commit dirties grew with the history (200 apps: 6 -> 14 ms per commit over the first ~400
# cycles from an empty file), and every poll wrote a 4 KiB page per series to the WAL. The
# journal takes a cycle's points on a few pages at its end; they move to `history` in bulk
# (`_compact`), where one page per series then takes many polls. `history_recent_size`
# counts the points written to the journal since it was emptied (at least its size), so any
# process can tell when to move it without scanning it.
_SCHEMA_V4 = """
CREATE TABLE history_recent (
    ts_us INTEGER NOT NULL,
    scope TEXT NOT NULL,
    type TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (ts_us, scope, type)
) WITHOUT ROWID;
CREATE TABLE history_recent_size (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    points INTEGER NOT NULL
);
INSERT INTO history_recent_size (id, points) VALUES (1, 0);
"""


def _migrate_to_4(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V4)


# _MIGRATIONS[n] takes a database at version n to version n + 1.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
]
SCHEMA_VERSION = len(_MIGRATIONS)

# The journal moves to `history` once it holds this many points (about 10 MB; with 800
# series, one move every 327 polls, which writes each series' page once), and on open and
# on a full prune.
COMPACT_POINTS = 262_144
# A series read scans the journal (about 25 ns a point: 7 ms when full), so a bulk read of
# many series (a rebuild after start-up or a takeover) first moves a journal larger than this
# (a sixteenth of COMPACT_POINTS, kept in that proportion when a test lowers the limit).
READ_COMPACT_POINTS = 16_384


# In StoredMessage's field order.
_MESSAGE_COLUMNS = (
    "id, created_at, events_json, attempts, last_error, destination, op_json, attempted_at_us"
)


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///rel/path` -> `rel/path`; `sqlite:////abs/path` -> `/abs/path`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("expected sqlite:///PATH")
    return url[len(prefix) :]


class SqliteStore(StateStore):
    """The state store on SQLite (a file, or `:memory:` for one process)."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
        max_points: int = MAX_POINTS_PER_SERIES,
        busy_timeout: float = BUSY_TIMEOUT_S,
        max_seen: int = MAX_SEEN_REPORTS,
        compact_points: int = COMPACT_POINTS,
    ) -> None:
        self.sqlite = SqliteBackend(
            path,
            max_points=max_points,
            busy_timeout=busy_timeout,
            max_seen=max_seen,
            compact_points=compact_points,
        )
        self.path = self.sqlite.path
        super().__init__(self.sqlite, retention=retention, clock=clock)


class SqliteBackend:
    def __init__(
        self,
        path: str | Path,
        *,
        max_points: int = MAX_POINTS_PER_SERIES,
        busy_timeout: float = BUSY_TIMEOUT_S,
        max_seen: int = MAX_SEEN_REPORTS,
        compact_points: int = COMPACT_POINTS,
    ) -> None:
        self.path = str(path)
        self._max_points = max_points
        self._max_seen = max_seen
        self._compact_points = compact_points
        self._read_compact_points = compact_points * READ_COMPACT_POINTS // COMPACT_POINTS
        # Trimming the seen-report keys is paced by count: a flood is what makes it due.
        self._reports_since_trim = 0
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

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
            with _transaction(conn):
                _compact(conn)
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

    # alert state and writes ------------------------------------------------------------
    async def read_book(self) -> tuple[str | None, int]:
        return await self._run(_read_book)

    async def write(self, batch: Batch, expected_version: int | None) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                if expected_version is not None:
                    _, version = _read_book(conn)
                    if version != expected_version:
                        return False
                conn.executemany(
                    "INSERT INTO latest (scope, json) VALUES (?, ?)"
                    " ON CONFLICT (scope) DO UPDATE SET json = excluded.json",
                    batch.latest.items(),
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO history_recent (scope, type, ts_us, value)"
                    " VALUES (?, ?, ?, ?)",
                    [(p.scope, p.quota_type, p.ts_us, p.value) for p in batch.points],
                )
                if batch.points:
                    (journal,) = conn.execute(
                        "UPDATE history_recent_size SET points = points + ? RETURNING points",
                        (len(batch.points),),
                    ).fetchone()
                    if journal >= self._compact_points:
                        _compact(conn)
                if batch.book is not None and expected_version is not None:
                    _write_book(conn, batch.book, expected_version + 1)
                conn.executemany(
                    "INSERT INTO outbox (id, created_at, events_json, attempts, last_error,"
                    " destination, op_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.id,
                            m.created_at,
                            m.events,
                            m.attempts,
                            m.last_error,
                            m.destination,
                            m.op,
                        )
                        for m in batch.messages
                    ],
                )
            return True

        return await self._run(write)

    # readings and history --------------------------------------------------------------
    async def latest(self) -> dict[str, str]:
        def read(conn: sqlite3.Connection) -> dict[str, str]:
            return dict(conn.execute("SELECT scope, json FROM latest").fetchall())

        return await self._run(read)

    async def history(self, scope: str, quota_type: str, since_us: int) -> list[tuple[int, int]]:
        def read(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            # One snapshot: a move of the journal by another process must not fall between
            # the two tables' reads.
            with _snapshot(conn):
                return _series_history(conn, scope, quota_type, since_us)

        return await self._run(read)

    async def histories(
        self, series: Sequence[tuple[str, str]], since_us: int
    ) -> list[list[tuple[int, int]]]:
        def read(conn: sqlite3.Connection) -> list[list[tuple[int, int]]]:
            # Each series read scans the journal: for thousands of them, moving it first is
            # cheaper (a single read, a slash command's sparkline, never writes).
            if len(series) > 1 and _journal_size(conn) > self._read_compact_points:
                with _transaction(conn):
                    _compact(conn)
            with _snapshot(conn):
                return [_series_history(conn, scope, kind, since_us) for scope, kind in series]

        return await self._run(read)

    async def prune(self, before_us: int, capped: set[tuple[str, str]] | None) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                series = capped
                if series is None:
                    # The full pass caps every series exactly: their points all in one table.
                    _compact(conn)
                    series = set(conn.execute("SELECT DISTINCT scope, type FROM history"))
                removed = conn.execute("DELETE FROM history WHERE ts_us < ?", (before_us,)).rowcount
                expired = conn.execute(
                    "DELETE FROM history_recent WHERE ts_us < ?", (before_us,)
                ).rowcount
                if expired:
                    conn.execute(
                        "UPDATE history_recent_size SET points = max(0, points - ?)", (expired,)
                    )
                removed += expired
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
                    (before_us,),
                ).rowcount
                return removed

        return await self._run(prune)

    # outbox ----------------------------------------------------------------------------
    async def pending(self, limit: int, destination: str) -> list[StoredMessage]:
        def read(conn: sqlite3.Connection) -> list[StoredMessage]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM outbox"
                " WHERE destination = ? AND delivered_at_us IS NULL ORDER BY id LIMIT ?",
                (destination, limit),
            ).fetchall()
            return [StoredMessage(*row) for row in rows]

        return await self._run(read)

    async def queued(self, message_id: str) -> StoredMessage | None:
        def read(conn: sqlite3.Connection) -> StoredMessage | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM outbox WHERE id = ? AND delivered_at_us IS NULL",
                (message_id,),
            ).fetchone()
            return None if row is None else StoredMessage(*row)

        return await self._run(read)

    async def claim(self, message_id: str, holder: str, until: datetime, now: datetime) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            # One conditional UPDATE: the check and the claim cannot interleave.
            cursor = conn.execute(
                "UPDATE outbox SET claimed_by = ?, claim_until_us = ?,"
                " attempted_at_us = COALESCE(attempted_at_us, ?)"
                " WHERE id = ? AND delivered_at_us IS NULL"
                " AND (claimed_by IS NULL OR claimed_by = ? OR claim_until_us <= ?)",
                (holder, to_us(until), to_us(now), message_id, holder, to_us(now)),
            )
            return cursor.rowcount == 1

        return await self._run(claim)

    async def deliver(
        self,
        message_id: str,
        now: datetime,
        expected_version: int,
        book: str | None,
        receipt: Receipt,
    ) -> bool:
        def deliver(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cursor = conn.execute(
                    "SELECT 1 FROM outbox WHERE id = ? AND delivered_at_us IS NULL", (message_id,)
                )
                if cursor.fetchone() is None:
                    return True
                if _read_book(conn)[1] != expected_version:
                    return False
                conn.execute(
                    "UPDATE outbox SET delivered_at_us = ?, claimed_by = NULL,"
                    " claim_until_us = NULL, ts = ? WHERE id = ?",
                    (to_us(now), receipt.ts, message_id),
                )
                if receipt.ts is not None and receipt.root_id is not None:
                    conn.execute(
                        "UPDATE outbox SET ts = ? WHERE id = ?", (receipt.ts, receipt.root_id)
                    )
                if book is not None:
                    _write_book(conn, book, expected_version + 1)
            return True

        return await self._run(deliver)

    async def delivered_ts(self, message_id: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT ts FROM outbox WHERE id = ? AND delivered_at_us IS NOT NULL",
                (message_id,),
            ).fetchone()
            return None if row is None or row[0] is None else str(row[0])

        return await self._run(read)

    async def record_failure(self, message_id: str, error: str, maybe_sent: bool) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, claimed_by = NULL,"
                " claim_until_us = NULL,"
                " attempted_at_us = CASE WHEN ? THEN attempted_at_us ELSE NULL END"
                " WHERE id = ? AND delivered_at_us IS NULL",
                (error, maybe_sent, message_id),
            )
        )

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

    # delivery reports ------------------------------------------------------------------
    async def remember_report(
        self, key: str, forget_us: int, scope: str, minute: int, outcome: str, now_us: int
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT expires_us FROM seen_reports WHERE key = ?", (key,)
                ).fetchone()
                if row is not None and row[0] > now_us:
                    return False
                conn.execute(
                    "INSERT OR REPLACE INTO seen_reports (key, expires_us) VALUES (?, ?)",
                    (key, forget_us),
                )
                conn.execute(
                    "INSERT INTO report_counts (scope, minute, outcome, n) VALUES (?, ?, ?, 1)"
                    " ON CONFLICT (scope, minute, outcome) DO UPDATE SET n = n + 1",
                    (scope, minute, outcome),
                )
                self._reports_since_trim += 1
                if self._reports_since_trim >= max(1, self._max_seen // 10):
                    self._reports_since_trim = 0
                    self._trim_reports(conn, now_us, minute)
            return True

        return await self._run(write)

    def _trim_reports(self, conn: sqlite3.Connection, now_us: int, minute: int) -> None:
        conn.execute("DELETE FROM seen_reports WHERE expires_us <= ?", (now_us,))
        (count,) = conn.execute("SELECT COUNT(*) FROM seen_reports").fetchone()
        if count > self._max_seen:
            conn.execute(
                "DELETE FROM seen_reports WHERE key IN"
                " (SELECT key FROM seen_reports ORDER BY expires_us LIMIT ?)",
                (count - self._max_seen,),
            )
        kept = int(REPORT_COUNT_RETENTION.total_seconds() // 60)
        conn.execute("DELETE FROM report_counts WHERE minute < ?", (minute - kept,))

    async def forget_report(self, key: str, scope: str, minute: int, outcome: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM seen_reports WHERE key = ?", (key,))
                conn.execute(
                    "UPDATE report_counts SET n = n - 1"
                    " WHERE scope = ? AND minute = ? AND outcome = ? AND n > 0",
                    (scope, minute, outcome),
                )

        await self._run(write)

    async def report_counts(
        self, scope: str, first_minute: int, last_minute: int
    ) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT outcome, SUM(n) FROM report_counts"
                " WHERE scope = ? AND minute BETWEEN ? AND ? GROUP BY outcome",
                (scope, first_minute, last_minute),
            ).fetchall()
            return {str(outcome): int(n) for outcome, n in rows if n}

        return await self._run(read)


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


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    # A deferred transaction that only reads: WAL gives it one consistent view, no lock.
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _series_history(
    conn: sqlite3.Connection, scope: str, quota_type: str, since_us: int
) -> list[tuple[int, int]]:
    key = (scope, quota_type, since_us)
    kept: list[tuple[int, int]] = conn.execute(
        "SELECT ts_us, value FROM history WHERE scope = ? AND type = ? AND ts_us >= ?"
        " ORDER BY ts_us",
        key,
    ).fetchall()
    recent: list[tuple[int, int]] = conn.execute(
        "SELECT ts_us, value FROM history_recent WHERE scope = ? AND type = ? AND ts_us >= ?",
        key,
    ).fetchall()
    if not recent:
        return kept
    # A point written again after its first copy was moved: the journal's is newer.
    merged = dict(kept)
    merged.update(recent)
    return sorted(merged.items())


def _compact(conn: sqlite3.Connection) -> None:
    """Move the journal's points to `history`, series by series (inside a transaction)."""
    conn.execute(
        "INSERT OR REPLACE INTO history (scope, type, ts_us, value)"
        " SELECT scope, type, ts_us, value FROM history_recent ORDER BY scope, type, ts_us"
    )
    conn.execute("DELETE FROM history_recent")
    conn.execute("UPDATE history_recent_size SET points = 0")


def _journal_size(conn: sqlite3.Connection) -> int:
    (points,) = conn.execute("SELECT points FROM history_recent_size").fetchone()
    return int(points)


def _read_book(conn: sqlite3.Connection) -> tuple[str | None, int]:
    row = conn.execute("SELECT version, json FROM book WHERE id = 1").fetchone()
    if row is None:
        return None, 0
    return str(row[1]), int(row[0])


def _write_book(conn: sqlite3.Connection, book_json: str, version: int) -> None:
    conn.execute(
        "INSERT INTO book (id, version, json) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version, json = excluded.json",
        (version, book_json),
    )
