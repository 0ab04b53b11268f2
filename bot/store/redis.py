"""Redis state store: shared by replicas (one polls under the lease, all answer commands).

Every multi-key change is one Lua script, so it is atomic on the server and cannot be
half-applied by a dropped connection. Keys, under `{prefix}:`:

  schema                        schema version of this layout
  book                          hash: version, json, token (of the commit that wrote it)
  latest                        hash: scope -> reading JSON
  history:{scope}:{type}        sorted set: score ts_us, member "{ts_us}:{value}"
  history:series                set of the history keys, so pruning needs no SCAN
  outbox                        sorted set of the primary destination's undelivered message
                                ids (score 0: ids sort by creation time)
  outbox:dest:{name}            the same, for every other destination
  outbox:msg:{id}               hash: created_at, events, attempts, last_error, dest, op,
                                attempted_at (us); once delivered: delivered, ts (kept for the
                                retention period, so a reply finds its root's ts)
  outbox:claim:{id}             "{until_us}|{holder}", expiring on its own (PX)
  lease                         the poller's holder id, expiring on its own (PX)
  meta                          hash of small facts
  reports:seen                  sorted set: delivery-report replay keys, score = forget at (us)
  reports:count:{scope}:{min}   hash: outcome -> reports counted in that minute (expiring)
"""

from __future__ import annotations

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

from bot.clock import Clock
from bot.errors import StoreError
from bot.store.base import (
    DEFAULT_RETENTION,
    MAX_POINTS_PER_SERIES,
    MAX_SEEN_REPORTS,
    PRIMARY,
    REPORT_COUNT_RETENTION,
    Batch,
    Receipt,
    StateStore,
    StoredMessage,
    to_us,
)
from bot.store.urls import redact_url, scrub

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: per-destination queues, typed messages, kept ts
SOCKET_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 10
HISTORY_READ_SLICE = 500  # series per pipelined round trip in a bulk history read
# Reads of the outbox that met a message delivered between their two round trips.
_READ_ATTEMPTS = 5

# KEYS: book, latest, series, history keys..., (queue, message key)...
# ARGV: mode, expected_version, book_json, token, cap, n_latest, (scope, json)*,
#       n_points, (history key index, ts_us, value)*,
#       n_messages, (queue key index, id, created_at, events, attempts, last_error, dest, op)*
_WRITE = """
local book, latest, series = KEYS[1], KEYS[2], KEYS[3]
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
  local key, ts = KEYS[3 + tonumber(ARGV[i])], ARGV[i + 1]
  redis.call('ZREMRANGEBYSCORE', key, ts, ts)
  redis.call('ZADD', key, ts, ts .. ':' .. ARGV[i + 2])
  redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
  redis.call('SADD', series, key)
  i = i + 3
end
local messages = tonumber(ARGV[i])
i = i + 1
for _ = 1, messages do
  local k = tonumber(ARGV[i])
  local queue, msgkey = KEYS[k], KEYS[k + 1]
  redis.call('ZADD', queue, 0, ARGV[i + 1])
  redis.call('HSET', msgkey, 'created_at', ARGV[i + 2], 'events', ARGV[i + 3],
             'attempts', ARGV[i + 4], 'dest', ARGV[i + 6], 'op', ARGV[i + 7])
  if ARGV[i + 5] ~= '' then
    redis.call('HSET', msgkey, 'last_error', ARGV[i + 5])
  end
  i = i + 8
end
return 1
"""

# KEYS: message, claim. ARGV: holder, until_us, now_us, ttl_ms
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'delivered') == 1 then
  return 0
end
local current = redis.call('GET', KEYS[2])
if current then
  local sep = string.find(current, '|', 1, true)
  local until_us = tonumber(string.sub(current, 1, sep - 1))
  local owner = string.sub(current, sep + 1)
  if owner ~= ARGV[1] and until_us > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2] .. '|' .. ARGV[1], 'PX', ARGV[4])
redis.call('HSETNX', KEYS[1], 'attempted_at', ARGV[3])
return 1
"""

# KEYS: message, claim. ARGV: error, maybe_sent ('1' keeps attempted_at)
_FAIL = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'delivered') == 1 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
if ARGV[2] ~= '1' then redis.call('HDEL', KEYS[1], 'attempted_at') end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: book, queue, message, claim, root message.
# ARGV: id, version read, new book json ('' = unchanged), ts ('' = none), keep_ms
_DELIVER = """
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('HEXISTS', KEYS[3], 'delivered') == 1 then
  return 1
end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'version', current + 1, 'json', ARGV[3], 'token', '')
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 'delivered', '1')
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], 'ts', ARGV[4])
  if KEYS[5] ~= KEYS[3] and redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HSET', KEYS[5], 'ts', ARGV[4])
  end
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
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


def _undelivered(body: dict[str, str]) -> bool:
    return bool(body) and not body.get("delivered")


def _text(value: object) -> str:
    # decode_responses=True gives str already; redis-py's typing is wider than that.
    return value.decode() if isinstance(value, bytes) else str(value)


def _points(members: Sequence[object]) -> list[tuple[int, int]]:
    points = []
    for member in members:
        ts, _, value = _text(member).partition(":")
        points.append((int(ts), int(value)))
    return points


def _stored(message_id: str, body: dict[str, str]) -> StoredMessage:
    attempted = body.get("attempted_at")
    return StoredMessage(
        id=message_id,
        created_at=body["created_at"],
        events=body["events"],
        attempts=int(body.get("attempts", 0)),
        last_error=body.get("last_error"),
        destination=body.get("dest") or PRIMARY,
        op=body.get("op") or None,
        attempted_at_us=int(attempted) if attempted else None,
    )


# KEYS: seen, counts. ARGV: key, forget_us, now_us, cap, outcome, counts_ttl_s
_REMEMBER_REPORT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then redis.call('ZPOPMIN', KEYS[1], excess) end
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""

# KEYS: seen, counts. ARGV: key, outcome
_FORGET_REPORT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') > 0 then
    redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  end
end
return 1
"""


def _ms(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


class RedisStore(StateStore):
    """The state store on Redis, shared by replicas."""

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
        max_seen: int = MAX_SEEN_REPORTS,
    ) -> None:
        self.redis = RedisBackend(
            url,
            prefix=prefix,
            keep=retention,
            max_points=max_points,
            socket_timeout=socket_timeout,
            tls_verify=tls_verify,
            max_seen=max_seen,
        )
        self.safe_url = self.redis.safe_url
        super().__init__(self.redis, retention=retention, clock=clock)


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sms-balance-bot",
        keep: timedelta = DEFAULT_RETENTION,
        max_points: int = MAX_POINTS_PER_SERIES,
        socket_timeout: float = SOCKET_TIMEOUT_S,
        tls_verify: bool = True,
        max_seen: int = MAX_SEEN_REPORTS,
    ) -> None:
        self._max_seen = max_seen
        self._url = url
        self._keep = keep  # how long a delivered message (and its ts) is kept
        # Heroku Redis serves rediss:// with a self-signed certificate, and its REDIS_URL is
        # rotated by the platform, so `?ssl_cert_reqs=none` cannot be added to the URL itself.
        self._tls_options: dict[str, Any] = (
            {"ssl_cert_reqs": "none"} if not tls_verify and url.startswith("rediss://") else {}
        )
        self._password = urlsplit(url).password
        self.safe_url = redact_url(url)
        self._p = prefix
        self._max_points = max_points
        self._socket_timeout = socket_timeout
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
                "remember_report": _REMEMBER_REPORT,
                "forget_report": _FORGET_REPORT,
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
        if found < SCHEMA_VERSION:
            # Version 1 data reads as version 2 (its queue is the primary one); the mark keeps
            # an older bot from misreading the typed messages written from now on.
            await client.set(key, SCHEMA_VERSION)

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

    def _history_key(self, scope: str, quota_type: str) -> str:
        return self._k("history", scope, quota_type)

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

    # alert state and writes ------------------------------------------------------------
    async def read_book(self) -> tuple[str | None, int]:
        with self._translate():
            version, body = await self._r.hmget(self._k("book"), ["version", "json"])
        return (None if body is None else _text(body)), int(version or 0)

    async def write(self, batch: Batch, expected_version: int | None) -> bool:
        history_keys: list[str] = []
        index: dict[str, int] = {}
        point_args: list[Any] = []
        for point in batch.points:
            key = self._history_key(point.scope, point.quota_type)
            if key not in index:
                history_keys.append(key)
                index[key] = len(history_keys)
            point_args += [index[key], point.ts_us, point.value]
        latest_args: list[Any] = [item for pair in batch.latest.items() for item in pair]
        keys = [self._k("book"), self._k("latest"), self._k("history", "series"), *history_keys]
        message_args: list[Any] = [len(batch.messages)]
        for message in batch.messages:
            message_args += [
                len(keys) + 1,
                message.id,
                message.created_at,
                message.events,
                message.attempts,
                message.last_error or "",
                message.destination,
                message.op or "",
            ]
            keys += [self._queue_key(message.destination), self._msg_key(message.id)]
        args = [
            "readings" if expected_version is None else "commit",
            expected_version or 0,
            batch.book or "",
            uuid.uuid4().hex,
            self._max_points,
            len(batch.latest),
            *latest_args,
            len(point_args) // 3,
            *point_args,
            *message_args,
        ]
        return await self._script("write", keys, args) == 1

    def _queue_key(self, destination: str) -> str:
        if destination == PRIMARY:
            return self._k("outbox")
        return self._k("outbox", "dest", destination)

    def _msg_key(self, message_id: str) -> str:
        return self._k("outbox", "msg", message_id)

    # readings and history --------------------------------------------------------------
    async def latest(self) -> dict[str, str]:
        with self._translate():
            raw = await self._r.hgetall(self._k("latest"))
        return {_text(scope): _text(body) for scope, body in raw.items()}

    async def history(self, scope: str, quota_type: str, since_us: int) -> list[tuple[int, int]]:
        with self._translate():
            members = await self._r.zrangebyscore(
                self._history_key(scope, quota_type), since_us, "+inf"
            )
        return _points(members)

    async def histories(
        self, series: Sequence[tuple[str, str]], since_us: int
    ) -> list[list[tuple[int, int]]]:
        found: list[list[tuple[int, int]]] = []
        # Pipelined in slices: one round trip per slice, and no reply larger than a slice's.
        for first in range(0, len(series), HISTORY_READ_SLICE):
            with self._translate():
                async with self._r.pipeline(transaction=False) as pipe:
                    for scope, quota_type in series[first : first + HISTORY_READ_SLICE]:
                        pipe.zrangebyscore(self._history_key(scope, quota_type), since_us, "+inf")
                    replies = await pipe.execute()
            found += [_points(members) for members in replies]
        return found

    async def prune(self, before_us: int, capped: set[tuple[str, str]] | None) -> int:
        # Every series: the cap is cheap here (also applied on write), and retention must
        # reach series no longer written (a removed scope).
        series_key = self._k("history", "series")
        with self._translate():
            keys = await self._r.smembers(series_key)
        removed = 0
        for key in sorted(_text(k) for k in keys):
            removed += await self._script("prune", [key, series_key], [before_us, self._max_points])
        return removed

    # outbox ----------------------------------------------------------------------------
    async def pending(self, limit: int, destination: str) -> list[StoredMessage]:
        # Ids and bodies are two round trips. A message delivered in between no longer counts:
        # read again rather than answer with a short list (with limit=1: an empty one) while
        # later messages are still queued.
        for _ in range(_READ_ATTEMPTS):
            ids, bodies = await self._queue_page(limit, destination)
            if all(_undelivered(body) for body in bodies):
                break
        return [
            _stored(message_id, body)
            for message_id, body in zip(ids, bodies, strict=True)
            if _undelivered(body)  # else delivered between the two reads, on every attempt
        ]

    async def _queue_page(
        self, limit: int, destination: str
    ) -> tuple[list[str], list[dict[str, str]]]:
        with self._translate():
            queue = self._queue_key(destination)
            ids = [_text(i) for i in await self._r.zrange(queue, 0, limit - 1)]
            pipe = self._r.pipeline(transaction=False)
            for message_id in ids:
                pipe.hgetall(self._msg_key(message_id))
            bodies: list[dict[str, str]] = await pipe.execute() if ids else []
        return ids, bodies

    async def queued(self, message_id: str) -> StoredMessage | None:
        with self._translate():
            raw = await self._r.hgetall(self._msg_key(message_id))
        body = {_text(k): _text(v) for k, v in raw.items()}
        if not body or body.get("delivered"):
            return None
        return _stored(message_id, body)

    async def claim(self, message_id: str, holder: str, until: datetime, now: datetime) -> bool:
        keys = [self._msg_key(message_id), self._k("outbox", "claim", message_id)]
        args = [holder, to_us(until), to_us(now), _ms(until - now)]
        return await self._script("claim", keys, args) == 1

    async def deliver(
        self,
        message_id: str,
        now: datetime,
        expected_version: int,
        book: str | None,
        receipt: Receipt,
    ) -> bool:
        msg_key = self._msg_key(message_id)
        with self._translate():
            dest = await self._r.hget(msg_key, "dest")
        keys = [
            self._k("book"),
            self._queue_key(_text(dest) if dest else PRIMARY),
            msg_key,
            self._k("outbox", "claim", message_id),
            self._msg_key(receipt.root_id or message_id),
        ]
        args = [message_id, expected_version, book or "", receipt.ts or "", _ms(self._keep)]
        return await self._script("deliver", keys, args) == 1

    async def delivered_ts(self, message_id: str) -> str | None:
        with self._translate():
            delivered, ts = await self._r.hmget(self._msg_key(message_id), ["delivered", "ts"])
        return _text(ts) if delivered and ts else None

    async def record_failure(self, message_id: str, error: str, maybe_sent: bool) -> None:
        keys = [self._msg_key(message_id), self._k("outbox", "claim", message_id)]
        await self._script("fail", keys, [error, "1" if maybe_sent else "0"])

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

    # delivery reports ------------------------------------------------------------------
    def _report_count_key(self, scope: str, minute: int) -> str:
        return self._k("reports", "count", scope, str(minute))

    async def remember_report(
        self, key: str, forget_us: int, scope: str, minute: int, outcome: str, now_us: int
    ) -> bool:
        keys = [self._k("reports", "seen"), self._report_count_key(scope, minute)]
        ttl = int(REPORT_COUNT_RETENTION.total_seconds())
        args = [key, forget_us, now_us, self._max_seen, outcome, ttl]
        return bool(await self._script("remember_report", keys, args))

    async def forget_report(self, key: str, scope: str, minute: int, outcome: str) -> None:
        keys = [self._k("reports", "seen"), self._report_count_key(scope, minute)]
        await self._script("forget_report", keys, [key, outcome])

    async def report_counts(
        self, scope: str, first_minute: int, last_minute: int
    ) -> dict[str, int]:
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                for minute in range(first_minute, last_minute + 1):
                    pipe.hgetall(self._report_count_key(scope, minute))
                buckets = await pipe.execute()
        result: dict[str, int] = {}
        for bucket in buckets:
            for outcome, n in bucket.items():
                if int(n) > 0:
                    result[str(outcome)] = result.get(str(outcome), 0) + int(n)
        return result
