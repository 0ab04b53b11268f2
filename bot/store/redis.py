"""Redis state store: shared by replicas (one polls under the lease, all answer commands).

Every multi-key change is one Lua script, so it is atomic on the server and cannot be
half-applied by a dropped connection. Keys, under `{prefix}:`:

  schema                        schema version of this layout
  book                          hash: version, json, token (of the commit that wrote it)
  latest                        hash: scope -> reading JSON
  history:{scope}:{type}        sorted set: score ts_us, member "{ts_us}:{value}"
  history:series                set of the history keys, so pruning needs no SCAN
  outbox                        sorted set of message ids (score 0: ids sort by creation time)
  outbox:msg:{id}               hash: created_at, events, attempts, last_error
  outbox:claim:{id}             "{until_us}|{holder}", expiring on its own (PX)
  lease                         the poller's holder id, expiring on its own (PX)
  meta                          hash of small facts
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.alerts_types import AlertBook
from bot.clock import Clock, utcnow
from bot.errors import StoreError
from bot.quota import QuotaType, ScopeReading
from bot.store._util import Upkeep, from_us, redact_url, scrub, to_us
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

SCHEMA_VERSION = 1
SOCKET_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 10
# mark_delivered is optimistic (compare-and-set on the book version); a commit landing in
# between makes it read again. Far more attempts than any real contention needs.
_CAS_ATTEMPTS = 50

# KEYS: book, latest, outbox, message key, series set, history keys...
# ARGV: mode, expected_version, book_json, token, cap, n_latest, (scope, json)*,
#       n_points, (history key index, ts_us, value)*, message id ('' for none),
#       created_at, events, attempts, has_error, last_error
_WRITE = """
local book, latest, outbox, msgkey, series = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[1] == 'commit' then
  local current = tonumber(redis.call('HGET', book, 'version') or '0')
  if current ~= tonumber(ARGV[2]) then
    -- A retried call whose first attempt did commit (the reply was lost) is a success.
    if current == tonumber(ARGV[2]) + 1 and redis.call('HGET', book, 'token') == ARGV[4] then
      return 1
    end
    return 0
  end
  redis.call('HSET', book, 'version', current + 1, 'json', ARGV[3], 'token', ARGV[4])
end
local cap = tonumber(ARGV[5])
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HSET', latest, ARGV[i], ARGV[i + 1])
  i = i + 2
end
local points = tonumber(ARGV[i])
i = i + 1
for _ = 1, points do
  local key, ts = KEYS[5 + tonumber(ARGV[i])], ARGV[i + 1]
  redis.call('ZREMRANGEBYSCORE', key, ts, ts)
  redis.call('ZADD', key, ts, ts .. ':' .. ARGV[i + 2])
  redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
  redis.call('SADD', series, key)
  i = i + 3
end
if ARGV[i] ~= '' then
  redis.call('ZADD', outbox, 0, ARGV[i])
  redis.call('HSET', msgkey, 'created_at', ARGV[i + 1], 'events', ARGV[i + 2],
             'attempts', ARGV[i + 3])
  if ARGV[i + 4] == '1' then
    redis.call('HSET', msgkey, 'last_error', ARGV[i + 5])
  end
end
return 1
"""

# KEYS: message, claim. ARGV: holder, until_us, now_us, ttl_ms
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('GET', KEYS[2])
if current then
  local sep = string.find(current, '|', 1, true)
  local until_us = tonumber(string.sub(current, 1, sep - 1))
  local owner = string.sub(current, sep + 1)
  if owner ~= ARGV[1] and until_us > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2] .. '|' .. ARGV[1], 'PX', ARGV[4])
return 1
"""

# KEYS: message, claim. ARGV: error
_FAIL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: book, outbox, message, claim. ARGV: id, version read, new book json ('' = unchanged)
_DELIVER = """
if redis.call('EXISTS', KEYS[3]) == 0 then return 1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'version', current + 1, 'json', ARGV[3], 'token', '')
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""

# KEYS: lease. ARGV: holder, ttl_ms. The expiry is the server's, so replicas' clocks don't matter.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: history key, series set. ARGV: cut_us, cap
_PRUNE = """
local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
n = n + redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
return n
"""


def _text(value: object) -> str:
    # decode_responses=True gives str already; redis-py's typing is wider than that.
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sms-balance-bot",
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
        max_points: int = MAX_POINTS_PER_SERIES,
        socket_timeout: float = SOCKET_TIMEOUT_S,
        tls_verify: bool = True,
    ) -> None:
        self._url = url
        # Heroku Redis serves rediss:// with a self-signed certificate, and its REDIS_URL is
        # rotated by the platform, so `?ssl_cert_reqs=none` cannot be added to the URL itself.
        self._tls_options: dict[str, Any] = (
            {"ssl_cert_reqs": "none"} if not tls_verify and url.startswith("rediss://") else {}
        )
        self._password = urlsplit(url).password
        self.safe_url = redact_url(url)
        self._p = prefix
        self._retention = retention
        self._clock = clock or utcnow
        self._max_points = max_points
        self._socket_timeout = socket_timeout
        self._upkeep = Upkeep()
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            client = aioredis.Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                health_check_interval=HEALTH_CHECK_INTERVAL_S,
                # One quick retry on a broken connection (a restarted server leaves dead
                # sockets in the pool); none on timeouts, which would only double the wait.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, (RedisConnectionError,)),
                **self._tls_options,
            )
        except ValueError as exc:
            raise StoreError(f"redis: invalid STATE_URL {self.safe_url}") from exc
        scripts = {
            name: client.register_script(src)
            for name, src in {
                "write": _WRITE,
                "claim": _CLAIM,
                "fail": _FAIL,
                "deliver": _DELIVER,
                "acquire": _ACQUIRE,
                "release": _RELEASE,
                "prune": _PRUNE,
            }.items()
        }
        try:
            with self._translate():
                await self._check_schema(client)
        except BaseException:
            await client.aclose()
            raise
        self._client, self._scripts = client, scripts

    async def _check_schema(self, client: aioredis.Redis) -> None:
        key = self._k("schema")
        await client.set(key, SCHEMA_VERSION, nx=True)
        found = int(await client.get(key) or SCHEMA_VERSION)
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"redis: keys under {self._p!r} use schema version {found}, newer than this bot "
                f"understands ({SCHEMA_VERSION}); upgrade the bot or use another prefix"
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except RedisError as exc:
                log.debug("redis close: %s", self._scrub(exc))

    async def ping(self) -> None:
        with self._translate():
            await self._r.ping()

    # plumbing --------------------------------------------------------------------------
    @property
    def _r(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError("redis store is not open")
        return self._client

    def _k(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def _history_key(self, scope: str, quota_type: QuotaType | str) -> str:
        return self._k("history", scope, str(quota_type))

    def _scrub(self, exc: BaseException) -> str:
        return scrub(str(exc), self._password)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except RedisTimeoutError as exc:
            raise StoreError(f"redis: timed out ({self._scrub(exc)})") from None
        except RedisConnectionError as exc:
            raise StoreError(f"redis: unreachable ({self._scrub(exc)})") from None
        except RedisError as exc:
            raise StoreError(f"redis: {self._scrub(exc)}") from None
        except OSError as exc:
            raise StoreError(f"redis: {self._scrub(exc)}") from None

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> int:
        client = self._r
        with self._translate():
            return int(await self._scripts[name](keys=list(keys), args=list(args), client=client))

    # alert state -----------------------------------------------------------------------
    async def load_book(self) -> tuple[AlertBook, int]:
        with self._translate():
            raw = await self._r.hmget(self._k("book"), ["version", "json"])
        version, body = raw[0], raw[1]
        if body is None:
            return AlertBook(), int(version or 0)
        return AlertBook.from_json(json.loads(body)), int(version or 0)

    async def commit_cycle(self, commit: CycleCommit, expected_version: int) -> bool:
        book_json = json.dumps(commit.book.to_json(), separators=(",", ":"))
        ok = await self._write(
            "commit", commit.readings, commit.message, expected_version, book_json
        )
        if ok:
            await self._maybe_upkeep()
        return ok

    # readings and history --------------------------------------------------------------
    async def save_readings(self, readings: Sequence[ScopeReading]) -> None:
        await self._write("readings", readings, None, 0, "")
        await self._maybe_upkeep()

    async def _write(
        self,
        mode: str,
        readings: Sequence[ScopeReading],
        message: OutboxMessage | None,
        expected_version: int,
        book_json: str,
    ) -> bool:
        history_keys: list[str] = []
        latest_args: list[Any] = []
        point_args: list[Any] = []
        for reading in readings:
            latest_args += [reading.scope, reading_to_json(reading)]
            ts = to_us(reading.read_at)
            for quota_type, value in history_points(reading):
                key = self._history_key(reading.scope, quota_type)
                if key not in history_keys:
                    history_keys.append(key)
                point_args += [history_keys.index(key) + 1, ts, value]
        message_args: list[Any] = (
            [
                message.id,
                message.created_at.isoformat(),
                message.events_json(),
                message.attempts,
                "0" if message.last_error is None else "1",
                message.last_error or "",
            ]
            if message is not None
            else ["", "", "", 0, "0", ""]
        )
        keys = [
            self._k("book"),
            self._k("latest"),
            self._k("outbox"),
            self._k("outbox", "msg", message.id if message else ""),
            self._k("history", "series"),
            *history_keys,
        ]
        args = [
            mode,
            expected_version,
            book_json,
            uuid.uuid4().hex,
            self._max_points,
            len(readings),
            *latest_args,
            len(point_args) // 3,
            *point_args,
            *message_args,
        ]
        return await self._script("write", keys, args) == 1

    async def latest_readings(self) -> dict[str, ScopeReading]:
        with self._translate():
            raw = await self._r.hgetall(self._k("latest"))
        bodies = {_text(scope): _text(body) for scope, body in raw.items()}
        return {scope: reading_from_json(body) for scope, body in sorted(bodies.items())}

    async def history(
        self, scope: str, quota_type: QuotaType, since: datetime
    ) -> list[tuple[datetime, int]]:
        with self._translate():
            members = await self._r.zrangebyscore(
                self._history_key(scope, quota_type), to_us(since), "+inf"
            )
        points = []
        for member in members:
            ts, _, value = _text(member).partition(":")
            points.append((from_us(int(ts)), int(value)))
        return points

    async def prune_history(self, before: datetime) -> int:
        series_key = self._k("history", "series")
        with self._translate():
            keys = await self._r.smembers(series_key)
        removed = 0
        for key in sorted(_text(k) for k in keys):
            removed += await self._script(
                "prune", [key, series_key], [to_us(before), self._max_points]
            )
        return removed

    async def _maybe_upkeep(self) -> None:
        now = self._clock()
        if not self._upkeep.due(now):
            return
        try:
            await self.prune_history(now - self._retention)
        except StoreError as exc:
            # The write it follows has succeeded; failing that call now would mislead.
            log.warning("redis store upkeep failed: %s", exc)

    # outbox ----------------------------------------------------------------------------
    async def pending_messages(self, limit: int = 50) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        with self._translate():
            ids = [_text(i) for i in await self._r.zrange(self._k("outbox"), 0, limit - 1)]
            pipe = self._r.pipeline(transaction=False)
            for message_id in ids:
                pipe.hgetall(self._k("outbox", "msg", message_id))
            bodies: list[dict[str, str]] = await pipe.execute() if ids else []
        messages = []
        for message_id, body in zip(ids, bodies, strict=True):
            if not body:  # delivered between the two reads
                continue
            messages.append(
                OutboxMessage(
                    id=message_id,
                    created_at=datetime.fromisoformat(body["created_at"]),
                    events=OutboxMessage.events_from_json(body["events"]),
                    attempts=int(body.get("attempts", 0)),
                    last_error=body.get("last_error"),
                )
            )
        return messages

    async def claim_message(
        self, message_id: str, holder: str, until: datetime, now: datetime
    ) -> bool:
        keys = [self._k("outbox", "msg", message_id), self._k("outbox", "claim", message_id)]
        args = [holder, to_us(until), to_us(now), _ms(until - now)]
        return await self._script("claim", keys, args) == 1

    async def mark_delivered(self, message_id: str, now: datetime) -> None:
        msg_key = self._k("outbox", "msg", message_id)
        keys = [self._k("book"), self._k("outbox"), msg_key, self._k("outbox", "claim", message_id)]
        # AlertBook.mark_delivered is Python, so: read, compute, compare-and-set, repeat.
        for _ in range(_CAS_ATTEMPTS):
            with self._translate():
                events = await self._r.hget(msg_key, "events")
            if events is None:
                return  # already delivered (or never queued)
            book, version = await self.load_book()
            msg_keys = sorted({e.key for e in OutboxMessage.events_from_json(_text(events))})
            updated = book.mark_delivered(msg_keys, now)
            # An unchanged book keeps its version, so an in-flight cycle need not retry.
            new_json = (
                "" if updated == book else json.dumps(updated.to_json(), separators=(",", ":"))
            )
            if await self._script("deliver", keys, [message_id, version, new_json]) == 1:
                return
        raise StoreError("redis: could not mark a message delivered (book kept changing)")

    async def record_failure(self, message_id: str, error: str, now: datetime) -> None:
        keys = [self._k("outbox", "msg", message_id), self._k("outbox", "claim", message_id)]
        await self._script("fail", keys, [error])

    # poller lease ----------------------------------------------------------------------
    async def acquire_lease(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        # `now` is not used: the lease expires on the server's clock, not a replica's.
        return await self._script("acquire", [self._k("lease")], [holder, _ms(ttl)]) == 1

    async def release_lease(self, holder: str) -> None:
        await self._script("release", [self._k("lease")], [holder])

    # meta ------------------------------------------------------------------------------
    async def set_meta(self, key: str, value: str) -> None:
        with self._translate():
            await self._r.hset(self._k("meta"), key, value)

    async def get_meta(self, key: str) -> str | None:
        with self._translate():
            value = await self._r.hget(self._k("meta"), key)
        return None if value is None else _text(value)
