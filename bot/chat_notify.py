"""The chat robots as alert destinations: built from settings, each renders and sends a cycle.

One `ChatDestination` per configured robot. It owns its webhook client (and so its pacing),
renders a cycle's events in its robot's format and the configured language, and sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import SecretStr

from bot.alerts_types import Event
from bot.chat_webhooks import ChatWebhookNotifier
from bot.destinations import ChatKind
from bot.pacing import RateLimit
from bot.render.chat import render_chat_alert, render_chat_digest
from bot.render.format import DEFAULT, Locale
from bot.settings import Settings


class ChatDestination:
    """One robot: what /healthz shows of it, and how a cycle's alert reaches it."""

    def __init__(self, webhook: ChatWebhookNotifier, loc: Locale = DEFAULT) -> None:
        self.webhook = webhook
        self.kind = webhook.kind
        self.name = webhook.name
        self.display_url = webhook.display_url
        self._loc = loc

    def seconds_until_ready(self) -> float:
        return self.webhook.seconds_until_ready()

    async def send_events(self, events: Sequence[Event], now: datetime) -> None:
        await self.webhook.send(render_chat_alert(self.kind, events, now, self._loc))

    async def send_digest(self, title: str, markdown: str) -> None:
        await self.webhook.send(render_chat_digest(self.kind, title, markdown))

    async def close(self) -> None:
        await self.webhook.close()


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def configured_chats(settings: Settings) -> dict[ChatKind, tuple[str, str | None]]:
    """The robots with a URL set: kind -> (url, signing secret)."""
    candidates = {
        ChatKind.DINGTALK: (settings.dingtalk_webhook_url, settings.dingtalk_secret),
        ChatKind.FEISHU: (settings.feishu_webhook_url, settings.feishu_secret),
        ChatKind.WECOM: (settings.wecom_webhook_url, None),
    }
    return {
        kind: (url.get_secret_value(), _secret(secret))
        for kind, (url, secret) in candidates.items()
        if url is not None
    }


def make_chat_destinations(
    settings: Settings,
    loc: Locale = DEFAULT,
    *,
    limits: Mapping[ChatKind, Sequence[RateLimit]] | None = None,
) -> list[ChatDestination]:
    """One destination per configured robot, in a fixed order (DingTalk, Feishu, WeCom).

    `limits` replaces a robot's documented rate limit (tests use short windows).
    """
    limits = limits or {}
    return [
        ChatDestination(ChatWebhookNotifier(kind, url, secret=secret, limits=limits.get(kind)), loc)
        for kind, (url, secret) in configured_chats(settings).items()
    ]
