"""A fake Slack on loopback: the Web API methods the bot uses, an incoming webhook, response_url.

Web API: chat.postMessage (thread_ts, reply_broadcast, metadata), chat.update, and
conversations.history / conversations.replies (oldest, inclusive, include_all_metadata). Posted
messages are kept per channel with increasing `ts`, so tests read the channel as a person would.

It records every request and answers writes (chat.*) as scripted: ok, HTTP 500, 429 with
Retry-After, `ok: false` with an error, an abruptly closed connection, or `lose_answer`: the
message is kept and then the connection is cut, so the sender cannot know it arrived. Reads
(conversations.*) answer from what was kept, or `missing_scope` when `history_scopes` is off.
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
    retry_after: float | str | None = None  # a str is sent as is (hostile values)
    drop: bool = False  # close the connection without answering
    lose_answer: bool = False  # keep the message, then close the connection without answering


@dataclass
class Message:
    """A message as Slack keeps it in a channel."""

    ts: str
    channel: str
    text: str
    blocks: list[Any] = field(default_factory=list)
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    edits: int = 0

    @property
    def top_level(self) -> bool:
        """Seen in the channel itself: a root, or a reply also sent to the channel."""
        return self.thread_ts is None or self.reply_broadcast

    def as_slack(self, with_metadata: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        if self.blocks:
            data["blocks"] = self.blocks
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
        if self.reply_broadcast:
            data["subtype"] = "thread_broadcast"
        if with_metadata and self.metadata is not None:
            data["metadata"] = self.metadata
        return data


class FakeSlack:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.script: list[Answer] = []  # consumed one per request, then `mode`
        self.mode = Answer()
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._changed = asyncio.Event()
        self.messages: list[Message] = []  # every kept message, in ts order
        self.history_scopes = True  # False: conversations.* answer missing_scope
        self.read_script: list[Answer] = []  # consumed one per conversations.* request
        self._ts = 0  # the last ts given, in microseconds

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

    def channel(self, channel: str | None = None) -> list[Message]:
        """What the channel shows as new messages (roots and broadcast replies)."""
        return [m for m in self.messages if m.top_level and channel in (None, m.channel)]

    def roots(self, channel: str | None = None) -> list[Message]:
        return [m for m in self.messages if m.thread_ts is None and channel in (None, m.channel)]

    def thread(self, root: Message) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == root.ts and m.channel == root.channel]

    def find(self, ts: str, channel: str | None = None) -> Message | None:
        for m in self.messages:
            if m.ts == ts and channel in (None, m.channel):
                return m
        return None

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
        app.router.add_get("/api/{method}", self._api)
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
        if request.method == "GET":
            return dict(request.query)
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
        method = request.match_info["method"]
        if method.startswith("conversations."):
            return await self._conversations(request, method, body)
        answer = self._next()
        accepted = answer.status == 200 and answer.error is None and not answer.drop
        kept = self._keep(method, body) if accepted else None
        self._record(request, body, accepted)
        if answer.drop or answer.lose_answer:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        headers = {}
        if answer.retry_after is not None:
            headers["Retry-After"] = _header(answer.retry_after)
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
        if isinstance(kept, str):
            return web.json_response({"ok": False, "error": kept})
        ts = kept.ts if kept is not None else "1.0"
        return web.json_response({"ok": True, "channel": body.get("channel"), "ts": ts})

    def _keep(self, method: str, body: dict[str, Any]) -> Message | str | None:
        """Apply an accepted write; a string is the Slack error it gets instead."""
        channel = str(body.get("channel", ""))
        blocks = body.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if method == "chat.update":
            target = self.find(str(body.get("ts", "")), channel)
            if target is None:
                return "message_not_found"
            target.text = str(body.get("text", ""))
            target.blocks = blocks
            target.edits += 1
            return target
        if method != "chat.postMessage":
            return None
        thread_ts = body.get("thread_ts")
        if thread_ts is not None:
            root = self.find(str(thread_ts), channel)
            if root is None or root.thread_ts is not None:
                return "thread_not_found"
        metadata = body.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        # Like Slack's: the wall clock at posting, unique and increasing within a channel, so
        # a look-up with `oldest` finds exactly what was posted since.
        self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
        message = Message(
            ts=f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}",
            channel=channel,
            text=str(body.get("text", "")),
            blocks=blocks,
            thread_ts=str(thread_ts) if thread_ts is not None else None,
            reply_broadcast=_truthy(body.get("reply_broadcast")),
            metadata=metadata,
        )
        self.messages.append(message)
        return message

    async def _conversations(
        self, request: web.Request, method: str, query: dict[str, Any]
    ) -> web.StreamResponse:
        answer = self.read_script.pop(0) if self.read_script else Answer()
        self._record(request, query, answer.status == 200 and answer.error is None)
        if answer.status >= 500:
            return web.Response(status=answer.status, text="<html>oops</html>")
        if answer.error is not None:
            return web.json_response({"ok": False, "error": answer.error})
        if not self.history_scopes:
            needed = "channels:history,groups:history,mpim:history,im:history"
            return web.json_response({"ok": False, "error": "missing_scope", "needed": needed})
        channel = str(query.get("channel", ""))
        with_metadata = _truthy(query.get("include_all_metadata"))
        oldest = float(query.get("oldest") or 0)
        inclusive = _truthy(query.get("inclusive"))
        limit = int(query.get("limit") or 100)

        def after(m: Message) -> bool:
            return float(m.ts) >= oldest if inclusive else float(m.ts) > oldest

        if method == "conversations.history":
            found = [m for m in self.messages if m.channel == channel and m.top_level]
            found = [m for m in reversed(found) if after(m)]  # newest first, like Slack
        elif method == "conversations.replies":
            root = self.find(str(query.get("ts", "")), channel)
            if root is None:
                return web.json_response({"ok": False, "error": "thread_not_found"})
            thread = [m for m in self.messages if m.channel == channel and m.thread_ts == root.ts]
            found = [root, *(m for m in thread if after(m))]  # the root always comes first
        else:
            return web.json_response({"ok": False, "error": "unknown_method"})
        page = found[:limit]
        return web.json_response(
            {
                "ok": True,
                "messages": [m.as_slack(with_metadata) for m in page],
                "has_more": len(found) > limit,
            }
        )

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
            headers = {"Retry-After": _header(answer.retry_after or 1)}
            return web.Response(status=429, text="rate_limited", headers=headers)
        if answer.status != 200:
            return web.Response(status=answer.status, text=answer.error or "server_error")
        if answer.error is not None:
            return web.Response(status=404, text=answer.error)
        return web.Response(text="ok")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _header(retry_after: float | str) -> str:
    return retry_after if isinstance(retry_after, str) else str(int(retry_after))
