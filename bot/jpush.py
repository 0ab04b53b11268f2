"""JPush SMS balance client: one shared session, bounded concurrency, retries by error type.

`fetch()` never raises for JPush or network trouble: a scope that cannot be read comes back as
a ScopeReading carrying a FetchError, so one bad app never hides the others and a failure is
never mistaken for a zero balance.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from bot.clock import Clock, Monotonic, utcnow
from bot.errors import (
    JPushConfigError,
    JPushError,
    JPushMalformedResponse,
    JPushNetworkError,
    JPushRateLimited,
    JPushRequestError,
    JPushServerError,
    JPushTransientError,
)
from bot.quota import QUOTA_TYPES, Balances, FetchError, Scope, ScopeKind, ScopeReading
from bot.retry_after import bounded_pause, parse_retry_after

logger = logging.getLogger(__name__)

_CONFIG_CODES: dict[int, str] = {
    50001: "missing auth",
    50002: "auth failed",
    50008: "SMS service not enabled",
}
_REQUEST_CODES: dict[int, str] = {
    50016: "API not found",
    50017: "media type not supported",
    50018: "method not supported",
}
RATE_LIMITED = 50009
SERVER_ERROR = 50019
NOT_ASSIGNED = 50033
# The longest pause ever honoured: one answer must not silence a scope for longer than this
# (the bot also caps it at one poll interval).
MAX_PAUSE = 300.0
# Rate limits from two credentials this close together mean the limit is shared (counted per
# account or per caller, per second): every credential then steps back for up to this long,
# instead of each being refused in turn.
SHARED_LIMIT_WINDOW = 1.0
SHARED_LIMIT_PAUSE = 1.0
# The key under which a pause that holds back every credential is kept.
_EVERY_CREDENTIAL = "*"
_MAX_CODE = 999_999_999
_KNOWN_CODES = {*_CONFIG_CODES, *_REQUEST_CODES, RATE_LIMITED, SERVER_ERROR, NOT_ASSIGNED}

_PATHS: dict[ScopeKind, str] = {
    ScopeKind.ACCOUNT: "v1/accounts/dev",
    ScopeKind.APP: "v1/accounts/app",
}
_PREFIXES: dict[ScopeKind, str] = {ScopeKind.ACCOUNT: "dev", ScopeKind.APP: "app"}
# Larger values are not a balance anyone has, and would not fit a 64-bit store column.
_MAX_VALUE = 2**63 - 1
_USER_AGENT = "sms-balance-bot"


class JPushClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        concurrency: int = 4,
        retry_budget: float = 30.0,
        max_attempts: int = 5,
        max_pause: float = MAX_PAUSE,
        max_body_bytes: int = 64 * 1024,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock = utcnow,
        monotonic: Monotonic = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base_url = base_url.rstrip("/") + "/"
        self._timeout = timeout
        self._concurrency = concurrency
        self._retry_budget = retry_budget
        self._max_attempts = max_attempts
        self._max_pause = max(0.0, min(max_pause, MAX_PAUSE))
        self._max_body_bytes = max_body_bytes
        self._sleep = sleep
        self._clock = clock
        # Tests pair a fake sleep with a fake monotonic clock so the retry budget still applies.
        self._monotonic = monotonic
        self._session = session
        self._owns_session = session is None
        self._semaphore: asyncio.Semaphore | None = None
        # Per credential (a JPush key): no request before this monotonic time (a rate limit or
        # a Retry-After), and the error that asked for it. One app's pause never holds back
        # the others.
        self._not_before: dict[str, float] = {}
        self._pause_reason: dict[str, JPushTransientError] = {}
        # Per credential (as many as the configured scopes), the time of its latest 50009.
        self._rate_limited_at: dict[str, float] = {}
        self._backoff = wait_random_exponential(multiplier=0.5, max=10)

    async def __aenter__(self) -> JPushClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it (an injected one belongs to its owner)."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def url_for(self, kind: ScopeKind) -> str:
        return self._base_url + _PATHS[kind]

    async def fetch_all(self, scopes: Sequence[Scope]) -> list[ScopeReading]:
        """Read every scope concurrently (at most `concurrency` requests in flight), in order."""
        return list(await asyncio.gather(*(self.fetch(scope) for scope in scopes)))

    async def fetch(self, scope: Scope) -> ScopeReading:
        try:
            balances = await self.fetch_balances(scope)
        except JPushError as exc:
            logger.warning("JPush scope %s could not be read: %s", scope.name, _logged(exc))
            return self._reading(scope, error=_fetch_error(exc))
        except Exception as exc:
            # A bug must not take the other scopes of the cycle down with it.
            logger.exception("JPush scope %s: unexpected error", scope.name)
            error = FetchError(None, f"unexpected error: {type(exc).__name__}")
            return self._reading(scope, error=error)
        if balances is None:
            return self._reading(scope, unassigned=True)
        return self._reading(scope, balances=balances)

    async def fetch_balances(self, scope: Scope) -> Balances | None:
        """The scope's balances, or None when JPush says the app has no quota (50033).

        Raises a JPushError subclass; transient ones only after retries ran out.
        """
        started = self._monotonic()

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self._max_attempts:
                return True
            return self._monotonic() - started + state.upcoming_sleep > self._retry_budget

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.info(
                "JPush scope %s: %s; attempt %d of %d, retrying in %.2fs",
                scope.name,
                _logged(exc) if isinstance(exc, JPushError) else type(exc).__name__,
                state.attempt_number,
                self._max_attempts,
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(JPushTransientError),
            stop=stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        result: Balances | None = await retrying(self._attempt, scope, started)
        return result

    def _wait(self, state: RetryCallState) -> float:
        delay = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome else None
        pause = self._pause_for(exc) if isinstance(exc, JPushTransientError) else None
        # The server said when to come back: never earlier.
        return max(delay, pause) if pause is not None else delay

    def _pause_for(self, exc: JPushTransientError) -> float | None:
        """How long the server asked this credential to stay away, if it did, capped."""
        if exc.retry_after is None and not isinstance(exc, JPushRateLimited):
            return None
        # A rate limit that names no pause gets the default one.
        return bounded_pause(exc.retry_after, self._max_pause)

    @asynccontextmanager
    async def _slot(self, scope: Scope, started: float) -> AsyncIterator[None]:
        """Hold one of the `concurrency` slots, once any pause JPush asked for has passed.

        Sleeps happen without a slot. A pause that begins while we queue for a slot sends us
        back to wait it out; each pass waits for a newer pause, so this ends even with a no-op
        sleep.
        """
        semaphore = self._get_semaphore()
        key = _credential(scope)
        waited_for: float | None = None
        while True:
            not_before, reason = self._pause_of(key)
            if not_before != waited_for:
                await self._wait_out_pause(not_before, reason, started)
                waited_for = not_before
            await semaphore.acquire()
            if self._pause_of(key)[0] == waited_for:
                break
            semaphore.release()
        try:
            yield
        finally:
            semaphore.release()

    def _pause_of(self, key: str) -> tuple[float, JPushTransientError | None]:
        """Until when a credential waits (its own pause, or one for every credential), and why."""
        own = self._not_before.get(key, -math.inf)
        shared = self._not_before.get(_EVERY_CREDENTIAL, -math.inf)
        which = key if own >= shared else _EVERY_CREDENTIAL
        return max(own, shared), self._pause_reason.get(which)

    async def _wait_out_pause(
        self, not_before: float, reason: JPushTransientError | None, started: float
    ) -> None:
        delay = not_before - self._monotonic()
        if delay <= 0:
            return
        if self._monotonic() - started + delay > self._retry_budget and reason is not None:
            # Calling anyway would only be refused again; report the pause as this scope's error.
            raise type(reason)(
                f"{reason.message}; JPush asked for a {delay:.0f}s pause",
                code=reason.code,
                status=reason.status,
                retry_after=delay,
            )
        await self._sleep(delay)

    def _note_pause(self, scope: Scope, exc: JPushTransientError) -> None:
        """A rate limit or a Retry-After holds back every scope using the same credential; rate
        limits on two credentials within SHARED_LIMIT_WINDOW briefly hold back every one."""
        pause = self._pause_for(exc)
        if pause is None:
            return
        key = _credential(scope)
        now = self._monotonic()
        self._extend_pause(key, now + pause, exc)
        if isinstance(exc, JPushRateLimited):
            self._rate_limited_at[key] = now
            recent = [
                k for k, at in self._rate_limited_at.items() if now - at <= SHARED_LIMIT_WINDOW
            ]
            if len(recent) >= 2:
                self._extend_pause(_EVERY_CREDENTIAL, now + min(pause, SHARED_LIMIT_PAUSE), exc)

    def _extend_pause(self, key: str, until: float, exc: JPushTransientError) -> None:
        if until > self._not_before.get(key, -math.inf):
            self._not_before[key] = until
            self._pause_reason[key] = exc

    async def _attempt(self, scope: Scope, started: float) -> Balances | None:
        session = self._get_session()
        headers = {"Authorization": _basic_auth(scope), "Accept": "application/json"}
        try:
            # Only the exchange itself holds a slot; backoff sleeps happen outside it.
            async with (
                self._slot(scope, started),
                session.get(
                    self.url_for(scope.kind),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock)
                body = await _read_limited(response, self._max_body_bytes)
        except TimeoutError:
            raise JPushNetworkError(f"network error: timed out after {self._timeout:g}s") from None
        except aiohttp.InvalidURL:
            raise JPushRequestError("invalid JPush base URL") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise JPushNetworkError(f"network error: {_describe_network(exc)}") from None
        try:
            return interpret_response(
                status,
                body,
                kind=scope.kind,
                retry_after=retry_after,
                max_body_bytes=self._max_body_bytes,
            )
        except JPushTransientError as exc:
            self._note_pause(scope, exc)
            raise

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            # The pool matches the semaphore: it is never the bottleneck and never opens more
            # sockets than we mean to.
            connector = aiohttp.TCPConnector(
                limit=self._concurrency,
                limit_per_host=self._concurrency,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": _USER_AGENT},
            )
            self._owns_session = True
        return self._session

    def _get_semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        return self._semaphore

    def _reading(
        self,
        scope: Scope,
        *,
        balances: Balances | None = None,
        error: FetchError | None = None,
        unassigned: bool = False,
    ) -> ScopeReading:
        return ScopeReading(
            scope=scope.name,
            kind=scope.kind,
            read_at=self._clock(),
            balances=balances,
            error=error,
            unassigned=unassigned,
        )


def _credential(scope: Scope) -> str:
    return f"{scope.kind.value}:{scope.key}"


def _logged(exc: JPushError) -> str:
    """The message with its code: the message itself leaves the code to its own field."""
    return exc.message if exc.code is None else f"{exc.message} ({exc.code})"


def _fetch_error(exc: JPushError) -> FetchError:
    code = exc.code if exc.code is not None else exc.status
    return FetchError(code, exc.message, config=isinstance(exc, JPushConfigError))


def _basic_auth(scope: Scope) -> str:
    raw = f"{scope.key}:{scope.secret.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` bytes (read no further than that)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


def _describe_network(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the server"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response cut short"
    if isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) == 104:
        return "connection reset"
    return type(exc).__name__


def interpret_response(
    status: int,
    body: bytes | None,
    *,
    kind: ScopeKind,
    retry_after: float | None = None,
    max_body_bytes: int = 64 * 1024,
) -> Balances | None:
    """Turn one HTTP answer into balances, None (50033: quota not assigned), or a JPushError.

    `body` is None when it was larger than `max_body_bytes`. Pure: no I/O.
    """
    data = _decode_json(body)
    code, server_message = _error_code(data)
    # An error object in a success response is trusted only when its code is a documented one.
    if 200 <= status < 300 and code not in _KNOWN_CODES:
        return _parse_balances(body, data, kind, max_body_bytes)
    error = _error_for(code, status, server_message, retry_after)
    if error is None:
        return None
    raise error


_UNPARSED = object()


def _decode_json(body: bytes | None) -> Any:
    if not body:
        return _UNPARSED
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _UNPARSED


def _error_code(data: Any) -> tuple[int | None, str | None]:
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if not isinstance(error, dict):
        return None, None
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None, None
    if not 0 <= code <= _MAX_CODE:
        # Not a JPush code (they have five digits): a 4,000-digit number is not shown anywhere.
        return None, None
    message = error.get("message")
    return code, _sanitize(message) if isinstance(message, str) else None


def _sanitize(text: str, limit: int = 80) -> str:
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _error_for(
    code: int | None, status: int, server_message: str | None, retry_after: float | None
) -> JPushError | None:
    """The error for a failed answer; None for 50033, which is not an error."""
    if code == NOT_ASSIGNED:
        return None
    if code in _CONFIG_CODES:
        return JPushConfigError(_CONFIG_CODES[code], code=code, status=status)
    if code in _REQUEST_CODES:
        return JPushRequestError(_REQUEST_CODES[code], code=code, status=status)
    if code == RATE_LIMITED or status == 429:
        # The code is its own field (renderers add it); a bare 429 names its HTTP status.
        label = "" if code == RATE_LIMITED else f" (HTTP {status})"
        return JPushRateLimited(
            f"rate limited by JPush{label}", code=code, status=status, retry_after=retry_after
        )
    if code == SERVER_ERROR:
        return JPushServerError(
            "JPush server error", code=code, status=status, retry_after=retry_after
        )
    detail = ""
    if code is not None:
        detail = f", code {code}" + (f": {server_message}" if server_message else "")
    if status >= 500:
        return JPushServerError(
            f"JPush server error: HTTP {status}{detail}",
            code=code,
            status=status,
            retry_after=retry_after,
        )
    if status >= 400:
        return JPushRequestError(
            f"request rejected: HTTP {status}{detail}", code=code, status=status
        )
    return JPushRequestError(f"unexpected answer: HTTP {status}{detail}", code=code, status=status)


def _parse_balances(
    body: bytes | None, data: Any, kind: ScopeKind, max_body_bytes: int
) -> Balances:
    def malformed(reason: str) -> JPushMalformedResponse:
        return JPushMalformedResponse(f"malformed response: {reason}")

    if body is None:
        raise malformed(f"body larger than {max_body_bytes} bytes")
    if not body.strip():
        raise malformed("empty body")
    if data is _UNPARSED:
        raise malformed("body is not JSON")
    if not isinstance(data, dict):
        raise malformed(f"body is {_describe_value(data)}, not a JSON object")
    prefix = _PREFIXES[kind]
    balances = {}
    for quota_type in QUOTA_TYPES:
        name = f"{prefix}_{quota_type.value}"
        if name not in data:
            raise malformed(f"field {name} is missing")
        balances[quota_type] = _check_value(name, data[name], malformed)
    return balances


def _check_value(
    name: str, value: Any, malformed: Callable[[str], JPushMalformedResponse]
) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(f"field {name} is {_describe_value(value)}")
    if value < 0:
        raise malformed(f"field {name} is negative")
    if value > _MAX_VALUE:
        raise malformed(f"field {name} is out of range")
    return value


def _describe_value(value: Any) -> str:
    kinds: Mapping[type, str] = {
        bool: "a boolean",
        str: "a string",
        float: "a float",
        int: "a number",
        list: "a JSON array",
        dict: "a JSON object",
    }
    return kinds.get(type(value), type(value).__name__)
