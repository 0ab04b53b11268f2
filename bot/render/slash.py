"""/sms-balance replies: a parsed Command + the scope views -> an ephemeral Block Kit reply.

The web adapter reads the views and the clock and hands them in; this module only decides what
to say. Everything echoed back to Slack is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.alerts_types import Notice
from bot.commands import Command
from bot.quota import QUOTA_TYPES, Level, QuotaType, worst
from bot.render.format import (
    DEFAULT,
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    SEP,
    SLACK,
    Locale,
    Markup,
    burn_ratio,
    clip_escaped,
    context_block,
    error_hint,
    escape_mrkdwn,
    fit_sections,
    fmt_ago,
    fmt_clock,
    fmt_error,
    fmt_int,
    fmt_threshold,
    fmt_when,
    header_block,
    one_line,
    runs_out,
    scope_title,
    section_block,
)
from bot.render.incident import notice_words
from bot.render.tones import STATUS_EMOJI
from bot.views import ScopeView

SPARK_CHARS = "▁▂▃▄▅▆▇█"
# An unknown word is echoed back; a pasted novel is not.
_MAX_ECHO = 100
_MAX_STORE_ERROR = 300
_esc = escape_mrkdwn
_bold = SLACK.bold


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


def usage(known_scopes: Sequence[str], loc: Locale = DEFAULT) -> str:
    """Usage as Slack mrkdwn (scope names escaped)."""
    lang = loc.lang
    lines = [_bold(lang.usage_title), *(f"• {line}" for line in lang.usage_lines)]
    if known_scopes:
        names = ", ".join(f"`{_esc(name)}`" for name in known_scopes)
        lines.append(lang.known_scopes.format(names=names))
    else:
        lines.append(lang.no_scopes_configured)
    return "\n".join(lines)


def _ephemeral(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "response_type": "ephemeral",
        "text": clip_escaped(text, MAX_FALLBACK_TEXT),
        "blocks": blocks,
    }


def _one_section(text: str) -> dict[str, Any]:
    return _ephemeral(text, [section_block(text)])


def render_action_reply(
    scope: str, notice: Notice, done: bool, now: datetime, loc: Locale = DEFAULT
) -> dict[str, Any]:
    """The answer to `/sms-balance ack|unack|snooze|unsnooze SCOPE`."""
    lang = loc.lang
    name = _bold(_esc(scope))
    if not done:
        return _one_section(":information_source: " + lang.action_nothing_open.format(scope=name))
    # Said to the one who did it: "you", and no mention that could notify anyone.
    what = notice_words(notice, now, loc, who=lang.you)
    return _one_section(":white_check_mark: " + lang.action_done.format(scope=name, what=what))


def render_refresh_pending(scope: str | None, loc: Locale = DEFAULT) -> dict[str, Any]:
    lang = loc.lang
    said = lang.refreshing_scope.format(scope=_bold(_esc(scope))) if scope else lang.refreshing
    return _one_section(f":hourglass_flowing_sand: {said}")


# --- the reply ---------------------------------------------------------------------------------


def render_reply(
    command: Command,
    views: Sequence[ScopeView],
    now: datetime,
    *,
    store_error: str | None = None,
    stale_after: timedelta | None = None,
    loc: Locale = DEFAULT,
) -> dict[str, Any]:
    known = [view.scope for view in views]
    if command.action == "help":
        return _with_store_note(_one_section(usage(known, loc)), store_error, loc)
    if command.action == "unknown":
        return _with_store_note(_unknown_reply(command.word or "", known, loc), store_error, loc)
    if store_error is not None:
        note = _store_note(store_error, loc)
        return _one_section(loc.lang.store_down_retrying.format(note=note))
    return _show_reply(command.scope, views, now, stale_after, loc)


def _unknown_reply(word: str, known: Sequence[str], loc: Locale) -> dict[str, Any]:
    said = ":question: " + loc.lang.unknown_word.format(word=_esc(one_line(word, _MAX_ECHO)))
    text = f"{said}\n{usage(known, loc)}"
    return _ephemeral(text, [section_block(said), section_block(usage(known, loc))])


def _store_note(store_error: str, loc: Locale) -> str:
    # The reply goes on with a sentence of its own: no full stop of the error's in between.
    error = _esc(one_line(store_error, _MAX_STORE_ERROR).rstrip(". "))
    return ":warning: " + loc.lang.store_down.format(error=error)


def _with_store_note(reply: dict[str, Any], store_error: str | None, loc: Locale) -> dict[str, Any]:
    if store_error is None:
        return reply
    note = context_block(_store_note(store_error, loc))
    return {**reply, "blocks": [*reply["blocks"], note]}


def _show_reply(
    scope: str | None,
    views: Sequence[ScopeView],
    now: datetime,
    stale_after: timedelta | None,
    loc: Locale,
) -> dict[str, Any]:
    lang = loc.lang
    single = scope is not None
    selected = [view for view in views if scope is None or view.scope == scope]
    if single and not selected:
        return _one_section(lang.not_read_yet_scope.format(scope=_bold(_esc(scope or ""))))
    if not selected:
        return _one_section(f"{lang.nothing_to_show}\n{usage([], loc)}")

    status = worst(view.status for view in selected)
    word = lang.status_word[status]
    title = (
        lang.title_one.format(scope=scope, status=word)
        if single
        else lang.title_all.format(status=word)
    )
    sections = [section_block(_scope_text(v, now, stale_after, single, loc)) for v in selected]

    def overflow(left_out: int) -> dict[str, Any]:
        rest = selected[-left_out:]
        names = ", ".join(f"{_esc(v.scope)} ({lang.status_word[v.status]})" for v in rest)
        return context_block(lang.and_more.format(n=left_out, names=names))

    footer = lang.reply_footer.format(when=fmt_when(now, now, loc), help=lang.help_command)
    blocks = [
        header_block(f"{STATUS_EMOJI[status]} {title}"),
        *fit_sections(sections, MAX_BLOCKS - 2, overflow),
        context_block(footer),
    ]
    fallback = f"{_esc(title)} — " + "; ".join(scope_summary(v, loc) for v in selected)
    return _ephemeral(fallback, blocks)


def _freshness(view: ScopeView, now: datetime, stale_after: timedelta | None, loc: Locale) -> str:
    assert view.reading is not None
    lang = loc.lang
    read_at = view.reading.read_at
    when = lang.ago_at.format(ago=fmt_ago(read_at, now, loc), clock=fmt_clock(read_at, loc))
    if stale_after is not None and now - read_at > stale_after:
        return ":warning: " + _bold(lang.stale.format(when=when))
    said = lang.tried_at if view.reading.error is not None else lang.read_at
    return SLACK.italic(said.format(when=when))


# A reply mentions the burn only when it stands out; the alert decides when it is too much.
NOTABLE_BURN_RATIO = 2.0


def _type_line(
    view: ScopeView,
    quota_type: QuotaType,
    value: int | None,
    level: Level,
    now: datetime,
    single: bool,
    loc: Locale,
) -> str:
    lang = loc.lang
    shown = _bold(fmt_int(value, loc)) if value is not None else "—"
    head = f"{STATUS_EMOJI[level.status]} " + lang.labelled.format(
        label=_bold(lang.type_label[quota_type]), text=shown
    )
    trend = view.trend.get(quota_type)
    if single and trend:
        head += f" `{sparkline(trend)}`"
    parts = [head, lang.status_word[level.status]]
    if single and level is not Level.UNASSIGNED:
        parts.append(_esc(fmt_threshold(view.thresholds.get(quota_type), loc)))
    forecast = view.forecasts.get(quota_type)
    if forecast is not None and value is not None:
        parts.append(runs_out(forecast, now, loc))
    burn = view.burns.get(quota_type)
    if burn is not None and value is not None and burn.ratio >= NOTABLE_BURN_RATIO:
        parts.append(burn_ratio(burn, loc))
    return SEP.join(parts)


def _last_known(trend: Mapping[QuotaType, Sequence[int]], loc: Locale) -> str | None:
    lang = loc.lang
    known = [
        lang.type_value.format(type=lang.type_name[t], n=fmt_int(trend[t][-1], loc))
        for t in QUOTA_TYPES
        if trend.get(t)
    ]
    return lang.last_known.format(items=SEP.join(known)) if known else None


def _scope_text(
    view: ScopeView, now: datetime, stale_after: timedelta | None, single: bool, loc: Locale
) -> str:
    lang = loc.lang
    status = view.status
    title = _bold(_esc(scope_title(view.scope, loc)))
    lines = [f"{title} — {STATUS_EMOJI[status]} {lang.status_word[status]}"]
    reading, levels = view.reading, view.levels
    deliveries = delivery_summary(view.deliveries, loc) if single else None
    if reading is None:
        lines.append(f":hourglass: {lang.not_read_yet}")
        if deliveries:
            lines.append(f":incoming_envelope: {deliveries}")
        return "\n".join(lines)
    lines.append(_freshness(view, now, stale_after, loc))
    if reading.error is not None:
        cannot = ":x: " + lang.cannot_read.format(error=_esc(fmt_error(reading.error, loc)))
        hint = error_hint(view.scope, reading.error, loc)
        lines.append(lang.with_hint.format(text=cannot, hint=_esc(hint)) if hint else cannot)
        last = _last_known(view.trend, loc)
        if last:
            lines.append(last)
    elif reading.unassigned or reading.balances is None or levels is None:
        lines.append(f"{STATUS_EMOJI[Level.UNASSIGNED.status]} {lang.not_assigned}")
    else:
        balances = reading.balances
        lines.extend(
            _type_line(view, t, balances.get(t), levels[t], now, single, loc) for t in QUOTA_TYPES
        )
    if deliveries:
        lines.append(f":incoming_envelope: {deliveries}")
    return "\n".join(lines)


# Always shown once any report came in; the others only when they happened.
_MAIN_OUTCOMES = ("4001", "4005", "4006")
_OTHER_OUTCOMES = ("4002", "4003", "4004")
_NOT_DELIVERIES = frozenset({"reply", "unknown_type"})


def delivery_summary(counts: Mapping[str, int], loc: Locale = DEFAULT) -> str | None:
    """`deliveries, last hour: delivered 1,204 · quota exhausted 3 · rate-limited 0`; None
    when no delivery report came in."""
    lang = loc.lang
    reports = {k: n for k, n in counts.items() if k not in _NOT_DELIVERIES and n > 0}
    if not reports:
        return None
    named = (*_MAIN_OUTCOMES, *_OTHER_OUTCOMES)
    rest = sum(n for k, n in reports.items() if k not in named)
    items = [(k, reports.get(k, 0)) for k in _MAIN_OUTCOMES]
    items += [(k, reports[k]) for k in _OTHER_OUTCOMES if k in reports]
    if rest:
        items.append(("other", rest))
    words = lang.delivery_words
    text = SEP.join(
        lang.delivery_item.format(word=words.get(k, k), n=fmt_int(n, loc)) for k, n in items
    )
    return lang.deliveries.format(items=text)


def scope_summary(view: ScopeView, loc: Locale = DEFAULT, markup: Markup = SLACK) -> str:
    """`account critical (balance 9 critical, voice 702 warning, …)`, escaped for `markup`."""
    lang, esc = loc.lang, markup.escape
    reading, levels = view.reading, view.levels
    if reading is None:
        detail = lang.not_read
    elif reading.error is not None:
        detail = lang.cannot_read.format(error=esc(fmt_error(reading.error, loc)))
    elif reading.unassigned or reading.balances is None or levels is None:
        detail = lang.not_assigned_short
    else:
        parts = []
        for t in QUOTA_TYPES:
            value = reading.balances.get(t)
            name = lang.type_name[t]
            parts.append(
                lang.type_value_level.format(
                    type=name, n=fmt_int(value, loc), level=lang.status_word[levels[t].status]
                )
                if value is not None
                else lang.type_unassigned.format(type=name)
            )
        detail = ", ".join(parts)
    return lang.scope_summary.format(
        scope=esc(view.scope), status=lang.status_word[view.status], detail=detail
    )
