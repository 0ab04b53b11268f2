"""Acknowledge and snooze, whatever brought them: a button, a Socket Mode envelope, a command.

`parse_block_actions` turns Slack's interactivity payload into an `IncidentAction` (pure; a
payload that is not exactly what the root's buttons send gives None). `IncidentActions.apply`
records the action in the shared alert book (every replica sees it) and queues the root's
update and a thread line, atomically, retrying when a poll cycle commits in between.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bot.alerts_types import Notice, NoticeKind
from bot.clock import Clock
from bot.errors import StoreError
from bot.incidents import NoIncident, act
from bot.render.incident import ACTION_BLOCK_PREFIX
from bot.store.base import CycleCommit, OutboxMessage, StateStore

log = logging.getLogger(__name__)

SNOOZE_CHOICES: Mapping[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
MAX_SNOOZE = timedelta(days=30)
COMMIT_ATTEMPTS = 10
_USER = re.compile(r"^[UW][A-Z0-9]{1,30}$")
_SCOPE = re.compile(r"^[a-z0-9_-]{1,80}$")
_KINDS = {
    "ack": NoticeKind.ACK,
    "unack": NoticeKind.UNACK,
    "snooze": NoticeKind.SNOOZE,
    "unsnooze": NoticeKind.UNSNOOZE,
}


@dataclass(frozen=True, slots=True)
class IncidentAction:
    scope: str
    notice: Notice  # kind, who, and until when for a snooze


def valid_user(user_id: object) -> str | None:
    """A Slack user id, or None: only ids ever reach a message as `<@…>`."""
    return user_id if isinstance(user_id, str) and _USER.match(user_id) else None


def parse_block_actions(payload: Mapping[str, Any], now: datetime) -> IncidentAction | None:
    """The action of one press on a root's buttons, or None for anything else."""
    if payload.get("type") != "block_actions":
        return None
    user = payload.get("user")
    by = valid_user(user.get("id") if isinstance(user, dict) else None)
    actions = payload.get("actions")
    if by is None or not isinstance(actions, list) or not actions:
        return None
    action = actions[0]
    if not isinstance(action, dict):
        return None
    kind = _KINDS.get(str(action.get("action_id")))
    block_id = action.get("block_id")
    if kind is None or not isinstance(block_id, str):
        return None
    scope = block_id.removeprefix(ACTION_BLOCK_PREFIX)
    if scope == block_id or not _SCOPE.match(scope):
        return None
    until = None
    if kind is NoticeKind.SNOOZE:
        option = action.get("selected_option")
        value = option.get("value") if isinstance(option, dict) else None
        length = SNOOZE_CHOICES.get(value) if isinstance(value, str) else None
        if length is None:
            return None
        until = now + length
    return IncidentAction(scope=scope, notice=Notice(kind, by=by, until=until))


class IncidentActions:
    """Applies actions to the shared incidents; the interactivity handler of every transport."""

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        known_scopes: set[str],
        wake_delivery: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._known = known_scopes
        self._wake = wake_delivery
        self._background: set[asyncio.Task[Any]] = set()
        self.handled = 0  # payloads that reached the handler (authenticated, well-formed)

    async def apply(self, action: IncidentAction) -> bool:
        """Record it and queue the root's update; False when the scope has no open incident."""
        if action.scope not in self._known:
            return False
        for _ in range(COMMIT_ATTEMPTS):
            now = self._clock()
            book, version = await self._store.load_book()
            try:
                incidents, ops = act(
                    book.incidents, action.scope, action.notice, now, OutboxMessage.new_id(now)
                )
            except NoIncident:
                return False
            messages = [OutboxMessage(id=op.id, created_at=now, events=(), op=op) for op in ops]
            commit = CycleCommit([], replace(book, incidents=incidents), messages)
            if await self._store.commit_cycle(commit, version):
                log.info(
                    "incident %s",
                    action.notice.kind.value,
                    extra={"scope": action.scope, "by": action.notice.by},
                )
                if self._wake is not None:
                    self._wake()
                return True
        raise StoreError("could not record the action: the alert state kept changing")

    async def handle_payload(self, payload: dict[str, Any]) -> bytes | None:
        """An interactivity payload, from HTTP or Socket Mode: acknowledged at once (empty
        200); the change is recorded and the root updated after the answer."""
        self.handled += 1
        action = parse_block_actions(payload, self._clock())
        if action is None:
            return None
        task = asyncio.create_task(self._apply_logged(action))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return None

    async def _apply_logged(self, action: IncidentAction) -> None:
        try:
            if not await self.apply(action):
                log.info("incident action on %s ignored: nothing open", action.scope)
        except StoreError as exc:
            log.warning("incident action on %s not recorded: %s", action.scope, exc)

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=3)
