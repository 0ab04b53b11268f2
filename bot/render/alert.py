"""Alert messages: one poll cycle's events -> one grouped Slack message (or terminal text).

Each event's tone (tones.py) decides its severity, emoji, tag and summary word; its words come
from the language table; the destination's `Markup` is applied last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.alerts_types import REPORT_ALERTS, AlertKind, Event, EventKind
from bot.quota import Level, QuotaType, Status
from bot.render.format import (
    ACCOUNT_SCOPE,
    DEFAULT,
    MARKDOWN,
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    PLAIN,
    SEP,
    SLACK,
    Locale,
    Markup,
    burn_figures,
    clip_escaped,
    context_block,
    duration_words,
    error_hint,
    escape_markdown,
    escape_mrkdwn,
    fit_sections,
    fmt_error,
    fmt_int,
    fmt_when,
    header_block,
    runs_out,
    scope_title,
    section_block,
)
from bot.render.tones import TONES, Tone, is_burn, is_fetch, is_running_out, severity, tone_of


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class MarkdownMessage:
    """For chat robots that take a title and markdown text."""

    title: str
    text: str  # a heading with the title, then `body`
    body: str  # the summary and the scopes: for a destination that shows the title itself
    status: Status  # the worst event's, for a destination that colours its card


def _since(event: Event, now: datetime, loc: Locale) -> str:
    if event.opened_at is None:
        return loc.lang.reminder
    return loc.lang.reminder_since.format(when=fmt_when(event.opened_at, now, loc))


def _fetch_body(event: Event, now: datetime, loc: Locale, markup: Markup) -> str:
    lang = loc.lang
    if event.kind is EventKind.FETCH_RECOVERED:
        text = lang.readable_again
        if event.opened_at is not None:
            when = fmt_when(event.opened_at, now, loc)
            text = lang.was_failing_since.format(text=text, when=when)
        return text
    text = lang.cannot_read_balance
    if event.error is not None:
        text = lang.cannot_read_because.format(error=markup.escape(fmt_error(event.error, loc)))
        hint = error_hint(event.scope, event.error, loc)
        if hint:
            text = lang.with_hint.format(text=text, hint=markup.escape(hint))
    if event.kind is EventKind.REPEATED:
        return text + SEP + _since(event, now, loc)
    if event.opened_at is not None:
        return text + SEP + lang.failing_since.format(when=fmt_when(event.opened_at, now, loc))
    return text


def _report_body(event: Event, now: datetime, loc: Locale) -> str:
    """A delivery-report alert: sends failing for lack of quota, or rate-limited."""
    lang = loc.lang
    failing = event.alert is AlertKind.SENDS_FAILING
    if event.kind is EventKind.RESOLVED:
        text = lang.sends_work_again if failing else lang.rate_limit_over
        if event.opened_at is not None:
            text = lang.was_failing_since.format(
                text=text, when=fmt_when(event.opened_at, now, loc)
            )
        return text
    text = lang.sends_failing if failing else lang.sends_rate_limited
    if event.kind is EventKind.REPEATED:
        return text + SEP + _since(event, now, loc)
    return text + SEP + lang.new


def _quota_detail(event: Event, loc: Locale) -> str:
    """Value and the bar it crossed: `9 left, below critical 100`."""
    lang = loc.lang
    value = (
        lang.left.format(n=fmt_int(event.value, loc))
        if event.value is not None
        else lang.value_unknown
    )
    warning = lang.status_word[Status.WARNING]
    if event.kind is EventKind.RESOLVED:
        if is_running_out(event):
            return lang.no_longer_running_out.format(value=value)
        bar = (
            ""
            if event.threshold is None
            else lang.bar_above.format(n=fmt_int(event.threshold, loc))
        )
        was = "" if not event.level else lang.was_level.format(level=_word(event.level, loc))
        return lang.back_above.format(value=value, bar=bar, was=was)
    if is_running_out(event):
        # Above its thresholds but draining fast: say which bar it is still above.
        if event.threshold is not None:
            n = fmt_int(event.threshold, loc)
            return lang.running_out_above.format(value=value, level=warning, n=n)
        return value
    level = _word(event.level, loc) if event.level else warning
    if event.threshold is None:
        return lang.at_level.format(value=value, level=level)
    return lang.below_level.format(value=value, level=level, n=fmt_int(event.threshold, loc))


def _drop_detail(event: Event, loc: Locale) -> str:
    """`dropped 60,000 (60 %) in 5 minutes, 40,000 left — if no quota was moved to an app…`"""
    lang = loc.lang
    value = (
        lang.left.format(n=fmt_int(event.value, loc))
        if event.value is not None
        else lang.value_unknown
    )
    drop = event.drop
    if drop is None:
        return value
    text = lang.dropped.format(
        amount=fmt_int(drop.amount, loc),
        percent=fmt_int(round(drop.percent), loc),
        period=duration_words(drop.seconds, loc),
        value=value,
    )
    hint = lang.drop_hint_account if event.scope == ACCOUNT_SCOPE else lang.drop_hint_app
    return lang.with_hint.format(text=text, hint=hint)


def _burn_detail(event: Event, loc: Locale) -> str:
    """`burning 5,000/hour in the last hour, 50× the usual 100/hour — check for SMS pumping`"""
    lang = loc.lang
    if event.burn is None:
        return lang.value_unknown
    figures = burn_figures(event.burn, loc)
    if event.kind is EventKind.RESOLVED:
        return lang.burn_back.format(**figures)
    text = lang.burning_fast.format(**figures)
    return lang.with_hint.format(text=text, hint=lang.burn_hint)


def _word(level: Level, loc: Locale) -> str:
    return loc.lang.status_word[level.status]


def _change(event: Event, now: datetime, loc: Locale) -> str | None:
    """What happened to this (scope, type), beyond its level."""
    if event.kind is EventKind.ESCALATED:
        return loc.lang.escalated.format(
            low=_word(Level.WARNING, loc), high=_word(Level.CRITICAL, loc)
        )
    if event.kind is EventKind.REPEATED:
        return _since(event, now, loc)
    if event.kind in (EventKind.FIRED, EventKind.RUNNING_OUT, EventKind.BURNING_FAST):
        return loc.lang.new
    return None


def _quota_body(event: Event, now: datetime, loc: Locale, markup: Markup) -> str:
    assert event.quota_type is not None
    label = markup.bold(loc.lang.type_label[event.quota_type])
    if event.kind is EventKind.SUDDEN_DROP:
        detail = _drop_detail(event, loc)
    elif is_burn(event):
        detail = _burn_detail(event, loc)
    else:
        detail = _quota_detail(event, loc)
    parts = [loc.lang.labelled.format(label=label, text=detail)]
    change = _change(event, now, loc)
    if change:
        parts.append(change)
    if event.forecast is not None and event.kind is not EventKind.RESOLVED:
        parts.append(runs_out(event.forecast, now, loc))
    if event.pool is not None:
        parts.append(
            loc.lang.pool_advice.format(
                n=fmt_int(event.pool, loc),
                type=loc.lang.type_name[event.quota_type],
                scope=markup.escape(event.scope),
            )
        )
    return SEP.join(parts)


def _event_line(event: Event, now: datetime, loc: Locale, markup: Markup) -> str:
    tone = tone_of(event)
    tag = markup.tag(TONES[tone].emoji, loc.lang.tone_tag[tone])
    if event.alert in REPORT_ALERTS:
        body = _report_body(event, now, loc)
    elif is_fetch(event) or event.quota_type is None:
        body = _fetch_body(event, now, loc, markup)
    else:
        body = _quota_body(event, now, loc, markup)
    return f"{tag} {body}"


def event_line(event: Event, now: datetime, loc: Locale = DEFAULT, markup: Markup = SLACK) -> str:
    """One event as a line: `:red_circle: *CRITICAL* · balance (all-purpose): 9 left, …`."""
    return _event_line(event, now, loc, markup)


def group_events(events: Sequence[Event]) -> list[tuple[str, list[Event]]]:
    """Events by scope, worst scope first, worst event first."""
    return _group(events)


def _type_order(event: Event) -> int:
    return -1 if event.quota_type is None else list(QuotaType).index(event.quota_type)


def _group(events: Sequence[Event]) -> list[tuple[str, list[Event]]]:
    """Events by scope, worst scope first (account before apps on a tie), worst event first."""
    by_scope: dict[str, list[Event]] = {}
    for event in events:
        by_scope.setdefault(event.scope, []).append(event)
    groups = [
        (scope, sorted(evs, key=lambda e: (-severity(e), _type_order(e))))
        for scope, evs in by_scope.items()
    ]
    groups.sort(key=lambda g: (-max(severity(e) for e in g[1]), g[0] != ACCOUNT_SCOPE, g[0]))
    return groups


def _headline(events: Sequence[Event]) -> Tone:
    """The first tone, in `Tone` order, that any event has."""
    present = {tone_of(e) for e in events}
    return next(tone for tone in Tone if tone in present)


def _summary(events: Sequence[Event], now: datetime, loc: Locale) -> str:
    counts: dict[Tone, int] = {}
    for event in events:
        tone = tone_of(event)
        counts[tone] = counts.get(tone, 0) + 1
    parts = [
        loc.lang.count.format(n=counts[tone], word=loc.lang.tone_count[tone])
        for tone in Tone
        if tone in counts
    ]
    return SEP.join([*parts, loc.lang.as_of.format(when=fmt_when(now, now, loc))])


def _require(events: Sequence[Event]) -> None:
    if not events:
        raise ValueError("no events to render: an empty cycle sends no message")


def render_alert(events: Sequence[Event], now: datetime, loc: Locale = DEFAULT) -> SlackMessage:
    """One grouped Slack message for one cycle's events. Raises ValueError for no events."""
    _require(events)
    tone = _headline(events)
    title = loc.lang.tone_header[tone]
    groups = _group(events)
    sections = [
        section_block(
            f"*{escape_mrkdwn(scope_title(scope, loc))}*\n"
            + "\n".join(_event_line(e, now, loc, SLACK) for e in evs)
        )
        for scope, evs in groups
    ]

    def overflow(left_out: int) -> dict[str, Any]:
        names = ", ".join(escape_mrkdwn(scope) for scope, _ in groups[-left_out:])
        return context_block(loc.lang.and_more.format(n=left_out, names=names))

    blocks = [
        header_block(f"{TONES[tone].header_emoji} {title}"),
        context_block(_summary(events, now, loc)),
        *fit_sections(sections, MAX_BLOCKS - 2, overflow),
    ]
    return SlackMessage(text=_fallback(title, groups, now, loc), blocks=blocks)


def _compact(event: Event, now: datetime, loc: Locale) -> str:
    """`account [CRITICAL] balance (all-purpose): 9 left, below critical 100 · new`, escaped."""
    return escape_mrkdwn(f"{event.scope} {_event_line(event, now, loc, PLAIN)}")


def _fallback(
    title: str, groups: Sequence[tuple[str, list[Event]]], now: datetime, loc: Locale
) -> str:
    lines = [_compact(e, now, loc) for _, evs in groups for e in evs]
    head = f"{escape_mrkdwn(title)}: "
    text = head + "; ".join(lines)
    if len(text) <= MAX_FALLBACK_TEXT:
        return text
    # Drop whole events rather than cutting one mid-sentence, and say how many were dropped.
    kept: list[str] = []
    for i, line in enumerate(lines):
        tail = "; " + loc.lang.and_more_events.format(n=len(lines) - i)
        if len(head + "; ".join([*kept, line])) + len(tail) > MAX_FALLBACK_TEXT:
            return clip_escaped(head + "; ".join(kept) + tail, MAX_FALLBACK_TEXT)
        kept.append(line)
    return clip_escaped(text, MAX_FALLBACK_TEXT)


def render_alert_console(events: Sequence[Event], now: datetime, loc: Locale = DEFAULT) -> str:
    """The same message for a terminal: no Slack markup, no escaping, one event per line."""
    _require(events)
    title = loc.lang.tone_header[_headline(events)]
    lines = [f"{title} — {_summary(events, now, loc)}"]
    for scope, evs in _group(events):
        lines.append(f"  {scope_title(scope, loc)}")
        lines.extend(f"    {_event_line(e, now, loc, PLAIN)}" for e in evs)
    return "\n".join(lines)


def markdown_text(title: str, body: str) -> str:
    """A chat message's markdown: the title as a heading, then the body."""
    return f"#### {escape_markdown(title)}\n{body}"


def render_alert_markdown(
    events: Sequence[Event], now: datetime, loc: Locale = DEFAULT
) -> MarkdownMessage:
    """The same message as markdown: the Slack layout with the markdown markup. Not clipped:
    each destination knows its own size limit."""
    _require(events)
    tone = _headline(events)
    title = loc.lang.tone_header[tone]
    lines = [escape_markdown(_summary(events, now, loc))]
    for scope, evs in _group(events):
        lines.append("")
        lines.append(MARKDOWN.bold(escape_markdown(scope_title(scope, loc))))
        lines.extend(f"- {_event_line(e, now, loc, MARKDOWN)}" for e in evs)
    body = "\n".join(lines)
    return MarkdownMessage(
        title=title,
        text=markdown_text(title, body),
        body=body,
        status=TONES[tone].status,
    )
