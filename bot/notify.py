"""Where alert messages go: Slack Web API, an incoming webhook, or the terminal.

Each notifier turns every failure into DeliveryRetryable (try again later, maybe after
`retry_after`) or DeliveryRefused (a configuration problem; the message stays queued).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Protocol, TextIO

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.errors import DeliveryRefused, DeliveryRetryable
from bot.render.alert import SlackMessage
from bot.settings import Settings

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


class Notifier(Protocol):
    """Delivers one rendered alert message."""

    name: str

    async def send(self, message: SlackMessage, console_text: str) -> None: ...

    async def close(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def classify(status: int, error: str | None, headers: Any) -> Exception:
    """Map an HTTP status and Slack error string to a delivery error."""
    if status == 429 or error == "ratelimited":
        return DeliveryRetryable(
            f"rate limited by Slack (HTTP {status})", retry_after=_retry_after(headers) or 1.0
        )
    if status >= 500:
        return DeliveryRetryable(f"Slack server error (HTTP {status})")
    if error in REFUSALS:
        return DeliveryRefused(f"Slack refused the message: {error}", reason=error)
    if 400 <= status < 500 and status != 408:
        reason = error or f"http_{status}"
        return DeliveryRefused(f"Slack refused the message: {reason}", reason=reason)
    return DeliveryRetryable(f"Slack did not accept the message: {error or f'HTTP {status}'}")


class SlackWebNotifier:
    """chat.postMessage through slack-sdk's AsyncWebClient."""

    name = "chat.postMessage"

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        base_url: str = "https://slack.com/api/",
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.endswith("/"):
            base_url += "/"
        self._channel = channel
        # Only connection resets are retried inside the SDK; 429 and 5xx go back to the
        # outbox so that a Retry-After of minutes never blocks the loop.
        self._client = AsyncWebClient(
            token=token,
            base_url=base_url,
            session=session,
            timeout=SEND_TIMEOUT,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )

    async def send(self, message: SlackMessage, console_text: str) -> None:
        try:
            await self._client.chat_postMessage(
                channel=self._channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            response = exc.response
            data = response.data if isinstance(response.data, dict) else {}
            raise classify(response.status_code, data.get("error"), response.headers) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryRetryable(f"cannot reach Slack: {type(exc).__name__}") from None

    async def close(self) -> None:
        # AsyncWebClient opens a session per call unless given one; nothing to close.
        return None


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


def make_notifier(settings: Settings, *, console: TextIO | None = None) -> Notifier:
    """The Web API when a bot token is set, else the webhook, else the terminal."""
    if settings.slack_bot_token is not None and settings.slack_channel:
        return SlackWebNotifier(
            settings.slack_bot_token.get_secret_value(),
            settings.slack_channel,
            base_url=settings.slack_api_url,
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
