"""The /sms-balance slash command's words: text -> Command.

Pure: what the user typed and the known scope names in, a Command out. The replies are
rendered by bot.render.slash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from bot.settings import parse_duration

Action = Literal["show", "refresh", "help", "unknown", "ack", "unack", "snooze", "unsnooze"]

_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
_ALL = "all"
_REFRESH = "refresh"
_INCIDENT_WORDS: dict[str, Action] = {
    "ack": "ack",
    "unack": "unack",
    "snooze": "snooze",
    "unsnooze": "unsnooze",
}
DEFAULT_SNOOZE = timedelta(hours=1)
MAX_SNOOZE = timedelta(days=30)


@dataclass(frozen=True)
class Command:
    action: Action
    scope: str | None = None  # canonical name from known_scopes; None means every scope
    word: str | None = None  # for "unknown": the first word that made no sense, as typed
    duration: timedelta | None = None  # for "snooze"


# --- parsing -----------------------------------------------------------------------------------


def parse_command(text: str, known_scopes: Sequence[str]) -> Command:
    words = text.split()
    if not words:
        return Command("show")
    head = words[0].lower()
    if head == _REFRESH:
        return _with_scope("refresh", words[1:], known_scopes)
    if head in _HELP_WORDS:
        return Command("help") if len(words) == 1 else Command("unknown", word=words[1])
    if head in _INCIDENT_WORDS:
        return _incident(_INCIDENT_WORDS[head], words, known_scopes)
    return _with_scope("show", words, known_scopes)


def _incident(action: Action, words: Sequence[str], known_scopes: Sequence[str]) -> Command:
    """`ack SCOPE`, `unack SCOPE`, `snooze SCOPE [DURATION]`, `unsnooze SCOPE`."""
    if len(words) < 2:
        return Command("unknown", word=words[0])
    lookup = {name.lower(): name for name in known_scopes}
    scope = lookup.get(words[1].lower())
    if scope is None:
        return Command("unknown", word=words[1])
    rest = list(words[2:])
    duration = None
    if action == "snooze":
        duration = DEFAULT_SNOOZE
        if rest:
            duration = _snooze_length(rest[0])
            if duration is None:
                return Command("unknown", word=rest[0])
            rest = rest[1:]
    if rest:
        return Command("unknown", word=rest[0])
    return Command(action, scope=scope, duration=duration)


def _snooze_length(word: str) -> timedelta | None:
    try:
        length = parse_duration(word)
    except (ValueError, OverflowError):
        return None
    seconds = length.total_seconds()
    if not math.isfinite(seconds) or seconds <= 0 or length > MAX_SNOOZE:
        return None
    return length


def _with_scope(action: Action, words: Sequence[str], known_scopes: Sequence[str]) -> Command:
    """`[]`, `["all"]` or `[scope]`; anything else names its first unknown word."""
    if not words:
        return Command(action)
    lookup = {name.lower(): name for name in known_scopes}
    first = words[0].lower()
    if first != _ALL and first not in lookup:
        return Command("unknown", word=words[0])
    if len(words) > 1:
        return Command("unknown", word=words[1])
    return Command(action, scope=None if first == _ALL else lookup[first])
