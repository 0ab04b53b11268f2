"""The /sms-balance slash command over HTTP: verify, parse, answer from the shared state.

Parsing and rendering are the pure `commands` module; this adapter reads the store and JPush,
caches the "show" reply for a moment (a burst of commands costs one store read and render),
and shares one in-flight JPush read per scope among concurrent `refresh` commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.alerts_types import Notice, NoticeKind
from bot.app import Services
from bot.commands import Command, parse_command
from bot.errors import StoreError
from bot.incident_actions import IncidentAction, valid_user
from bot.quota import Scope, ScopeReading
from bot.render.slash import render_action_reply, render_refresh_pending, render_reply
from bot.slack_signature import Refusal, SlackSignature
from bot.views import load_views, unread_views

log = logging.getLogger(__name__)

# Slack gives up after 3 s; leave room for the network on both sides.
REFRESH_DEADLINE = 2.0
STORE_DEADLINE = 1.5
# A "show" reply is reused for this long (and until the next poll cycle): its "read 3 minutes
# ago" may lag by a second, and a burst of commands costs one store read and render, not one each.
REPLY_TTL = 1.0
# A refresh reads JPush live at most once per scope in this window; concurrent and repeated
# (replayed) refreshes share that read.
REFRESH_REUSE_S = 10.0
# Slack accepts posts to a response_url for 30 minutes: one follow-up per URL in that time,
# so a replayed request cannot make the bot post again and again.
RESPONSE_URL_TTL_S = 30 * 60.0
_MAX_REMEMBERED_URLS = 1000
_FORM_FIELDS = frozenset({"text", "ssl_check", "response_url", "user_id"})


def form_fields(body: str) -> dict[str, str]:
    """The first value of each field the command uses, exactly as parse_qs would give it.

    Slack sends a dozen fields; unquoting all of them was a sixth of the handler's time.
    """
    fields: dict[str, str] = {}
    for pair in body.split("&"):
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in _FORM_FIELDS and name not in fields:
            fields[name] = unquote_plus(value) if "%" in value or "+" in value else value
    return fields


_ACTION_KINDS: dict[str, NoticeKind] = {
    "ack": NoticeKind.ACK,
    "unack": NoticeKind.UNACK,
    "snooze": NoticeKind.SNOOZE,
    "unsnooze": NoticeKind.UNSNOOZE,
}


@dataclass
class _CachedReply:
    cycle: datetime | None  # the worker's last cycle when it was rendered
    expires: float  # monotonic time
    task: asyncio.Task[tuple[bytes, bool]]  # (JSON body, cacheable)


class SlashCommands:
    def __init__(self, services: Services, signature: SlackSignature) -> None:
        self._scopes = services.scopes
        self._scope_names = [s.name for s in services.scopes]
        self._store = services.store
        self._client = services.client
        self._clock = services.clock
        self._worker = services.worker
        self._actions = services.actions
        self._metrics = services.metrics
        self._stale_after = services.settings.poll_interval * 2
        self._loc = services.settings.locale()
        self._signature = signature
        self._monotonic = services.monotonic
        self._replies: dict[str | None, _CachedReply] = {}
        # Per scope: the live read and when it started (kept for REFRESH_REUSE_S).
        self._refreshing: dict[str, tuple[asyncio.Task[ScopeReading], float]] = {}
        self._followed_up: dict[str, float] = {}  # response_url -> when its follow-up began
        self._background: set[asyncio.Task[Any]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        """POST /slack/commands."""
        body = await self._signature.read(request)
        if isinstance(body, Refusal):
            return body.counted(self._metrics)
        form = form_fields(body)
        if form.get("ssl_check") == "1":
            self._metrics.commands_ssl_check.inc()
            return web.Response(status=200)
        reply = await self.reply(
            form.get("text", ""), form.get("response_url"), form.get("user_id")
        )
        return web.Response(body=reply, content_type="application/json", charset="utf-8")

    async def reply(self, text: str, response_url: str | None, user_id: str | None = None) -> bytes:
        """The JSON reply to one command, whatever transport brought it."""
        self._metrics.commands_answered.inc()
        command = parse_command(text, self._scope_names)
        if command.action == "show":
            return await self._show_body(command)
        if command.action in _ACTION_KINDS:
            return json.dumps(await self._act(command, user_id)).encode()
        return json.dumps(await self.answer(command, response_url)).encode()

    async def answer(self, command: Command, response_url: str | None) -> dict[str, Any]:
        if command.action == "refresh":
            return await self._refresh(command, response_url)
        if command.action in ("help", "unknown"):
            # Usage needs only the configured scope names: no store read, and it still names
            # them while the store is down.
            return render_reply(command, unread_views(self._scopes), self._clock(), loc=self._loc)
        reply, _ = await self._from_store(command)
        return reply

    async def _act(self, command: Command, user_id: str | None) -> dict[str, Any]:
        """ack / unack / snooze / unsnooze: recorded in the shared state before answering."""
        assert command.scope is not None
        now = self._clock()
        kind = _ACTION_KINDS[command.action]
        until = now + command.duration if command.duration is not None else None
        notice = Notice(kind, by=valid_user(user_id), until=until)
        try:
            done = await self._actions.apply(IncidentAction(command.scope, notice))
        except StoreError as exc:
            return render_reply(
                command, unread_views(self._scopes), now, store_error=str(exc), loc=self._loc
            )
        return render_action_reply(command.scope, notice, done, now, self._loc)

    async def close(self) -> None:
        """Let follow-up posts finish briefly, then cancel them and any shared refresh."""
        if self._background:
            await asyncio.wait(self._background, timeout=3)
            for task in self._background:
                task.cancel()
        for refresh, _ in self._refreshing.values():
            refresh.cancel()

    # show ------------------------------------------------------------------------------

    async def _show_body(self, command: Command) -> bytes:
        """The encoded reply, rendered at most once per REPLY_TTL and scope, shared by all."""
        cycle = self._worker.last_cycle_at
        entry = self._replies.get(command.scope)
        now = self._monotonic()
        if entry is None or entry.cycle != cycle or (entry.task.done() and entry.expires <= now):
            task = asyncio.ensure_future(self._render_show(command))
            entry = _CachedReply(cycle=cycle, expires=now + REPLY_TTL, task=task)
            self._replies[command.scope] = entry
        # Shielded: a caller that goes away must not cancel the render the others are waiting on.
        cacheable = True
        try:
            body, cacheable = await asyncio.shield(entry.task)
        except Exception:
            cacheable = False
            raise
        finally:
            # A store-error reply (or a failure) is not kept: the next command tries again.
            if not cacheable and self._replies.get(command.scope) is entry:
                del self._replies[command.scope]
        return body

    async def _render_show(self, command: Command) -> tuple[bytes, bool]:
        reply, store_answered = await self._from_store(command)
        return json.dumps(reply).encode(), store_answered

    async def _from_store(self, command: Command) -> tuple[dict[str, Any], bool]:
        """The reply from the shared state, and whether the store answered."""
        now = self._clock()
        try:
            views = await asyncio.wait_for(
                load_views(self._store, self._scopes, now, trend_for=command.scope),
                STORE_DEADLINE,
            )
        except (StoreError, TimeoutError) as exc:
            # The loop's own error names the cause (e.g. connection refused) where this call
            # may only know that the store is not open yet.
            problem = self._worker.store_problem or str(exc) or "no answer in time"
            reply = render_reply(
                command,
                unread_views(self._scopes),
                now,
                store_error=problem,
                stale_after=self._stale_after,
                loc=self._loc,
            )
            return reply, False
        return render_reply(command, views, now, stale_after=self._stale_after, loc=self._loc), True

    # refresh ---------------------------------------------------------------------------

    def _refresh_task(self, scope: Scope) -> asyncio.Task[ScopeReading]:
        """One JPush read per scope per REFRESH_REUSE_S, shared by every refresh meanwhile."""
        now = self._monotonic()
        entry = self._refreshing.get(scope.name)
        if entry is not None:
            task, started = entry
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            if not failed and now - started < REFRESH_REUSE_S:
                return task
        task = asyncio.create_task(self._client.fetch(scope))
        self._refreshing[scope.name] = (task, now)
        return task

    async def _refresh(self, command: Command, response_url: str | None) -> dict[str, Any]:
        targets = [s for s in self._scopes if command.scope in (None, s.name)]
        tasks = [self._refresh_task(scope) for scope in targets]
        show = Command(action="show", scope=command.scope)
        gathered = asyncio.ensure_future(asyncio.gather(*[asyncio.shield(t) for t in tasks]))
        done, _ = await asyncio.wait({gathered}, timeout=REFRESH_DEADLINE)
        if done:
            return await self._fresh_reply(show, gathered.result())
        if not response_url or not self._first_follow_up(response_url):
            # No URL, or that URL already has its follow-up (a replayed request): the shared
            # read still lands in the store for the next command.
            gathered.cancel()
            return render_refresh_pending(command.scope, self._loc)

        async def follow_up() -> None:
            readings = await gathered
            reply = await self._fresh_reply(show, readings)
            await _post_response_url(response_url, reply)

        self._spawn(follow_up())
        return render_refresh_pending(command.scope, self._loc)

    def _first_follow_up(self, response_url: str) -> bool:
        now = self._monotonic()
        for url, began in list(self._followed_up.items()):
            if now - began > RESPONSE_URL_TTL_S:
                del self._followed_up[url]
        if response_url in self._followed_up:
            return False
        if len(self._followed_up) >= _MAX_REMEMBERED_URLS:
            self._followed_up.pop(next(iter(self._followed_up)))
        self._followed_up[response_url] = now
        return True

    async def _fresh_reply(
        self, command: Command, readings: Sequence[ScopeReading]
    ) -> dict[str, Any]:
        now = self._clock()
        fresh = {r.scope: r for r in readings}
        self._replies.clear()  # fresh numbers: no cached reply may show the old ones
        try:
            await asyncio.wait_for(self._store.save_readings(list(readings)), STORE_DEADLINE)
        except (StoreError, TimeoutError):
            log.warning("refresh: could not store the fresh readings")
        try:
            views = await asyncio.wait_for(
                load_views(self._store, self._scopes, now, trend_for=command.scope, readings=fresh),
                STORE_DEADLINE,
            )
        except (StoreError, TimeoutError):
            views = unread_views(self._scopes, fresh)
        return render_reply(command, views, now, stale_after=self._stale_after, loc=self._loc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _post_response_url(url: str, reply: dict[str, Any]) -> None:
    body = dict(reply)
    body["replace_original"] = False
    try:
        response = await AsyncWebhookClient(url=url, timeout=10).send_dict(body)
    except Exception as exc:
        log.warning("could not post the refreshed numbers to response_url: %s", type(exc).__name__)
        return
    if response.status_code != 200:
        log.warning("response_url answered HTTP %s", response.status_code)
