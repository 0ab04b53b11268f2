"""Keeping STATE_URL credentials out of messages and logs."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?<=://)([^/@]*)@")


def redact_url(url: str) -> str:
    """The URL with any user:password part replaced, safe for logs and messages."""
    return _USERINFO.sub("***@", url)


def scrub(text: str, secret: str | None) -> str:
    """Remove `secret` from a driver's error text before it reaches a message or a log."""
    if secret:
        text = text.replace(secret, "***")
    return text
