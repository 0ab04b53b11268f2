"""Shared formatting: numbers, durations, times, errors, clipping, escaping, Block Kit blocks.

Every surface (alerts, slash replies, the `check` table) formats through these, so they read
alike. Words come from the language table in a `Locale`; times are shown in its time zone.
Destinations differ only in a `Markup`: how bold text, tags and escaping are written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bot.forecast import Burn, Forecast
from bot.quota import FetchError, ScopeKind, Threshold
from bot.render.lang import DEFAULT_LANGUAGE, lang_for
from bot.render.text import Lang
from bot.render.text_en import EN

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
# Notifications and webhook clients without blocks show `text`; keep it readable, not a wall.
MAX_FALLBACK_TEXT = 3000
# Text from JPush is echoed to humans; a runaway body or code must not crowd out the rest.
MAX_ERROR_TEXT = 200
MAX_CODE_TEXT = 12

ACCOUNT_SCOPE = "account"  # app names can never be "account", so the name tells the kind
SEP = " · "


@dataclass(frozen=True, slots=True)
class Locale:
    """Whose words and which clock face: a language table and the time zone times are shown in."""

    lang: Lang = EN
    tz: tzinfo = UTC

    @classmethod
    def of(cls, language: str = DEFAULT_LANGUAGE, tz: tzinfo = UTC) -> Locale:
        return cls(lang_for(language), tz)


DEFAULT = Locale()


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters, so `<!channel>`, `<@U1>` and links stay inert text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MARKDOWN_SPECIAL = frozenset("\\`*_[]<>#|~")


def escape_markdown(text: str) -> str:
    """Markdown's punctuation backslash-escaped, so outside text cannot add links or styling."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in text)


def _verbatim(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Markup:
    """The last formatting step of one destination: the only thing destinations differ in."""

    escape: Callable[[str], str]
    bold_form: str  # {text}
    italic_form: str  # {text}
    tag_form: str  # {emoji} {tag}: how an event line starts

    def bold(self, text: str) -> str:
        return self.bold_form.format(text=text)

    def italic(self, text: str) -> str:
        return self.italic_form.format(text=text)

    def tag(self, emoji: str, tag: str) -> str:
        return self.tag_form.format(emoji=emoji, tag=tag)


SLACK = Markup(escape_mrkdwn, "*{text}*", "_{text}_", "{emoji} *{tag}* ·")
PLAIN = Markup(_verbatim, "{text}", "{text}", "[{tag}]")
# Chat robots that take markdown (DingTalk, Feishu, WeCom) show no Slack emoji codes.
MARKDOWN = Markup(escape_markdown, "**{text}**", "*{text}*", "**{tag}** ·")


# --- numbers, durations, times ----------------------------------------------------------------


def fmt_int(n: int, loc: Locale = DEFAULT) -> str:
    return loc.lang.number(n)


def duration_words(seconds: float, loc: Locale = DEFAULT) -> str:
    """`3 minutes`, `5 hours`, `2 days`; `less than a minute` below 60 s (negative counts as 0)."""
    lang = loc.lang
    seconds = max(0.0, seconds)
    if seconds < 60:
        return lang.less_than_a_minute
    minutes = round(seconds / 60)
    if minutes < 60:
        return lang.plural(lang.minutes, minutes)
    hours = round(seconds / 3600)
    if hours < 24:
        return lang.plural(lang.hours, hours)
    return lang.plural(lang.days, round(seconds / 86400))


def fmt_duration(seconds: float, loc: Locale = DEFAULT) -> str:
    words = duration_words(seconds, loc)
    return words if seconds < 60 else loc.lang.about.format(duration=words)


def fmt_ago(then: datetime, now: datetime, loc: Locale = DEFAULT) -> str:
    """`3 minutes ago`, `just now`."""
    seconds = (utc(now) - utc(then)).total_seconds()
    if seconds < 60:
        return loc.lang.just_now
    return loc.lang.ago.format(duration=duration_words(seconds, loc))


def utc(dt: datetime) -> datetime:
    """The one UTC normaliser. Naive datetimes only come from our own code paths, which work
    in UTC throughout."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _local(dt: datetime, loc: Locale) -> tuple[datetime, str]:
    local = utc(dt).astimezone(loc.tz)
    return local, zone_label(local, loc)


def zone_label(local: datetime, loc: Locale = DEFAULT) -> str:
    """How the zone of `local` is named: the language's own name for it, else its abbreviation,
    else its offset (`UTC+8`) when the zone has only a numeric name such as `+08`."""
    key = getattr(loc.tz, "key", None)
    if isinstance(key, str) and key in loc.lang.zone_names:
        return loc.lang.zone_names[key]
    name = local.tzname() or ""
    if name and not name.lstrip("+-").isdigit():
        return name
    offset = local.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def fmt_when(dt: datetime, now: datetime | None = None, loc: Locale = DEFAULT) -> str:
    """`Thu 14:00 UTC` when within a week of `now`, else `2026-12-01 08:00 UTC`.

    Without `now` there is no week to be within, so the unambiguous long form is used.
    """
    local, zone = _local(dt, loc)
    time = local.strftime("%H:%M")
    if now is not None and abs(utc(dt) - utc(now)) < timedelta(days=7):
        weekday = loc.lang.weekdays[local.weekday()]
        return loc.lang.when_near.format(weekday=weekday, time=time, zone=zone)
    return loc.lang.when_far.format(date=local.strftime("%Y-%m-%d"), time=time, zone=zone)


def fmt_clock(dt: datetime, loc: Locale = DEFAULT) -> str:
    """`09:41 UTC`: for "read 3 minutes ago (09:41 UTC)"."""
    local, zone = _local(dt, loc)
    return loc.lang.clock.format(time=local.strftime("%H:%M"), zone=zone)


def fmt_rate(per_hour: float, loc: Locale = DEFAULT) -> str:
    per_day = round(per_hour * 24)
    if per_day < 1:
        return loc.lang.rate_under_one
    return loc.lang.rate.format(n=fmt_int(per_day, loc))


# --- quota vocabulary -------------------------------------------------------------------------


def fmt_threshold(threshold: Threshold | None, loc: Locale = DEFAULT) -> str:
    """`warn < 1,000 / crit < 100`; a 0 level is switched off."""
    lang = loc.lang
    if threshold is None or threshold.disabled:
        return lang.threshold_off
    parts = []
    if threshold.warning:
        parts.append(lang.threshold_warning.format(n=fmt_int(threshold.warning, loc)))
    if threshold.critical:
        parts.append(lang.threshold_critical.format(n=fmt_int(threshold.critical, loc)))
    return lang.threshold_joiner.join(parts)


def fmt_error(error: FetchError, loc: Locale = DEFAULT) -> str:
    """`auth failed (50002)`: one line, bounded, NOT escaped; the code shown once.

    The JPush client keeps the code out of its message; a message that names it anyway
    (an HTTP status, say) does not get it a second time.
    """
    message = one_line(error.message, MAX_ERROR_TEXT) or loc.lang.unknown_error
    if error.code is None:
        return message
    code = clip(str(error.code), MAX_CODE_TEXT)
    if re.search(rf"(?<![\d]){re.escape(code)}(?![\d])", message):
        return message
    return loc.lang.error_with_code.format(message=message, code=code)


def error_hint(scope: str, error: FetchError, loc: Locale = DEFAULT) -> str | None:
    """What an operator should check for a configuration error; None when nothing specific."""
    lang = loc.lang
    if error.code in (50001, 50002):
        if scope == ACCOUNT_SCOPE:
            return lang.hint_account_auth
        return lang.hint_app_auth.format(scope=scope)
    if error.code == 50008:
        return lang.hint_sms_disabled
    if error.config:
        return lang.hint_config
    return None


def runs_out(forecast: Forecast, now: datetime, loc: Locale = DEFAULT) -> str:
    """`runs out in about 2 days (Thu 14:00 UTC), burning 1,200/day`: the one phrasing."""
    return loc.lang.runs_out.format(
        duration=fmt_duration(forecast.seconds_to_empty(now), loc),
        when=fmt_when(forecast.empty_at, now, loc),
        rate=fmt_rate(forecast.per_hour, loc),
    )


def burn_figures(burn: Burn, loc: Locale = DEFAULT) -> dict[str, str]:
    """The words of a burn: `now` (the last hour) and `usual`, per hour, and the `factor`."""
    per_hour = loc.lang.per_hour
    factor = f"{burn.ratio:.1f}" if burn.ratio < 10 else fmt_int(round(burn.ratio), loc)
    return {
        "now": per_hour.format(n=fmt_int(round(burn.last_hour), loc)),
        "usual": per_hour.format(n=fmt_int(round(burn.usual), loc)),
        "factor": factor,
    }


def burn_ratio(burn: Burn, loc: Locale = DEFAULT) -> str:
    """`900/hour in the last hour, 9.0× the usual 100/hour`: a burn that stands out, in replies."""
    return loc.lang.burn_notable.format(**burn_figures(burn, loc))


def runs_out_cell(forecast: Forecast, now: datetime, loc: Locale = DEFAULT) -> str:
    """`about 2 days (Thu 14:00 UTC)`: the same, under a "runs out" column heading."""
    return loc.lang.runs_out_cell.format(
        duration=fmt_duration(forecast.seconds_to_empty(now), loc),
        when=fmt_when(forecast.empty_at, now, loc),
    )


def scope_title(scope: str, loc: Locale = DEFAULT) -> str:
    """`account (account)` / `shop (app)`."""
    kind = ScopeKind.ACCOUNT if scope == ACCOUNT_SCOPE else ScopeKind.APP
    return loc.lang.scope_title.format(scope=scope, kind=loc.lang.scope_kind[kind])


# --- terminal columns -------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Terminal columns `text` takes: Chinese characters (and other wide ones) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def pad(text: str, width: int, *, right: bool = False) -> str:
    """`text` padded with spaces to `width` columns (on the left when `right`)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


# --- clipping ---------------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def one_line(text: str, limit: int) -> str:
    """Text from outside (JPush, a store error, a typed word) as one bounded line."""
    return clip(" ".join(text.split()), limit)


def clip_escaped(text: str, limit: int) -> str:
    """Like `clip` for escaped text, without cutting an `&amp;`-style entity in half."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


# --- Block Kit --------------------------------------------------------------------------------


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
