"""The /sms-balance slash command's words: text -> Command.

Pure: what the user typed and the known scope names in, a Command out. The replies are
rendered by bot.render.slash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["show", "refresh", "help", "unknown"]

_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
_ALL = "all"
_REFRESH = "refresh"


@dataclass(frozen=True)
class Command:
    action: Action
    scope: str | None = None  # canonical name from known_scopes; None means every scope
    word: str | None = None  # for "unknown": the first word that made no sense, as typed


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
    return _with_scope("show", words, known_scopes)


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
