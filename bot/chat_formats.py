"""The last formatting step for the chat robots: a title and markdown text -> request body.

Each robot takes a different envelope and a different size. The text is clipped to fit
(at a line break when there is one, with a marker saying so) so that a long alert is
shortened here rather than refused there.
"""

from __future__ import annotations

from typing import Any, Literal

# WeCom documents 4,096 bytes (UTF-8) for markdown content. DingTalk and Feishu refuse
# request bodies of about 20 KB; the text is kept well inside that with the envelope.
WECOM_MARKDOWN_MAX_BYTES = 4096
DINGTALK_MARKDOWN_MAX_BYTES = 18_000
FEISHU_CARD_TEXT_MAX_BYTES = 18_000
MAX_TITLE_CHARS = 100

CLIPPED = "\n…"

Tone = Literal["critical", "warning", "ok", "info"]

# Feishu card header colours.
_FEISHU_TEMPLATE: dict[Tone, str] = {
    "critical": "red",
    "warning": "orange",
    "ok": "green",
    "info": "blue",
}


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def clip_utf8(text: str, max_bytes: int, marker: str = CLIPPED) -> str:
    """`text` if it fits in `max_bytes` UTF-8 bytes, else a prefix ending in `marker` that does.

    Never splits a character; cuts at the last line break when that keeps at least half.
    """
    if utf8_len(text) <= max_bytes:
        return text
    budget = max_bytes - utf8_len(marker)
    if budget <= 0:
        return marker.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    prefix = text.encode("utf-8")[:budget].decode("utf-8", "ignore")
    cut = prefix.rfind("\n")
    if cut >= len(prefix) // 2:
        prefix = prefix[:cut]
    return prefix.rstrip() + marker


def _title(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1] + "…"


def dingtalk_markdown(title: str, text: str) -> dict[str, Any]:
    """DingTalk custom robot `markdown` message; `title` is what the notification shows."""
    return {
        "msgtype": "markdown",
        "markdown": {"title": _title(title), "text": clip_utf8(text, DINGTALK_MARKDOWN_MAX_BYTES)},
    }


def wecom_markdown(text: str) -> dict[str, Any]:
    """WeCom group robot `markdown` message (the title is the text's first line)."""
    return {
        "msgtype": "markdown",
        "markdown": {"content": clip_utf8(text, WECOM_MARKDOWN_MAX_BYTES)},
    }


def feishu_card(title: str, text: str, tone: Tone = "info") -> dict[str, Any]:
    """Feishu custom bot `interactive` card: a coloured header and one lark_md block."""
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {
                "title": {"tag": "plain_text", "content": _title(title)},
                "template": _FEISHU_TEMPLATE[tone],
            },
            "elements": [
                {
                    "tag": "div",
                    "text": {
                        "tag": "lark_md",
                        "content": clip_utf8(text, FEISHU_CARD_TEXT_MAX_BYTES),
                    },
                }
            ],
        },
    }
