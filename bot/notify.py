"""Where alert messages go: Slack Web API, an incoming webhook, or the terminal.

Each notifier turns every failure into DeliveryRetryable (try again later, maybe after
`retry_after`) or DeliveryRefused (a configuration problem; the message stays queued).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO, runtime_checkable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.alerts_types import Event, Op, OpKind
from bot.clock import Clock, utcnow
from bot.errors import DeliveryRefused, DeliveryRetryable
from bot.incidents import IncidentPolicy
from bot.outbox import Routing
from bot.render.alert import SlackMessage
from bot.retry_after import bounded_pause, parse_retry_after
from bot.settings import Settings
from bot.store.base import OutboxMessage, Receipt

log = logging.getLogger(__name__)

# Slack errors that retrying cannot fix: the token, the channel or the app set-up is wrong.
REFUSALS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        "ekm_access_denied",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        # incoming webhook answers
        "invalid_token",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "invalid_payload",
        "user_not_found",
        "no_text",
    }
)

SEND_TIMEOUT = 15  # seconds; below the deliverer's claim so a slow post can't outlive its claim


@runtime_checkable
class EventSender(Protocol):
    """A destination that renders a cycle's events itself (team chats, in their own format)."""

    name: str

    async def send_events(self, events: Sequence[Event], now: datetime) -> None: ...

    async def send_digest(self, title: str, markdown: str) -> None: ...

    async def close(self) -> None: ...


class Notifier(Protocol):
    """Delivers one rendered alert message."""

    name: str

    async def send(self, message: SlackMessage, console_text: str) -> None: ...

    async def close(self) -> None: ...


# The longest pause a Slack 429 can impose on the outbox, whatever its Retry-After says.
MAX_SLACK_PAUSE = 15 * 60.0


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            if isinstance(value, list | tuple):
                value = value[0] if value else ""
            return parse_retry_after(str(value), utcnow)
    return None


def classify(status: int, error: str | None, headers: Any) -> Exception:
    """Map an HTTP status and Slack error string to a delivery error."""
    if status == 429 or error == "ratelimited":
        pause = bounded_pause(_retry_after(headers), MAX_SLACK_PAUSE)
        return DeliveryRetryable(f"rate limited by Slack (HTTP {status})", retry_after=pause)
    if status >= 500:
        return DeliveryRetryable(f"Slack server error (HTTP {status})")
    if error in REFUSALS:
        return DeliveryRefused(f"Slack refused the message: {error}", reason=error)
    if 400 <= status < 500 and status != 408:
        reason = error or f"http_{status}"
        return DeliveryRefused(f"Slack refused the message: {reason}", reason=reason)
    return DeliveryRetryable(f"Slack did not accept the message: {error or f'HTTP {status}'}")


# Updating a root that Slack no longer lets us edit: post a fresh root instead (once).
_UPDATE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# How far before the first attempt a look-up starts: clocks differ, Slack's ts is its own.
LOOKUP_SLACK = timedelta(minutes=2)
LOOKUP_PAGES = 5
METADATA_EVENT = "sms_balance_alert"

RootLookup = Callable[[str], Awaitable[str | None]]


class SlackWebNotifier:
    """The Web API: grouped messages, and incident roots, thread replies and root updates.

    Exactly once: every post carries metadata naming its outbox id, and a message whose
    earlier attempt may have reached Slack is looked up (conversations.history / .replies)
    before it is posted again. Without the history scopes that look-up is impossible and
    delivery falls back to at least once (`exactly_once` turns False).
    """

    name = "chat.postMessage"

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        base_url: str = "https://slack.com/api/",
        session: aiohttp.ClientSession | None = None,
        mention: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not base_url.endswith("/"):
            base_url += "/"
        self._channel = channel
        self.mention = mention
        self._clock = clock or utcnow
        self.exactly_once = True
        # chat.postMessage takes a channel name, chat.update and the look-ups need its id:
        # learnt from the first post's answer.
        self._channel_ids: dict[str, str] = {}
        # No retries inside the SDK: a re-sent post after a lost answer is the duplicate the
        # look-up exists to prevent. 429, 5xx and resets all go back to the outbox.
        self._client = AsyncWebClient(
            token=token, base_url=base_url, session=session, timeout=SEND_TIMEOUT, retry_handlers=[]
        )

    async def send(self, message: SlackMessage, console_text: str) -> None:
        await self._call(
            "chat_postMessage",
            channel=self._channel,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
            unfurl_media=False,
        )

    async def deliver(
        self, message: OutboxMessage, rendered: SlackMessage, root_ts: RootLookup
    ) -> Receipt:
        """Deliver one outbox message (grouped or an incident operation) exactly once."""
        op = message.op
        if op is None:
            return await self._post(message, self._channel, rendered, scope=_scopes(message))
        scope = _op_scope(op)
        if op.kind in (OpKind.ROOT, OpKind.DIGEST):
            return await self._post(message, op.channel, rendered, scope=scope)
        ts = await root_ts(op.root_id)
        if op.kind is OpKind.REPLY:
            if ts is None:
                # The root is gone from every record (long past retention): say it top-level.
                return await self._post(message, op.channel, rendered, scope=scope)
            return await self._post(
                message,
                op.channel,
                rendered,
                scope=scope,
                thread_ts=ts,
                broadcast=op.broadcast,
            )
        return await self._update(message, op, ts, rendered)

    async def _update(
        self, message: OutboxMessage, op: Op, ts: str | None, rendered: SlackMessage
    ) -> Receipt:
        """chat.update of the root; a fresh root when Slack has none to edit (never a loop)."""
        if message.attempted_at is not None:
            # An earlier attempt may have posted the fresh root already.
            found = await self._look_up(message, op.channel, thread_ts=None)
            if found is not None:
                return Receipt(ts=found, root_id=op.root_id)
        if ts is not None:
            try:
                await self._call(
                    "chat_update",
                    channel=self._channel_ids.get(op.channel, op.channel),
                    ts=ts,
                    text=rendered.text,
                    blocks=rendered.blocks,
                )
                return Receipt(ts=ts)
            except DeliveryRefused as exc:
                if exc.reason not in _UPDATE_GONE:
                    raise
                log.warning("incident root cannot be updated (%s); posting a fresh one", exc.reason)
        receipt = await self._post(
            message, op.channel, rendered, scope=_op_scope(op), look_up=False
        )
        return Receipt(ts=receipt.ts, root_id=op.root_id)

    async def _post(
        self,
        message: OutboxMessage,
        channel: str,
        rendered: SlackMessage,
        *,
        scope: str,
        thread_ts: str | None = None,
        broadcast: bool = False,
        look_up: bool = True,
    ) -> Receipt:
        if look_up and message.attempted_at is not None:
            found = await self._look_up(message, channel, thread_ts=thread_ts)
            if found is not None:
                log.info("message found in Slack after an unanswered attempt; not posted again")
                return Receipt(ts=found)
        extra: dict[str, Any] = {}
        if thread_ts is not None:
            extra["thread_ts"] = thread_ts
            if broadcast:
                extra["reply_broadcast"] = True
        data = await self._call(
            "chat_postMessage",
            channel=channel,
            text=rendered.text,
            blocks=rendered.blocks,
            unfurl_links=False,
            unfurl_media=False,
            metadata={
                "event_type": METADATA_EVENT,
                "event_payload": {"message_id": message.id, "scope": scope},
            },
            **extra,
        )
        if isinstance(data.get("channel"), str):
            self._channel_ids[channel] = data["channel"]
        ts = data.get("ts")
        return Receipt(ts=str(ts) if ts is not None else None)

    async def _look_up(
        self, message: OutboxMessage, channel: str, *, thread_ts: str | None
    ) -> str | None:
        """The ts of the message Slack already has for this outbox id, if any."""
        assert message.attempted_at is not None
        oldest = f"{(message.attempted_at - LOOKUP_SLACK).timestamp():.6f}"
        cursor: str | None = None
        for _ in range(LOOKUP_PAGES):
            args: dict[str, Any] = {
                "channel": self._channel_ids.get(channel, channel),
                "oldest": oldest,
                "include_all_metadata": True,
                "limit": 200,
            }
            if cursor:
                args["cursor"] = cursor
            try:
                if thread_ts is None:
                    data = await self._call("conversations_history", **args)
                else:
                    data = await self._call("conversations_replies", ts=thread_ts, **args)
            except DeliveryRefused as exc:
                if exc.reason in ("missing_scope", "channel_not_found"):
                    if self.exactly_once:
                        log.warning(
                            "Slack refused the look-up before a re-send (missing_scope): add"
                            " channels:history and groups:history; until then a message"
                            " whose answer was lost may be posted twice"
                        )
                    self.exactly_once = False
                    return None
                raise
            self.exactly_once = True
            for found in data.get("messages") or []:
                if _metadata_id(found) == message.id:
                    return str(found.get("ts"))
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not data.get("has_more") or not cursor:
                return None
        return None

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await getattr(self._client, method)(**kwargs)
        except SlackApiError as exc:
            response = exc.response
            data = response.data if isinstance(response.data, dict) else {}
            raise classify(response.status_code, data.get("error"), response.headers) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            # The request went out and no answer came back: it may have been posted.
            raise DeliveryRetryable(
                f"no answer from Slack: {type(exc).__name__}", maybe_sent=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryRetryable(
                f"cannot reach Slack: {type(exc).__name__}",
                maybe_sent=not isinstance(exc, aiohttp.ClientConnectorError),
            ) from None
        data = response.data
        return data if isinstance(data, dict) else {}

    async def close(self) -> None:
        # AsyncWebClient opens a session per call unless given one; nothing to close.
        return None


def _metadata_id(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT:
        return None
    payload = metadata.get("event_payload")
    if not isinstance(payload, dict):
        return None
    found = payload.get("message_id")
    return found if isinstance(found, str) else None


def _op_scope(op: Op) -> str:
    scopes = sorted({v.scope for v in op.views} | {e.scope for e in op.events})
    return ",".join(scopes) or op.scope


def _scopes(message: OutboxMessage) -> str:
    return ",".join(sorted({e.scope for e in message.events}))


class SlackWebhookNotifier:
    """An incoming webhook through slack-sdk's AsyncWebhookClient."""

    name = "incoming-webhook"

    def __init__(self, url: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self._client = AsyncWebhookClient(
            url=url,
            timeout=SEND_TIMEOUT,
            session=session,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, message: SlackMessage, console_text: str) -> None:
        try:
            response = await self._client.send(
                text=message.text, blocks=message.blocks, unfurl_links=False, unfurl_media=False
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryRetryable(f"cannot reach Slack: {type(exc).__name__}") from None
        if response.status_code == 200:
            return
        body = (response.body or "").strip()
        error = body if body and len(body) < 100 and " " not in body else None
        raise classify(response.status_code, error, response.headers)

    async def close(self) -> None:
        return None


class ConsoleNotifier:
    """No Slack configured: alerts go to standard output."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: SlackMessage, console_text: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(console_text.rstrip("\n") + "\n\n")
        stream.flush()
        await asyncio.sleep(0)

    async def close(self) -> None:
        return None


def make_routing(settings: Settings) -> Routing:
    """Incidents with the Web API (it can update and thread); grouped messages otherwise."""
    if settings.slack_bot_token is None or not settings.slack_channel:
        return Routing()
    policy = IncidentPolicy(
        channel=settings.slack_channel,
        channels={app.name: app.channel for app in settings.apps if app.channel},
        mention=settings.slack_mention_critical,
    )
    return Routing(incidents=policy)


def make_notifier(settings: Settings, *, console: TextIO | None = None) -> Notifier:
    """The Web API when a bot token is set, else the webhook, else the terminal."""
    if settings.slack_bot_token is not None and settings.slack_channel:
        return SlackWebNotifier(
            settings.slack_bot_token.get_secret_value(),
            settings.slack_channel,
            base_url=settings.slack_api_url,
            mention=settings.slack_mention_critical,
        )
    if settings.slack_webhook_url is not None:
        return SlackWebhookNotifier(settings.slack_webhook_url.get_secret_value())
    return ConsoleNotifier(console)


def warn_console_delivery(settings: Settings) -> None:
    """Say so when alerts will only reach standard output (no Slack settings)."""
    if settings.slack_bot_token is None and settings.slack_webhook_url is None:
        log.warning(
            "no Slack delivery configured (SLACK_BOT_TOKEN + SLACK_CHANNEL, or"
            " SLACK_WEBHOOK_URL): alerts are written to standard output"
        )
