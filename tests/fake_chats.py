"""Fakes of the DingTalk, Feishu and WeCom group robots on loopback.

Each one checks what the real robot checks, with its own code (not the bot's) so that a
wrong signature cannot pass by agreeing with itself:

- DingTalk: `access_token` in the query; with a secret, `timestamp` (ms, within one hour of
  the fake's clock) and `sign` = base64(HMAC-SHA256(key=secret, "{timestamp}\\n{secret}"));
- Feishu: the token in the path; with a secret, body `timestamp` (s, within one hour) and
  `sign` = base64(HMAC-SHA256(key="{timestamp}\\n{secret}", b""));
- WeCom: `key` in the query; markdown content at most 4,096 bytes.

They answer HTTP 200 with the robot's own error codes, can be scripted to answer a code
(rate limits: DingTalk 130101, Feishu 11232, WeCom 45009), can enforce a rate limit of
their own, and record every request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

RATE_LIMIT_CODE = {"dingtalk": 130101, "feishu": 11232, "wecom": 45009}
_MESSAGES = {
    130101: "send too fast, exceed 20 times per minute",
    11232: "frequency limited psm[lark.oapi.app_platform_runtime]appID[1500]",
    45009: "api freq out of limit",
}
WINDOW = 3600.0  # both DingTalk and Feishu accept a timestamp within one hour


@dataclass
class ChatPost:
    kind: str
    body: dict[str, Any]
    query: dict[str, str]
    at: float  # time.monotonic()
    code: int
    message: str

    @property
    def accepted(self) -> bool:
        return self.code == 0

    @property
    def text(self) -> str:
        """The message text, whatever the envelope."""
        if self.kind == "dingtalk":
            return str(self.body.get("markdown", {}).get("text", ""))
        if self.kind == "wecom":
            return str(self.body.get("markdown", {}).get("content", ""))
        card = self.body.get("card", {})
        parts = [str(card.get("header", {}).get("title", {}).get("content", ""))]
        for element in card.get("elements", []):
            parts.append(str(element.get("text", {}).get("content", "")))
        return "\n".join(parts)


class FakeRobot:
    def __init__(
        self,
        kind: str,
        *,
        token: str = "tok-0123456789abcdef0123456789abcdef",
        secret: str | None = None,
        keyword: str | None = None,
        clock: Callable[[], float] = time.time,
        limit: tuple[int, float] | None = None,
    ) -> None:
        assert kind in RATE_LIMIT_CODE
        self.kind = kind
        self.token = token
        self.secret = secret
        self.keyword = keyword
        self.clock = clock
        self.limit = limit  # (count, seconds): answer the rate-limit code beyond it
        self.posts: list[ChatPost] = []
        self.script: list[int] = []  # codes answered to the next requests, then normal
        self.base = ""
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    # what tests look at ------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.kind == "dingtalk":
            return f"{self.base}/robot/send?access_token={self.token}"
        if self.kind == "feishu":
            return f"{self.base}/open-apis/bot/v2/hook/{self.token}"
        return f"{self.base}/cgi-bin/webhook/send?key={self.token}"

    def accepted(self) -> list[ChatPost]:
        return [p for p in self.posts if p.accepted]

    def codes(self) -> list[int]:
        return [p.code for p in self.posts]

    def answer_next(self, *codes: int) -> None:
        self.script.extend(codes)

    async def wait_for(self, predicate: Callable[[FakeRobot], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"fake {self.kind}: condition not met within {timeout}s; codes={self.codes()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.2))

    # server ------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/robot/send", self._handle)
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self._handle)
        app.router.add_post("/cgi-bin/webhook/send", self._handle)
        # No access log: it would print the request line, token and signature included, into
        # the logs a test greps for secrets.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        query = {k: v[-1] for k, v in parse_qs(request.rel_url.raw_query_string).items()}
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = {}
        code, message = self._judge(request, query, body)
        self.posts.append(ChatPost(self.kind, body, query, time.monotonic(), code, message))
        self._changed.set()
        if self.kind == "feishu":
            return web.json_response({"code": code, "msg": message, "data": {}})
        return web.json_response({"errcode": code, "errmsg": message})

    def _judge(
        self, request: web.Request, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, str]:
        check = {"dingtalk": self._dingtalk, "feishu": self._feishu, "wecom": self._wecom}
        code, message = check[self.kind](request, query, body)
        if code != 0:
            return code, message
        if self.script:
            code = self.script.pop(0)
            return code, _MESSAGES.get(code, "scripted error")
        if self.limit is not None and self._over_limit():
            code = RATE_LIMIT_CODE[self.kind]
            return code, _MESSAGES[code]
        return 0, "ok" if self.kind != "feishu" else "success"

    def _over_limit(self) -> bool:
        assert self.limit is not None
        count, per = self.limit
        now = time.monotonic()
        recent = [p for p in self.posts if p.accepted and now - p.at < per]
        return len(recent) >= count

    def _fresh(self, timestamp: float) -> bool:
        return abs(self.clock() - timestamp) <= WINDOW

    def _dingtalk(
        self, request: web.Request, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, str]:
        if query.get("access_token") != self.token:
            return 300001, "token is not exist"
        if self.secret is not None:
            timestamp, sign = query.get("timestamp", ""), query.get("sign", "")
            if not timestamp.isdigit() or not self._fresh(int(timestamp) / 1000):
                return 310000, "invalid timestamp"
            expected = base64.b64encode(
                hmac.new(
                    self.secret.encode("utf-8"),
                    (timestamp + "\n" + self.secret).encode("utf-8"),
                    hashlib.sha256,
                ).digest()
            ).decode()
            if not hmac.compare_digest(sign, expected):
                return 310000, "sign not match, more: [https://ding-doc.dingtalk.com]"
        markdown = body.get("markdown")
        if body.get("msgtype") != "markdown" or not isinstance(markdown, dict):
            return 40035, "缺少参数 json"
        if not markdown.get("title") or not markdown.get("text"):
            return 40035, "缺少参数 markdown"
        if self.keyword and self.keyword not in str(markdown.get("text")):
            return 310000, "keywords not in content"
        return 0, ""

    def _feishu(
        self, request: web.Request, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, str]:
        if request.match_info.get("token") != self.token:
            return 19001, "param invalid: incoming webhook access token invalid"
        if self.secret is not None:
            timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
            key = (timestamp + "\n" + self.secret).encode("utf-8")
            expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
            fresh = timestamp.isdigit() and self._fresh(int(timestamp))
            if not fresh or not hmac.compare_digest(sign, expected):
                return (
                    19021,
                    "sign match fail or timestamp is not within one hour from current time",
                )
        if body.get("msg_type") not in ("interactive", "post", "text"):
            return 9499, "Bad Request"
        if self.keyword and self.keyword not in json.dumps(body, ensure_ascii=False):
            return 19024, "Key Words Not Found"
        return 0, ""

    def _wecom(
        self, request: web.Request, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, str]:
        if query.get("key") != self.token:
            return 93000, "invalid webhook url, hint: [1700000000_1_abc]"
        markdown = body.get("markdown")
        if body.get("msgtype") != "markdown" or not isinstance(markdown, dict):
            return 40008, "invalid message type"
        content = str(markdown.get("content", ""))
        if not content:
            return 44004, "empty content"
        if len(content.encode("utf-8")) > 4096:
            return 40058, "markdown.content exceed max length 4096"
        return 0, ""
