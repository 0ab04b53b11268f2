"""Slack over Socket Mode: slash commands and interactivity without a public address.

slack-sdk's aiohttp `SocketModeClient` carries one websocket session; this module owns the
rest: opening the connection (`apps.connections.open` under SLACK_API_URL), telling a refused
app token (a configuration error: said once, then Socket Mode stays off) from a passing outage
(retried with exponential backoff), reconnecting when Slack closes the socket or asks for a
refresh, and acking every envelope with the reply the HTTP routes would give.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Errors of apps.connections.open that no retry can fix: the token itself is wrong.
REFUSALS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "no_permission",
        "invalid_token",
    }
)
# How long one websocket may take to open before the attempt counts as failed.
CONNECT_TIMEOUT_S = 15.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
CLOSE_TIMEOUT_S = 5.0

# (text, response_url, user_id) -> the JSON body the HTTP route answers with.
SlashHandler = Callable[[str, str | None, str | None], Awaitable[bytes]]
# An interactivity payload -> the JSON body the HTTP route answers with (None: empty 200).
InteractionHandler = Callable[[dict[str, Any]], Awaitable[bytes | None]]


class SocketModeState(StrEnum):
    OFF = "off"
    CONNECTING = "connecting"
    CONNECTED = "connected"


def reconnect_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before the next attempt: 1 s, 2 s, 4 s ... capped at a minute, jittered
    (half to all of it) so that replicas dropped together do not reconnect together."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** max(0, failures))
    return float(ceiling * (0.5 + rand() / 2))


def is_refusal(error: str | None) -> bool:
    return error in REFUSALS


def ack_message(envelope_id: str, body: bytes | None) -> str:
    """The acknowledgement of one envelope; a reply body rides in it as the payload."""
    if body is None:
        return json.dumps({"envelope_id": envelope_id})
    return f'{{"envelope_id": {json.dumps(envelope_id)}, "payload": {body.decode()}}}'


async def ack_only(payload: dict[str, Any]) -> bytes | None:
    """Interactivity without a handler of its own: acknowledged, nothing else."""
    return None


class _Session(SocketModeClient):
    """One websocket session. slack-sdk reconnects by calling `connect_to_new_endpoint` (on a
    close frame, a dead connection or a `disconnect` message); here that ends the session and
    the supervisor reconnects, with backoff and a fresh look at the token."""

    ended: asyncio.Event

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        self.ended.set()


class SocketMode:
    def __init__(
        self,
        app_token: str,
        api_url: str,
        *,
        slash: SlashHandler,
        interactions: InteractionHandler = ack_only,
        ping_interval: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._app_token = app_token
        self._api_url = api_url
        self._slash = slash
        self._interactions = interactions
        self._ping_interval = ping_interval
        self._rand = rand
        self.state = SocketModeState.OFF
        self.error: str | None = None  # a refused token, for /healthz
        self._closing = asyncio.Event()
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.state = SocketModeState.CONNECTING
        self._task = asyncio.create_task(self._run(), name="socket-mode")

    async def close(self) -> None:
        """Stop receiving; envelopes already being answered finish on their own."""
        self._closing.set()
        if self._session is not None:
            self._session.ended.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("Socket Mode did not close in time")
        self.state = SocketModeState.OFF

    # the connection -----------------------------------------------------------------

    async def _run(self) -> None:
        web = AsyncWebClient(base_url=self._api_url, timeout=10)
        failures = 0
        while not self._closing.is_set():
            self.state = SocketModeState.CONNECTING
            delay: float | None = None
            try:
                url = await self._open(web)
            except SlackApiError as exc:
                # An error page (a proxy's 503) has no JSON body, so no error code.
                data = exc.response.data
                code = data.get("error") if isinstance(data, dict) else None
                if is_refusal(code):
                    self.error = (
                        f"SLACK_APP_TOKEN: Slack refused the app-level token ({code});"
                        " Socket Mode stays off until the token is fixed and the bot restarted"
                    )
                    log.error("configuration error: %s", self.error)
                    self.state = SocketModeState.OFF
                    return
                retry_after = exc.response.headers.get("Retry-After")
                if code == "ratelimited" and retry_after and retry_after.isdigit():
                    delay = float(retry_after)
                log.warning(
                    "Socket Mode: apps.connections.open failed (%s); retrying",
                    code or f"HTTP {exc.response.status_code}",
                )
            except Exception as exc:
                # Network errors, timeouts, an HTML error page: all pass, so all are retried.
                log.warning("Socket Mode: cannot reach Slack (%s); retrying", type(exc).__name__)
            else:
                try:
                    if await self._hold(url):
                        # It worked: the next reconnect starts from the shortest delay again.
                        failures = 0
                except Exception:
                    log.exception("Socket Mode: the session failed; reconnecting")
            if delay is None:
                delay = reconnect_delay(failures, self._rand)
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delay)
        self.state = SocketModeState.OFF

    async def _open(self, web: AsyncWebClient) -> str:
        response = await web.apps_connections_open(app_token=self._app_token)
        url = response.get("url")
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise SlackClientError("apps.connections.open returned no websocket URL")
        return url

    async def _hold(self, url: str) -> bool:
        """Connect to one websocket URL and stay until the session ends or we close; whether
        it connected at all."""
        session = _Session(
            self._app_token,
            logger=logging.getLogger(f"{__name__}.sdk"),
            web_client=AsyncWebClient(base_url=self._api_url, timeout=10),
            ping_interval=self._ping_interval,
        )
        session.ended = asyncio.Event()
        session.wss_uri = url
        session.socket_mode_request_listeners.append(self._on_request)
        self._session = session
        try:
            await asyncio.wait_for(session.connect(), CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
            if self._closing.is_set():
                return True
            self.state = SocketModeState.CONNECTED
            log.info("Socket Mode connected")
            await session.ended.wait()
            if not self._closing.is_set():
                self.state = SocketModeState.CONNECTING
                log.info("Socket Mode session ended; reconnecting")
            return True
        except TimeoutError:
            log.warning("Socket Mode: the websocket did not open in time; retrying")
            return False
        finally:
            self._session = None
            with contextlib.suppress(Exception):
                await session.close()  # type: ignore[no-untyped-call]

    # envelopes ----------------------------------------------------------------------

    async def _on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        body: bytes | None = None
        try:
            body = await self._answer(request)
        except Exception:
            # Acked all the same: an unacked envelope only makes Slack show an error or retry.
            log.exception("Socket Mode: could not answer a %s envelope", request.type)
            body = None
        try:
            await client.send_message(ack_message(request.envelope_id, body))
        except Exception as exc:
            log.warning("Socket Mode: could not ack an envelope (%s)", type(exc).__name__)

    async def _answer(self, request: SocketModeRequest) -> bytes | None:
        payload = request.payload
        if request.type == "slash_commands":
            text = payload.get("text")
            response_url = payload.get("response_url")
            user_id = payload.get("user_id")
            return await self._slash(
                text if isinstance(text, str) else "",
                response_url if isinstance(response_url, str) and response_url else None,
                # Who acknowledged or snoozed; checked where it is used.
                user_id if isinstance(user_id, str) else None,
            )
        if request.type == "interactive":
            return await self._interactions(payload)
        # Events and anything newer: acknowledged so that Slack does not send them again.
        return None
