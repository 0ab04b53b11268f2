"""A fake Slack on loopback: Web API chat.postMessage, an incoming webhook and response_url.

It records every request and answers as scripted: ok, HTTP 500, 429 with Retry-After,
`ok: false` with an error, or an abruptly closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web


@dataclass
class Post:
    path: str
    body: dict[str, Any]
    at: float  # time.monotonic()
    accepted: bool
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


@dataclass
class Answer:
    status: int = 200
    error: str | None = None  # Slack `ok: false` error string
    retry_after: float | None = None
    drop: bool = False  # close the connection without answering


class FakeSlack:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.script: list[Answer] = []  # consumed one per request, then `mode`
        self.mode = Answer()
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._changed = asyncio.Event()

    # what tests look at -----------------------------------------------------------------
    def accepted(self, path_prefix: str = "/api/chat.postMessage") -> list[Post]:
        return [p for p in self.posts if p.accepted and p.path.startswith(path_prefix)]

    def attempts(self, path_prefix: str = "/api/chat.postMessage") -> list[Post]:
        return [p for p in self.posts if p.path.startswith(path_prefix)]

    async def wait_for(self, predicate: Callable[[FakeSlack], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"fake Slack: condition not met within {timeout}s; posts={self.summary()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.2))

    def summary(self) -> list[tuple[str, bool, str]]:
        return [(p.path, p.accepted, p.text[:80]) for p in self.posts]

    # how it answers -----------------------------------------------------------------------
    def set_mode(self, answer: Answer) -> None:
        self.mode = answer

    def answer_next(self, *answers: Answer) -> None:
        self.script.extend(answers)

    # server ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/webhook/{rest:.*}", self._webhook)
        app.router.add_post("/response/{rest:.*}", self._webhook)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _next(self) -> Answer:
        return self.script.pop(0) if self.script else self.mode

    async def _read(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if request.content_type == "application/json":
            data: dict[str, Any] = json.loads(raw or b"{}")
            return data
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def _record(self, request: web.Request, body: dict[str, Any], accepted: bool) -> None:
        self.posts.append(
            Post(
                path=request.path,
                body=body,
                at=time.monotonic(),
                accepted=accepted,
                headers={k: v for k, v in request.headers.items()},
            )
        )
        self._changed.set()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        answer = self._next()
        accepted = answer.status == 200 and answer.error is None and not answer.drop
        self._record(request, body, accepted)
        if answer.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        headers = {}
        if answer.retry_after is not None:
            headers["Retry-After"] = str(int(answer.retry_after))
        if answer.status == 429:
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers=headers
            )
        if answer.status >= 500:
            return web.Response(
                status=answer.status, text="<html>oops</html>", content_type="text/html"
            )
        if answer.error is not None:
            return web.json_response({"ok": False, "error": answer.error}, headers=headers)
        return web.json_response({"ok": True, "channel": body.get("channel"), "ts": "1.0"})

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        answer = self._next() if request.path.startswith("/webhook") else Answer()
        accepted = answer.status == 200 and answer.error is None and not answer.drop
        self._record(request, body, accepted)
        if answer.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if answer.status == 429:
            headers = {"Retry-After": str(int(answer.retry_after or 1))}
            return web.Response(status=429, text="rate_limited", headers=headers)
        if answer.status != 200:
            return web.Response(status=answer.status, text=answer.error or "server_error")
        if answer.error is not None:
            return web.Response(status=404, text=answer.error)
        return web.Response(text="ok")
