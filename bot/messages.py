"""Alert messages: one poll cycle's events -> one grouped Slack message (or terminal text).

Pure: events and `now` in, strings and Block Kit dicts out. No I/O, no clock, no environment.
The small formatting helpers here (numbers, durations, times, escaping, block builders) are
shared with the slash-command replies and the `check` table so every surface reads alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts_types import AlertKind, Event, EventKind, Forecast
from bot.quota import FetchError, Level, QuotaType, Threshold

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
# Notifications and webhook clients without blocks show `text`; keep it readable, not a wall.
MAX_FALLBACK_TEXT = 3000
# A JPush error message is echoed to humans; a runaway body must not crowd out the rest.
MAX_ERROR_TEXT = 200

TYPE_LABELS: dict[QuotaType, str] = {
    QuotaType.BALANCE: "balance (all-purpose)",
    QuotaType.VOICE: "voice",
    QuotaType.INDUSTRY: "industry (transactional)",
    QuotaType.MARKET: "market (marketing)",
}

LEVEL_EMOJI: dict[Level, str] = {
    Level.OK: ":large_green_circle:",
    Level.WARNING: ":large_orange_circle:",
    Level.CRITICAL: ":red_circle:",
    Level.UNASSIGNED: ":white_circle:",
}

ACCOUNT_SCOPE = "account"


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]]


# --- formatting helpers (shared) ------------------------------------------------------------


def fmt_int(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def duration_words(seconds: float) -> str:
    """`3 minutes`, `5 hours`, `2 days`; `less than a minute` below 60 s (negative counts as 0)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return _plural(minutes, "minute")
    hours = round(seconds / 3600)
    if hours < 24:
        return _plural(hours, "hour")
    return _plural(round(seconds / 86400), "day")


def fmt_duration(seconds: float) -> str:
    words = duration_words(seconds)
    return words if words == "less than a minute" else f"about {words}"


def fmt_ago(then: datetime, now: datetime) -> str:
    """`3 minutes ago`, `just now`."""
    words = duration_words((_utc(now) - _utc(then)).total_seconds())
    return "just now" if words == "less than a minute" else f"{words} ago"


def _utc(dt: datetime) -> datetime:
    # Naive datetimes only come from our own code paths, which work in UTC throughout.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def fmt_when(dt: datetime, now: datetime | None = None) -> str:
    """`Thu 14:00 UTC` when within a week of `now`, else `2026-12-01 08:00 UTC`.

    Without `now` there is no week to be within, so the unambiguous long form is used.
    """
    dt = _utc(dt)
    if now is not None and abs(dt - _utc(now)) < timedelta(days=7):
        return dt.strftime("%a %H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def fmt_clock(dt: datetime) -> str:
    """`09:41 UTC`: for "read 3 minutes ago (09:41 UTC)"."""
    return _utc(dt).strftime("%H:%M UTC")


def fmt_rate(per_hour: float) -> str:
    per_day = per_hour * 24
    return "under 1/day" if round(per_day) < 1 else f"{fmt_int(round(per_day))}/day"


def fmt_threshold(threshold: Threshold | None) -> str:
    """`warn < 1,000 / crit < 100`; a 0 level is switched off."""
    if threshold is None or threshold.disabled:
        return "off"
    parts = []
    if threshold.warning:
        parts.append(f"warn < {fmt_int(threshold.warning)}")
    if threshold.critical:
        parts.append(f"crit < {fmt_int(threshold.critical)}")
    return " / ".join(parts)


def fmt_error(error: FetchError) -> str:
    """`auth failed (50002)`: one line, bounded, NOT escaped."""
    message = " ".join(error.message.split()) or "unknown error"
    message = clip(message, MAX_ERROR_TEXT)
    return f"{message} ({error.code})" if error.code is not None else message


def error_hint(scope: str, error: FetchError) -> str | None:
    """What an operator should check for a configuration error; None when nothing specific."""
    if error.code in (50001, 50002):
        if scope == ACCOUNT_SCOPE:
            return "check JPUSH_DEV_KEY/JPUSH_DEV_SECRET"
        return f'check app_key/master_secret of "{scope}" in JPUSH_APPS'
    if error.code == 50008:
        return "enable the SMS service in the JPush console"
    if error.config:
        return "check the configuration"
    return None


def fmt_forecast(forecast: Forecast, now: datetime) -> str:
    """`runs out in about 2 days (Thu 14:00 UTC), burning 1,200/day`."""
    return (
        f"runs out in {fmt_duration(forecast.seconds_to_empty(now))} "
        f"({fmt_when(forecast.empty_at, now)}), burning {fmt_rate(forecast.per_hour)}"
    )


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters, so `<!channel>`, `<@U1>` and links stay inert text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def clip_escaped(text: str, limit: int) -> str:
    """Like `clip` for escaped text, without cutting an `&amp;`-style entity in half."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def header_block(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": clip(text, MAX_HEADER_TEXT), "emoji": True},
    }


def section_block(mrkdwn: str) -> dict[str, Any]:
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": clip_escaped(mrkdwn, MAX_SECTION_TEXT)},
    }


def context_block(mrkdwn: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": clip_escaped(mrkdwn, MAX_SECTION_TEXT)}],
    }


def fit_sections(
    sections: Sequence[dict[str, Any]], room: int, overflow: Callable[[int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """At most `room` blocks: when there are more sections, the tail becomes one overflow block
    built by `overflow(number_left_out)`."""
    if len(sections) <= room:
        return list(sections)
    shown = max(0, room - 1)
    return [*sections[:shown], overflow(len(sections) - shown)]


def scope_title(scope: str) -> str:
    """`account (account)` / `shop (app)`: app names can never be `account` (contract)."""
    return f"{scope} ({'account' if scope == ACCOUNT_SCOPE else 'app'})"


def block_texts(blocks: Sequence[dict[str, Any]]) -> str:
    """Every text in `blocks`, one per line: what a reader (or a test) sees, minus styling."""
    lines: list[str] = []
    for block in blocks:
        if "text" in block:
            lines.append(block["text"]["text"])
        for element in block.get("elements", []):
            lines.append(element["text"])
        for field_ in block.get("fields", []):
            lines.append(field_["text"])
    return "\n".join(lines)


# --- alert events ---------------------------------------------------------------------------

# Severity ranks for grouping and the header: good news < warning < unreadable < critical
# (the contract's status order critical > unknown > warning > ok).
_GOOD, _WARNING, _UNKNOWN, _CRITICAL = 0, 1, 2, 3

_HEADERS: dict[int, tuple[str, str]] = {
    _CRITICAL: (":rotating_light:", "SMS quota critical"),
    _UNKNOWN: (":x:", "SMS balance cannot be read"),
    _WARNING: (":warning:", "SMS quota low"),
    _GOOD: (":white_check_mark:", "SMS quota back to normal"),
}


def _is_running_out(event: Event) -> bool:
    return event.kind is EventKind.RUNNING_OUT or event.alert is AlertKind.RUNNING_OUT


def _is_fetch(event: Event) -> bool:
    return event.kind in (EventKind.FETCH_FAILING, EventKind.FETCH_RECOVERED) or (
        event.quota_type is None and event.kind is EventKind.REPEATED
    )


def _severity(event: Event) -> int:
    if event.kind in (EventKind.RESOLVED, EventKind.FETCH_RECOVERED):
        return _GOOD
    if _is_fetch(event):
        return _UNKNOWN
    if event.level is Level.CRITICAL and not _is_running_out(event):
        return _CRITICAL
    return _WARNING


_EVENT_LEVEL_WORD: dict[int, str] = {
    _CRITICAL: "CRITICAL",
    _UNKNOWN: "UNKNOWN",
    _WARNING: "WARNING",
    _GOOD: "OK",
}


def _event_emoji(event: Event) -> str:
    if event.kind is EventKind.RESOLVED:
        return ":white_check_mark:"
    if event.kind is EventKind.FETCH_RECOVERED:
        return ":large_green_circle:"
    if _is_fetch(event):
        return ":x:"
    if _is_running_out(event):
        return ":hourglass_flowing_sand:"
    if event.level is Level.CRITICAL:
        return ":red_circle:"
    return ":large_orange_circle:"


def _event_tag(event: Event) -> str:
    if event.kind is EventKind.RESOLVED:
        return "RESOLVED"
    if event.kind is EventKind.FETCH_RECOVERED:
        return "RECOVERED"
    if _is_running_out(event):
        return "RUNNING OUT"
    return _EVENT_LEVEL_WORD[_severity(event)]


@dataclass(frozen=True)
class _Style:
    """How one event line is dressed: Slack mrkdwn or plain terminal text."""

    slack: bool

    def esc(self, text: str) -> str:
        return escape_mrkdwn(text) if self.slack else text

    def bold(self, text: str) -> str:
        return f"*{text}*" if self.slack else text

    def tag(self, event: Event) -> str:
        if self.slack:
            return f"{_event_emoji(event)} {self.bold(_event_tag(event))} ·"
        return f"[{_event_tag(event)}]"


_SLACK = _Style(slack=True)
_PLAIN = _Style(slack=False)


def _since(event: Event, now: datetime) -> str:
    if event.opened_at is None:
        return "still open (reminder)"
    return f"still open since {fmt_when(event.opened_at, now)} (reminder)"


def _fetch_body(event: Event, now: datetime, style: _Style) -> str:
    if event.kind is EventKind.FETCH_RECOVERED:
        text = "balance readable again, now ok"
        if event.opened_at is not None:
            text += f" (was failing since {fmt_when(event.opened_at, now)})"
        return text
    text = "cannot read balance"
    if event.error is not None:
        text += f": {style.esc(fmt_error(event.error))}"
        hint = error_hint(event.scope, event.error)
        if hint:
            text += f" — {style.esc(hint)}"
    if event.kind is EventKind.REPEATED:
        text += f" · {_since(event, now)}"
    elif event.opened_at is not None:
        text += f" · failing since {fmt_when(event.opened_at, now)}"
    return text


def _quota_detail(event: Event) -> str:
    """Value and the bar it crossed: `9 left, below critical 100`."""
    value = f"{fmt_int(event.value)} left" if event.value is not None else "value unknown"
    if event.kind is EventKind.RESOLVED:
        if _is_running_out(event):
            return f"{value}, no longer projected to run out soon"
        bar = f" above {fmt_int(event.threshold)}" if event.threshold is not None else ""
        was = f" (was {event.level.value})" if event.level else ""
        return f"{value}, back{bar}, now ok{was}"
    if _is_running_out(event):
        # Above its thresholds but draining fast: say which bar it is still above.
        if event.threshold is not None:
            return f"{value}, still above warning {fmt_int(event.threshold)}, level warning"
        return f"{value}, level warning"
    level = event.level.value if event.level else Level.WARNING.value
    if event.threshold is None:
        return f"{value}, level {level}"
    return f"{value}, below {level} {fmt_int(event.threshold)}"


def _change(event: Event, now: datetime) -> str | None:
    """What happened to this (scope, type), beyond its level."""
    if event.kind is EventKind.ESCALATED:
        return "warning → critical"
    if event.kind is EventKind.REPEATED:
        return _since(event, now)
    if event.kind in (EventKind.FIRED, EventKind.RUNNING_OUT):
        return "new"
    return None


def _quota_body(event: Event, now: datetime, style: _Style) -> str:
    assert event.quota_type is not None
    parts = [f"{style.bold(TYPE_LABELS[event.quota_type])}: {_quota_detail(event)}"]
    change = _change(event, now)
    if change:
        parts.append(change)
    if event.forecast is not None and event.kind is not EventKind.RESOLVED:
        parts.append(fmt_forecast(event.forecast, now))
    return " · ".join(parts)


def _event_body(event: Event, now: datetime, style: _Style) -> str:
    if _is_fetch(event) or event.quota_type is None:
        return _fetch_body(event, now, style)
    return _quota_body(event, now, style)


def _event_line(event: Event, now: datetime, style: _Style) -> str:
    return f"{style.tag(event)} {_event_body(event, now, style)}"


def _type_order(event: Event) -> int:
    return -1 if event.quota_type is None else list(QuotaType).index(event.quota_type)


def _group(events: Sequence[Event]) -> list[tuple[str, list[Event]]]:
    """Events by scope, worst scope first (account before apps on a tie), worst event first."""
    by_scope: dict[str, list[Event]] = {}
    for event in events:
        by_scope.setdefault(event.scope, []).append(event)
    groups = [
        (scope, sorted(evs, key=lambda e: (-_severity(e), _type_order(e))))
        for scope, evs in by_scope.items()
    ]
    groups.sort(key=lambda g: (-max(_severity(e) for e in g[1]), g[0] != ACCOUNT_SCOPE, g[0]))
    return groups


def _headline(events: Sequence[Event]) -> tuple[str, str]:
    worst = max(_severity(e) for e in events)
    emoji, title = _HEADERS[worst]
    if worst == _WARNING and all(_is_running_out(e) for e in events if _severity(e) == _WARNING):
        emoji, title = ":hourglass_flowing_sand:", "SMS quota running out"
    return emoji, title


def _summary(events: Sequence[Event], now: datetime) -> str:
    counts: dict[str, int] = {}
    for event in events:
        if event.kind is EventKind.RESOLVED:
            word = "resolved"
        elif event.kind is EventKind.FETCH_RECOVERED:
            word = "readable again"
        elif _is_fetch(event):
            word = "unreadable"
        elif _is_running_out(event):
            word = "running out"
        else:
            word = "critical" if event.level is Level.CRITICAL else "warning"
        counts[word] = counts.get(word, 0) + 1
    order = ["critical", "unreadable", "warning", "running out", "resolved", "readable again"]
    parts = [f"{counts[w]} {w}" for w in order if w in counts]
    return " · ".join([*parts, f"as of {fmt_when(now, now)}"])


def _require(events: Sequence[Event]) -> None:
    if not events:
        raise ValueError("no events to render: an empty cycle sends no message")


def render_alert(events: Sequence[Event], now: datetime) -> SlackMessage:
    """One grouped Slack message for one cycle's events. Raises ValueError for no events."""
    _require(events)
    emoji, title = _headline(events)
    groups = _group(events)
    sections = [
        section_block(
            f"*{escape_mrkdwn(scope_title(scope))}*\n"
            + "\n".join(_event_line(e, now, _SLACK) for e in evs)
        )
        for scope, evs in groups
    ]

    def overflow(left_out: int) -> dict[str, Any]:
        names = ", ".join(escape_mrkdwn(scope) for scope, _ in groups[-left_out:])
        return context_block(f"…and {left_out} more: {names}")

    blocks = [
        header_block(f"{emoji} {title}"),
        context_block(_summary(events, now)),
        *fit_sections(sections, MAX_BLOCKS - 2, overflow),
    ]
    return SlackMessage(text=_fallback(title, groups, now), blocks=blocks)


def _compact(event: Event, now: datetime) -> str:
    """`account [CRITICAL] balance (all-purpose): 9 left, below critical 100 · new`, escaped."""
    return escape_mrkdwn(f"{event.scope} {_event_line(event, now, _PLAIN)}")


def _fallback(title: str, groups: Sequence[tuple[str, list[Event]]], now: datetime) -> str:
    lines = [_compact(e, now) for _, evs in groups for e in evs]
    text = f"{title}: " + "; ".join(lines)
    if len(text) <= MAX_FALLBACK_TEXT:
        return text
    # Drop whole events rather than cutting one mid-sentence, and say how many were dropped.
    kept: list[str] = []
    for i, line in enumerate(lines):
        tail = f"; …and {len(lines) - i} more"
        if len(f"{title}: " + "; ".join([*kept, line])) + len(tail) > MAX_FALLBACK_TEXT:
            return clip_escaped(f"{title}: " + "; ".join(kept) + tail, MAX_FALLBACK_TEXT)
        kept.append(line)
    return clip_escaped(text, MAX_FALLBACK_TEXT)


def render_alert_console(events: Sequence[Event], now: datetime) -> str:
    """The same message for a terminal: no Slack markup, no escaping, one event per line."""
    _require(events)
    _, title = _headline(events)
    lines = [f"{title} — {_summary(events, now)}"]
    for scope, evs in _group(events):
        lines.append(f"  {scope_title(scope)}")
        lines.extend(f"    {_event_line(e, now, _PLAIN)}" for e in evs)
    return "\n".join(lines)
