"""Drains the outbox: claim, send, mark delivered; in order, at least once, never dropped.

A message leaves the queue only when Slack said ok. A 429 blocks the endpoint until its
Retry-After has passed; 5xx and network errors back off exponentially; a refusal
(invalid_auth, channel_not_found) is a configuration problem that keeps the message queued
and shows in /healthz.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from bot.alerts_types import OpKind
from bot.clock import Clock
from bot.errors import DeliveryPaced, DeliveryRefused, DeliveryRetryable, StoreError
from bot.metrics import Metrics
from bot.notify import SEND_TIMEOUT, EventSender, Notifier, SlackWebNotifier
from bot.render.alert import SlackMessage, render_alert, render_alert_console
from bot.render.format import DEFAULT, Locale
from bot.render.incident import render_op
from bot.store.base import META_SLACK_NOT_BEFORE, PRIMARY, OutboxMessage, Receipt, StateStore

log = logging.getLogger(__name__)

# Longer than one send can take (SEND_TIMEOUT, and slack-sdk's one retry of a reset
# connection), and no longer: after a crash mid-send the whole outbox waits for it to expire.
CLAIM_TTL = timedelta(seconds=2 * SEND_TIMEOUT + 5)
# One delivery (a look-up and a post) must end before its claim does, or another replica
# could send it too.
SEND_BUDGET_S = 2 * SEND_TIMEOUT
REFUSED_RETRY = timedelta(minutes=5)
BATCH = 50  # messages read per delivery pass
DEFAULT_BACKOFF_CAP = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    queued: int = 0
    problem: str | None = None  # last failure, for /healthz
    refused: bool = False  # a configuration error, not a passing outage
    oldest_at: datetime | None = None  # when the oldest queued message was queued
    # False when a message whose answer was lost may be posted twice: no look-up is possible
    # (webhooks and the terminal, or the Web API without the history scopes).
    exactly_once: bool = False
    target: str | None = None  # where it goes, credentials masked (team chats' webhook URLs)

    @property
    def state(self) -> str:
        """`ok`, `failing` (a passing outage) or `refused` (a configuration error)."""
        return "refused" if self.refused else ("failing" if self.problem else "ok")


@runtime_checkable
class Paced(Protocol):
    """A destination with a rate limit of its own: how long until it takes the next message."""

    def seconds_until_ready(self) -> float: ...

    @property
    def display_url(self) -> str: ...


def backoff(attempts: int, cap: timedelta, rand: Callable[[], float] = random.random) -> timedelta:
    """Full-jitter exponential backoff: 2 s, 4 s, 8 s ... capped."""
    ceiling = min(cap.total_seconds(), 2.0 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=max(0.5, ceiling * (0.5 + rand() / 2)))


class Deliverer:
    def __init__(
        self,
        store: StateStore,
        notifier: Notifier | EventSender,
        *,
        holder: str,
        clock: Clock,
        metrics: Metrics | None = None,
        backoff_cap: timedelta = DEFAULT_BACKOFF_CAP,
        destination: str = PRIMARY,
        locale: Locale = DEFAULT,
    ) -> None:
        self.destination = destination
        self._loc = locale
        # Each destination paces itself: one that says 429 never holds up another.
        self._not_before_meta = (
            META_SLACK_NOT_BEFORE
            if destination == PRIMARY
            else f"{META_SLACK_NOT_BEFORE}:{destination}"
        )
        self._store = store
        self._notifier = notifier
        self._holder = holder
        self._clock = clock
        self._metrics = metrics
        self._backoff_cap = backoff_cap
        self._not_before: datetime | None = None
        self._lock = asyncio.Lock()
        self._status = DeliveryStatus()

    def seconds_until_ready(self) -> float:
        if self._not_before is None:
            return 0.0
        return max(0.0, (self._not_before - self._clock()).total_seconds())

    async def deliver_pending(self) -> int:
        """Send what is queued, oldest first, stopping at the first failure. Returns sent count."""
        async with self._lock:
            return await self._deliver_pending()

    async def _deliver_pending(self) -> int:
        now = self._clock()
        await self._load_shared_not_before()
        if self._not_before is not None and now < self._not_before:
            return 0
        sent = 0
        messages = await self._store.pending_messages(limit=BATCH, destination=self.destination)
        for message in messages:
            now = self._clock()
            if isinstance(self._notifier, Paced) and self._notifier.seconds_until_ready() > 0:
                # Its rate limit has no slot yet: come back when it has, nothing claimed.
                wait = self._notifier.seconds_until_ready()
                self._not_before = now + timedelta(seconds=wait)
                break
            if not await self._store.claim_message(message.id, self._holder, now + CLAIM_TTL, now):
                # Another replica is sending it; keep order by not overtaking it.
                break
            if not await self._send_one(message):
                break
            sent += 1
        left = messages[sent:]
        if len(messages) == BATCH:
            # Only a full batch can hide more behind it; otherwise no second read per tick.
            left = await self._store.pending_messages(limit=1000, destination=self.destination)
        self._status = DeliveryStatus(
            queued=len(left),
            problem=self._status.problem,
            refused=self._status.refused,
            oldest_at=left[0].created_at if left else None,
        )
        return sent

    @property
    def status(self) -> DeliveryStatus:
        target = self._notifier.display_url if isinstance(self._notifier, Paced) else None
        return replace(self._status, exactly_once=self.exactly_once, target=target)

    @property
    def exactly_once(self) -> bool:
        """False when a lost answer may lead to a second post (no look-up possible)."""
        notifier = self._notifier
        return isinstance(notifier, SlackWebNotifier) and notifier.exactly_once

    async def _root_ts(self, root_id: str) -> str | None:
        ts = await self._store.delivered_ts(root_id)
        if ts is not None:
            return ts
        # Delivered long ago (its outbox row is pruned): the open incident remembers it.
        book, _ = await self._store.load_book()
        for incident in book.incidents.open.values():
            if incident.root_id == root_id and incident.root_ts:
                return incident.root_ts
        return None

    async def _transmit(self, message: OutboxMessage) -> Receipt:
        now = self._clock()
        rendered: SlackMessage
        notifier = self._notifier
        if isinstance(notifier, EventSender):
            if message.op is not None and message.op.kind is OpKind.DIGEST:
                await notifier.send_digest(message.op.text, message.op.markdown)
            else:
                await notifier.send_events(message.events, now)
            return Receipt()
        if message.op is not None:
            mention = notifier.mention if isinstance(notifier, SlackWebNotifier) else None
            rendered = render_op(message.op, now, mention, self._loc)
        else:
            rendered = render_alert(list(message.events), now, self._loc)
        if isinstance(notifier, SlackWebNotifier):
            try:
                async with asyncio.timeout(SEND_BUDGET_S):
                    return await notifier.deliver(message, rendered, self._root_ts)
            except TimeoutError:
                raise DeliveryRetryable("Slack did not answer in time", maybe_sent=True) from None
        events = list(message.events)
        console = render_alert_console(events, now, self._loc) if events else ""
        if message.op is not None and message.op.kind is OpKind.DIGEST:
            console = message.op.text
        await notifier.send(rendered, console or rendered.text)
        return Receipt()

    async def _send_one(self, message: OutboxMessage) -> bool:
        events = list(message.events)
        try:
            receipt = await self._transmit(message)
        except DeliveryPaced as exc:
            # Our own pacing said "not yet": nothing was sent, so nothing failed.
            self._not_before = self._clock() + timedelta(seconds=exc.retry_after or 1.0)
            return False
        except DeliveryRetryable as exc:
            if exc.retry_after is not None:
                delay = timedelta(seconds=exc.retry_after)
            else:
                delay = backoff(message.attempts + 1, self._backoff_cap)
            await self._failed(message, str(exc), delay, refused=False, maybe_sent=exc.maybe_sent)
            log.warning(
                "alert delivery failed, stays queued",
                extra={"error": str(exc), "retry_in_s": round(delay.total_seconds(), 1)},
            )
            return False
        except DeliveryRefused as exc:
            await self._failed(message, str(exc), REFUSED_RETRY, refused=True)
            if self.destination == PRIMARY:
                log.error(
                    "configuration error: Slack refused the alert (%s); it stays queued."
                    " Check SLACK_BOT_TOKEN / SLACK_CHANNEL / SLACK_WEBHOOK_URL.",
                    exc.reason,
                )
            else:
                # The message names the robot, the reason and the settings to check.
                log.error("configuration error: %s; the alert stays queued.", exc)
            return False
        root_id = receipt.root_id
        if root_id is None and message.op is not None and message.op.kind is OpKind.ROOT:
            root_id = message.id
        try:
            await self._store.mark_delivered(
                message.id, self._clock(), Receipt(ts=receipt.ts, root_id=root_id)
            )
        except StoreError:
            # Slack has it but we could not record that: the claim expires and it may be
            # sent again. At least once beats never.
            log.exception("alert delivered but not recorded; it may be sent once more")
            raise
        if self._metrics:
            self._metrics.alerts_sent.inc()
        self._not_before = None
        self._status = DeliveryStatus(queued=self._status.queued)
        log.info(
            "alert delivered",
            extra={"events": len(events), "via": self._notifier.name, "kind": message.kind},
        )
        return True

    async def _failed(
        self,
        message: OutboxMessage,
        error: str,
        delay: timedelta,
        *,
        refused: bool,
        maybe_sent: bool = False,
    ) -> None:
        now = self._clock()
        self._not_before = now + delay
        # The failed message is still queued; the pass's own count lands only when it ends,
        # and /healthz may read the status in between.
        queued = max(self._status.queued, 1)
        self._status = DeliveryStatus(queued=queued, problem=error, refused=refused)
        if self._metrics:
            self._metrics.delivery_failures.inc()
        # Once an attempt may have arrived, every later one keeps looking first, whatever
        # this attempt's own outcome (a look-up that failed proves nothing).
        maybe_sent = maybe_sent or message.attempted_at is not None
        await self._store.record_failure(message.id, error, now, maybe_sent=maybe_sent)
        # Shared so that another replica does not hammer an endpoint that said 429.
        await self._store.set_meta(self._not_before_meta, self._not_before.isoformat())

    async def _load_shared_not_before(self) -> None:
        raw = await self._store.get_meta(self._not_before_meta)
        if not raw:
            return
        try:
            shared = datetime.fromisoformat(raw)
        except ValueError:
            return
        if self._not_before is None or shared > self._not_before:
            self._not_before = shared
