"""A fake Slack for Socket Mode on loopback: `apps.connections.open` and the websocket it
hands out. Tests send envelopes, read the acks, close the socket or ask for a reconnect.

SLACK_API_URL is the root of every Web API call, so with `web_api` (another fake's URL) the
other methods (chat.postMessage ...) are passed on to it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web


@dataclass
class Ack:
    body: dict[str, Any]
    seconds: float  # from sending the envelope to receiving its ack


class FakeSocketSlack:
    def __init__(self, app_token: str = "xapp-1-A1-good", web_api: str | None = None) -> None:
        self.app_token = app_token
        self.web_api = web_api
        self.refuse_with: str | None = None  # an `ok: false` error for every open
        self.available = True  # False: apps.connections.open answers HTTP 503
        self.opens = 0  # apps.connections.open calls that handed out a URL
        self.open_attempts = 0
        self.connections = 0  # websockets accepted, ever
        self.acks: dict[str, Ack] = {}
        self.url = ""
        self._sockets: list[web.WebSocketResponse] = []
        self._sent: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._acked = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def open_sockets(self) -> int:
        return len(self._live())

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self._open)
        app.router.add_get("/link", self._link)
        app.router.add_post("/api/{method}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # what tests do ----------------------------------------------------------------------

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, socket: int | None = None
    ) -> str:
        """Send an envelope on the newest open websocket, or on the `socket`-th open one."""
        envelope_id = f"env-{next(self._ids)}"
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        ws = self._current() if socket is None else self._live()[socket]
        self._sent[envelope_id] = time.monotonic()
        await ws.send_str(json.dumps(message))
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        deadline = time.monotonic() + timeout
        while envelope_id not in self.acks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no ack for {envelope_id} within {timeout} s")
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), timeout=remaining)
        return self.acks[envelope_id]

    async def close_socket(self) -> None:
        """Close the open websocket from Slack's side (a close frame)."""
        await self._current().close()

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's "please reconnect" message; the socket stays open until the client leaves."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}}
        await self._current().send_str(json.dumps(message))

    def _live(self) -> list[web.WebSocketResponse]:
        return [ws for ws in self._sockets if not ws.closed]

    def _current(self) -> web.WebSocketResponse:
        live = self._live()
        assert live, "no websocket is open"
        return live[-1]

    # the server -------------------------------------------------------------------------

    async def _open(self, request: web.Request) -> web.Response:
        self.open_attempts += 1
        if not self.available:
            return web.Response(status=503, text="unavailable")
        auth = request.headers.get("Authorization", "")
        if self.refuse_with is not None:
            return web.json_response({"ok": False, "error": self.refuse_with})
        if auth != f"Bearer {self.app_token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        self.opens += 1
        host = request.host
        return web.json_response({"ok": True, "url": f"ws://{host}/link?ticket={self.opens}"})

    async def _forward(self, request: web.Request) -> web.Response:
        if self.web_api is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.web_api}/api/{request.match_info['method']}",
                data=await request.read(),
                headers=headers,
            ) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={
                    k: v for k, v in answer.headers.items() if k in ("Content-Type", "Retry-After")
                },
            )

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": self.open_sockets,
                    "debug_info": {"host": "fake"},
                    "connection_info": {"app_id": "A1"},
                }
            )
        )
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            body = json.loads(message.data)
            envelope_id = body.get("envelope_id")
            if isinstance(envelope_id, str) and envelope_id in self._sent:
                sent = self._sent[envelope_id]
                self.acks[envelope_id] = Ack(body=body, seconds=time.monotonic() - sent)
                self._acked.set()
        return ws
