"""Incident messages: a root that shows a scope's current state, and the lines of its thread.

Pure: operations and `now` in, Block Kit and a plain-text fallback out. The root's buttons
carry the scope in their block id (`incident:<scope>`) so the action handler knows which
incident a press is about, whatever the option values say.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.alerts_types import INFORMATIONAL_EVENTS, Event, Incident, Notice, NoticeKind, Op, OpKind
from bot.quota import Level
from bot.render.alert import SlackMessage, event_line, group_events
from bot.render.format import (
    DEFAULT,
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    PLAIN,
    SEP,
    SLACK,
    Locale,
    clip_escaped,
    context_block,
    escape_mrkdwn,
    fmt_clock,
    fmt_when,
    header_block,
    scope_title,
    section_block,
)
from bot.render.tones import TONES, tone_of

ACTION_BLOCK_PREFIX = "incident:"
SNOOZE_VALUES = ("1h", "24h", "7d")

_NOTICE_EMOJI = {
    NoticeKind.ACK: ":eyes:",
    NoticeKind.UNACK: ":leftwards_arrow_with_hook:",
    NoticeKind.SNOOZE: ":zzz:",
    NoticeKind.UNSNOOZE: ":alarm_clock:",
    NoticeKind.SNOOZE_OVER: ":alarm_clock:",
    NoticeKind.RESOLVED: ":white_check_mark:",
}


def render_op(
    op: Op, now: datetime, mention: str | None = None, loc: Locale = DEFAULT
) -> SlackMessage:
    """The message one operation posts, or updates the root to. `mention` goes in front of
    the messages the plan marked as telling the channel about a critical level."""
    prefix = f"{mention} " if mention and op.mention else ""
    if op.kind is OpKind.DIGEST:
        return SlackMessage(text=op.text, blocks=list(op.blocks))
    if op.kind is OpKind.REPLY:
        return render_reply(op.events, op.notice, now, prefix, loc)
    return render_root(op.views, now, prefix, loc)


def render_root(
    views: Sequence[Incident], now: datetime, prefix: str = "", loc: Locale = DEFAULT
) -> SlackMessage:
    """One incident's root, or one summary root for several (a flood of new incidents)."""
    if not views:
        raise ValueError("a root shows at least one incident")
    title = _title(views, loc)
    blocks: list[dict[str, Any]] = [header_block(title)]
    if prefix:
        blocks.append(section_block(prefix.strip()))
    room = MAX_BLOCKS - len(blocks) - 1
    shown = 0
    for view in views:
        chunk = _incident_blocks(view, now, loc)
        if len(chunk) > room:
            break
        blocks.extend(chunk)
        room -= len(chunk)
        shown += 1
    if shown < len(views):
        names = ", ".join(escape_mrkdwn(v.scope) for v in views[shown:])
        blocks.append(context_block(loc.lang.and_more.format(n=len(views) - shown, names=names)))
    lines = [_plain_state(v, now, loc) for v in views]
    text = clip_escaped(escape_mrkdwn(f"{title} — " + "; ".join(lines)), MAX_FALLBACK_TEXT)
    return SlackMessage(text=f"{prefix}{text}", blocks=blocks)


def _title(views: Sequence[Incident], loc: Locale) -> str:
    lang = loc.lang
    open_views = [v for v in views if v.closed_at is None]
    one = len(views) == 1
    scope = views[0].scope
    if one and _only_tells(views[0]):
        tone = tone_of(next(iter(views[0].alerts.values())))
        words = lang.incident_title_notice.format(scope=scope, what=lang.tone_header[tone])
        return f"{TONES[tone].header_emoji} {words}"
    if not open_views:
        words = (
            lang.incident_title_resolved.format(scope=scope)
            if one
            else lang.incidents_title_resolved.format(n=len(views))
        )
        return f":white_check_mark: {words}"
    if any(v.level is Level.CRITICAL for v in open_views):
        words = (
            lang.incident_title_critical.format(scope=scope)
            if one
            else lang.incidents_title_critical.format(n=len(open_views))
        )
        return f":rotating_light: {words}"
    words = (
        lang.incident_title_low.format(scope=scope)
        if one
        else lang.incidents_title_low.format(n=len(open_views))
    )
    return f":warning: {words}"


def _plain_state(incident: Incident, now: datetime, loc: Locale) -> str:
    """`shop [WARNING] industry (transactional): 500 left, below warning 1,000 · …`."""
    if incident.closed_at is not None and not _only_tells(incident):
        return f"{incident.scope}: {loc.lang.incident_all_clear}"
    events = _current(incident)
    return "; ".join(f"{incident.scope} {event_line(e, now, loc, PLAIN)}" for e in events)


def _incident_blocks(incident: Incident, now: datetime, loc: Locale) -> list[dict[str, Any]]:
    lines = [event_line(e, now, loc, SLACK) for e in _current(incident)]
    if incident.closed_at is not None and not lines:
        lines = [f":white_check_mark: {loc.lang.incident_all_clear}"]
    body = f"*{escape_mrkdwn(scope_title(incident.scope, loc))}*\n" + "\n".join(lines)
    blocks = [section_block(body), context_block(status_line(incident, now, loc))]
    if incident.closed_at is None:
        blocks.append(_actions(incident, loc))
    return blocks


def _only_tells(incident: Incident) -> bool:
    """A root that only tells something (a sudden drop) and opened nothing."""
    return (
        incident.closed_at is not None
        and bool(incident.alerts)
        and all(e.kind in INFORMATIONAL_EVENTS for e in incident.alerts.values())
    )


def _current(incident: Incident) -> list[Event]:
    """The open conditions, worst first, as the alert engine last described them."""
    return [e for _, events in group_events(list(incident.alerts.values())) for e in events]


def status_line(incident: Incident, now: datetime, loc: Locale = DEFAULT) -> str:
    """`opened Tue 09:12 UTC · acknowledged by <@U1> 09:41 UTC · snoozed by <@U2> until …`."""
    lang = loc.lang
    parts = [lang.incident_opened.format(when=fmt_when(incident.opened_at, now, loc))]
    if incident.closed_at is not None:
        parts.append(lang.incident_resolved_at.format(when=fmt_when(incident.closed_at, now, loc)))
        return SEP.join(parts)
    if incident.ack is not None:
        user, clock = _user(incident.ack.by), fmt_clock(incident.ack.at, loc)
        parts.append(lang.incident_acked.format(user=user, clock=clock))
    if incident.snooze is not None:
        until = fmt_when(incident.snooze.until, now, loc)
        parts.append(lang.incident_snoozed.format(user=_user(incident.snooze.by), when=until))
    return SEP.join(parts)


def _user(user_id: str | None) -> str:
    # User ids are checked where they enter (Slack payloads); escaping keeps any other inert.
    return f"<@{escape_mrkdwn(user_id)}>" if user_id else "someone"


def _actions(incident: Incident, loc: Locale) -> dict[str, Any]:
    lang = loc.lang
    scope = incident.scope
    elements: list[dict[str, Any]] = []
    if incident.ack is None:
        elements.append(_button(lang.button_ack, "ack", scope, style="primary"))
    else:
        elements.append(_button(lang.button_unack, "unack", scope))
    if incident.snooze is None:
        options = [
            {"text": {"type": "plain_text", "text": label}, "value": value}
            for value, label in zip(SNOOZE_VALUES, lang.snooze_choices, strict=True)
        ]
        elements.append(
            {
                "type": "static_select",
                "action_id": "snooze",
                "placeholder": {"type": "plain_text", "text": lang.button_snooze},
                "options": options,
            }
        )
    else:
        elements.append(_button(lang.button_unsnooze, "unsnooze", scope))
    return {"type": "actions", "block_id": f"{ACTION_BLOCK_PREFIX}{scope}", "elements": elements}


def _button(label: str, action_id: str, scope: str, *, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": scope,
    }
    if style:
        button["style"] = style
    return button


# --- thread replies ---------------------------------------------------------------------------


def render_reply(
    events: Sequence[Event],
    notice: Notice | None,
    now: datetime,
    prefix: str = "",
    loc: Locale = DEFAULT,
) -> SlackMessage:
    lines = [event_line(e, now, loc, SLACK) for e in events]
    plain = [f"{e.scope} {event_line(e, now, loc, PLAIN)}" for e in events]
    if notice is not None:
        words = notice_words(notice, now, loc)
        lines.append(f"{_NOTICE_EMOJI[notice.kind]} {words}")
        plain.append(words)
    text = clip_escaped(prefix + escape_mrkdwn("; ".join(plain)), MAX_FALLBACK_TEXT)
    return SlackMessage(text=text, blocks=[section_block(prefix + "\n".join(lines))])


def notice_words(
    notice: Notice, now: datetime, loc: Locale = DEFAULT, *, who: str | None = None
) -> str:
    """The thread line for a notice; `who` names the user instead of a mention."""
    lang = loc.lang
    user = who if who is not None else _user(notice.by)
    if notice.kind is NoticeKind.ACK:
        return lang.notice_ack.format(user=user)
    if notice.kind is NoticeKind.UNACK:
        return lang.notice_unack.format(user=user)
    if notice.kind is NoticeKind.SNOOZE:
        when = fmt_when(notice.until, now, loc) if notice.until else "?"
        return lang.notice_snooze.format(user=user, when=when)
    if notice.kind is NoticeKind.UNSNOOZE:
        return lang.notice_unsnooze.format(user=user)
    if notice.kind is NoticeKind.SNOOZE_OVER:
        return lang.notice_snooze_over.format(user=user)
    return lang.notice_resolved
