"""The /sms-balance slash command: text -> Command, Command + snapshot -> ephemeral reply.

Pure: the web adapter reads the snapshot and the clock and hands them in; this module only
decides what to say. Everything echoed back to Slack is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.alerts_types import Forecast
from bot.messages import (
    LEVEL_EMOJI,
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    TYPE_LABELS,
    clip,
    clip_escaped,
    context_block,
    error_hint,
    escape_mrkdwn,
    fit_sections,
    fmt_ago,
    fmt_clock,
    fmt_duration,
    fmt_error,
    fmt_int,
    fmt_rate,
    fmt_threshold,
    fmt_when,
    header_block,
    scope_title,
    section_block,
)
from bot.quota import QUOTA_TYPES, Level, QuotaType, Status, worst
from bot.snapshot import ScopeView

Action = Literal["show", "refresh", "help", "unknown"]

SPARK_CHARS = "▁▂▃▄▅▆▇█"
_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
_ALL = "all"
_REFRESH = "refresh"
# An unknown word is echoed back; a pasted novel is not.
_MAX_ECHO = 100

STATUS_EMOJI: dict[Status, str] = {
    Status.OK: ":large_green_circle:",
    Status.WARNING: ":large_orange_circle:",
    Status.CRITICAL: ":red_circle:",
    Status.UNASSIGNED: ":white_circle:",
    Status.UNKNOWN: ":x:",
}


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


# --- small renderings --------------------------------------------------------------------------


def sparkline(values: Sequence[int], width: int = 24) -> str:
    """Unicode block chart of `values` in at most `width` characters (last value per bucket,
    so the right end is always the current value)."""
    if width < 1:
        raise ValueError("sparkline width must be at least 1")
    if not values:
        return ""
    sampled = _downsample(values, width)
    # Scale to the whole series, so a dip that falls between samples still sets the floor.
    lo, hi = min(values), max(values)
    if lo == hi:
        return SPARK_CHARS[3] * len(sampled)
    top = len(SPARK_CHARS) - 1
    # Half-up, not round()'s half-to-even, so equal steps map to evenly spaced blocks.
    return "".join(SPARK_CHARS[int((v - lo) * top / (hi - lo) + 0.5)] for v in sampled)


def _downsample(values: Sequence[int], width: int) -> list[int]:
    n = len(values)
    if n <= width:
        return list(values)
    # Bucket i covers up to index ceil((i + 1) * n / width) - 1; the last bucket ends at n - 1.
    return [values[((i + 1) * n + width - 1) // width - 1] for i in range(width)]


def usage(known_scopes: Sequence[str]) -> str:
    """Usage as Slack mrkdwn (scope names escaped)."""
    lines = [
        "*Usage*",
        "• `/sms-balance` or `/sms-balance all`: every scope, its levels and time to empty",
        "• `/sms-balance SCOPE`: one scope, with a 24 h trend",
        "• `/sms-balance refresh [SCOPE]`: read JPush now instead of the last poll",
        "• `/sms-balance help`: this text",
    ]
    if known_scopes:
        names = ", ".join(f"`{escape_mrkdwn(name)}`" for name in known_scopes)
        lines.append(f"Known scopes: {names}")
    else:
        lines.append(
            "No scopes are configured yet (set JPUSH_DEV_KEY/JPUSH_DEV_SECRET or JPUSH_APPS)."
        )
    return "\n".join(lines)


def _ephemeral(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "response_type": "ephemeral",
        "text": clip_escaped(text, MAX_FALLBACK_TEXT),
        "blocks": blocks,
    }


def render_refresh_pending(scope: str | None) -> dict[str, Any]:
    where = f" for *{escape_mrkdwn(scope)}*" if scope else ""
    text = f":hourglass_flowing_sand: Reading JPush{where} now… fresh numbers follow in a moment"
    return _ephemeral(text, [section_block(text)])


# --- the reply ---------------------------------------------------------------------------------


def render_reply(
    command: Command,
    views: Sequence[ScopeView],
    now: datetime,
    *,
    store_error: str | None = None,
    stale_after: timedelta | None = None,
) -> dict[str, Any]:
    known = [view.scope for view in views]
    if command.action == "help":
        return _with_store_note(_help_reply(known), store_error)
    if command.action == "unknown":
        return _with_store_note(_unknown_reply(command.word or "", known), store_error)
    if store_error is not None:
        return _store_error_reply(store_error)
    return _show_reply(command.scope, views, now, stale_after)


def _help_reply(known: Sequence[str]) -> dict[str, Any]:
    text = usage(known)
    return _ephemeral(text, [section_block(text)])


def _unknown_reply(word: str, known: Sequence[str]) -> dict[str, Any]:
    said = f':question: I don\'t know "{escape_mrkdwn(clip(word, _MAX_ECHO))}".'
    text = f"{said}\n{usage(known)}"
    return _ephemeral(text, [section_block(said), section_block(usage(known))])


def _store_note(store_error: str) -> str:
    return (
        ":warning: The state store is unreachable, so there are no numbers to show right now: "
        f"{escape_mrkdwn(clip(' '.join(store_error.split()), 300))}"
    )


def _with_store_note(reply: dict[str, Any], store_error: str | None) -> dict[str, Any]:
    if store_error is None:
        return reply
    return {**reply, "blocks": [*reply["blocks"], context_block(_store_note(store_error))]}


def _store_error_reply(store_error: str) -> dict[str, Any]:
    text = f"{_store_note(store_error)}. The bot keeps retrying; try again in a minute."
    return _ephemeral(text, [section_block(text)])


def _show_reply(
    scope: str | None, views: Sequence[ScopeView], now: datetime, stale_after: timedelta | None
) -> dict[str, Any]:
    single = scope is not None
    selected = [view for view in views if scope is None or view.scope == scope]
    if single and not selected:
        text = f"*{escape_mrkdwn(scope or '')}*: not read yet — the first poll is on its way"
        return _ephemeral(text, [section_block(text)])
    if not selected:
        text = "No scopes are configured, so there is nothing to show.\n" + usage([])
        return _ephemeral(text, [section_block(text)])

    status = worst(view.status for view in selected)
    title = f"SMS quota for {scope}: {status.value}" if single else f"SMS quotas: {status.value}"
    sections = [section_block(_scope_text(v, now, stale_after, single)) for v in selected]

    def overflow(left_out: int) -> dict[str, Any]:
        rest = selected[-left_out:]
        names = ", ".join(f"{escape_mrkdwn(v.scope)} ({v.status.value})" for v in rest)
        return context_block(f"…and {left_out} more: {names}")

    blocks = [
        header_block(f"{STATUS_EMOJI[status]} {title}"),
        *fit_sections(sections, MAX_BLOCKS - 2, overflow),
        context_block(f"as of {fmt_when(now, now)} · `/sms-balance help` for usage"),
    ]
    fallback = f"{escape_mrkdwn(title)} — " + "; ".join(_scope_summary(v) for v in selected)
    return _ephemeral(fallback, blocks)


def _freshness(view: ScopeView, now: datetime, stale_after: timedelta | None) -> str:
    assert view.reading is not None
    read_at = view.reading.read_at
    verb = "last tried" if view.reading.error is not None else "read"
    when = f"{fmt_ago(read_at, now)} ({fmt_clock(read_at)})"
    if stale_after is not None and now - read_at > stale_after:
        return f":warning: *last read {when} — JPush may be unreachable*"
    return f"_{verb} {when}_"


def _forecast_text(forecast: Forecast, now: datetime) -> str:
    """`runs out in about 2 days, Thu 14:00 UTC · 1,200/day`."""
    return (
        f"runs out in {fmt_duration(forecast.seconds_to_empty(now))}, "
        f"{fmt_when(forecast.empty_at, now)} · {fmt_rate(forecast.per_hour)}"
    )


def _type_line(
    view: ScopeView,
    quota_type: QuotaType,
    value: int | None,
    level: Level,
    now: datetime,
    single: bool,
) -> str:
    shown = f"*{fmt_int(value)}*" if value is not None else "—"
    parts = [f"{LEVEL_EMOJI[level]} *{TYPE_LABELS[quota_type]}*: {shown}"]
    trend = view.trend.get(quota_type)
    if single and trend:
        parts[0] += f" `{sparkline(trend)}`"
    parts.append(level.value)
    if single and level is not Level.UNASSIGNED:
        parts.append(escape_mrkdwn(fmt_threshold(view.thresholds.get(quota_type))))
    forecast = view.forecasts.get(quota_type)
    if forecast is not None and value is not None:
        parts.append(_forecast_text(forecast, now))
    return " · ".join(parts)


def _last_known(trend: Mapping[QuotaType, Sequence[int]]) -> str | None:
    known = [f"{t.value} {fmt_int(trend[t][-1])}" for t in QUOTA_TYPES if trend.get(t)]
    return f"last known: {' · '.join(known)}" if known else None


def _scope_text(view: ScopeView, now: datetime, stale_after: timedelta | None, single: bool) -> str:
    status = view.status
    lines = [f"*{escape_mrkdwn(scope_title(view.scope))}* — {STATUS_EMOJI[status]} {status.value}"]
    reading, levels = view.reading, view.levels
    if reading is None:
        lines.append(":hourglass: not read yet — the first poll is on its way")
        return "\n".join(lines)
    lines.append(_freshness(view, now, stale_after))
    if reading.error is not None:
        cannot = f":x: cannot read: {escape_mrkdwn(fmt_error(reading.error))}"
        hint = error_hint(view.scope, reading.error)
        lines.append(f"{cannot} — {escape_mrkdwn(hint)}" if hint else cannot)
        last = _last_known(view.trend)
        if last:
            lines.append(last)
    elif reading.unassigned or reading.balances is None or levels is None:
        lines.append(f"{LEVEL_EMOJI[Level.UNASSIGNED]} quota not assigned to this app (50033)")
    else:
        balances = reading.balances
        lines.extend(
            _type_line(view, t, balances.get(t), levels[t], now, single) for t in QUOTA_TYPES
        )
    return "\n".join(lines)


def _scope_summary(view: ScopeView) -> str:
    """`account critical (balance 9 critical, voice 702 warning, …)`, escaped."""
    head = f"{escape_mrkdwn(view.scope)} {view.status.value}"
    reading, levels = view.reading, view.levels
    if reading is None:
        return f"{head} (not read yet)"
    if reading.error is not None:
        return f"{head} (cannot read: {escape_mrkdwn(fmt_error(reading.error))})"
    if reading.unassigned or reading.balances is None or levels is None:
        return f"{head} (quota not assigned)"
    parts = []
    for t in QUOTA_TYPES:
        value = reading.balances.get(t)
        parts.append(
            f"{t.value} {fmt_int(value)} {levels[t].value}"
            if value is not None
            else f"{t.value} unassigned"
        )
    return f"{head} ({', '.join(parts)})"
