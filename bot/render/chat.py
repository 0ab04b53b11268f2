"""Alert messages for the chat robots: DingTalk markdown, a Feishu card, WeCom markdown.

The words, their order and their markdown are the alert renderer's (`render_alert_markdown`);
only the envelope differs per robot, with its size limit and, for Feishu, the card's header
colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.alerts_types import Event
from bot.chat_formats import Tone, dingtalk_markdown, feishu_card, wecom_markdown
from bot.destinations import ChatKind
from bot.quota import Status
from bot.render.alert import markdown_text, render_alert_markdown
from bot.render.format import DEFAULT, Locale

_CARD_TONE: dict[Status, Tone] = {
    Status.CRITICAL: "critical",
    Status.UNKNOWN: "critical",
    Status.WARNING: "warning",
    Status.OK: "ok",
    Status.UNASSIGNED: "ok",
}


def render_chat_alert(
    kind: ChatKind, events: Sequence[Event], now: datetime, loc: Locale = DEFAULT
) -> dict[str, Any]:
    """The request body that posts one cycle's alert to a `kind` robot."""
    message = render_alert_markdown(events, now, loc)
    return _envelope(kind, message.title, message.text, message.body, _CARD_TONE[message.status])


def render_chat_digest(kind: ChatKind, title: str, body: str) -> dict[str, Any]:
    """The request body that posts the daily summary (already markdown) to a `kind` robot."""
    return _envelope(kind, title, markdown_text(title, body), body, "info")


def _envelope(kind: ChatKind, title: str, text: str, body: str, tone: Tone) -> dict[str, Any]:
    if kind is ChatKind.DINGTALK:
        return dingtalk_markdown(title, text)
    if kind is ChatKind.WECOM:
        return wecom_markdown(text)
    return feishu_card(title, body, tone)
