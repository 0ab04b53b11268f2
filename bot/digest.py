"""The daily summary: when it is due, and what it says. Pure.

Due once per local day (DIGEST_AT in TZ) at or after that minute; the day it was last sent is
stored with the alert book, so a restart or a second replica the same day sends nothing more,
and a bot that was down at that minute catches up once when it next runs that same day (a day
that is over is not summarised late).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from typing import Any

from bot.alerts_types import Incident, Op, OpKind
from bot.commands import Command
from bot.render.format import (
    DEFAULT,
    MARKDOWN,
    SLACK,
    Locale,
    Markup,
    context_block,
    escape_markdown,
    header_block,
    runs_out,
)
from bot.render.incident import status_line
from bot.render.slash import render_reply, scope_summary
from bot.views import ScopeView

MAX_INCIDENT_LINES = 20


@dataclass(frozen=True, slots=True)
class DigestPolicy:
    at: time  # local time of day
    tz: tzinfo
    channel: str  # where the primary destination posts it


def parse_time_of_day(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


def digest_due(now: datetime, policy: DigestPolicy, last_day: str | None) -> str | None:
    """The local date (ISO) to summarise now, or None when nothing is due."""
    local = now.astimezone(policy.tz)
    today = local.date()
    if local.time().replace(tzinfo=None) < policy.at or last_day == today.isoformat():
        return None
    return today.isoformat()


def _incident_text(
    incidents: Mapping[str, Incident], now: datetime, loc: Locale, markup: Markup
) -> str:
    lines = [
        f"{markup.bold(markup.escape(i.scope))} · {i.level.value} · {status_line(i, now, loc)}"
        for _, i in sorted(incidents.items())
    ]
    if not lines:
        return loc.lang.digest_no_incidents
    if len(lines) > MAX_INCIDENT_LINES:
        rest = len(lines) - MAX_INCIDENT_LINES
        lines = [*lines[:MAX_INCIDENT_LINES], loc.lang.and_more_events.format(n=rest)]
    return loc.lang.digest_incidents.format(lines="\n".join(lines))


def digest_op(
    op_id: str,
    day: str,
    policy: DigestPolicy,
    views: Sequence[ScopeView],
    incidents: Mapping[str, Incident],
    now: datetime,
    loc: Locale = DEFAULT,
) -> Op:
    """Every scope's state and forecasts (as `/sms-balance all` shows them) and the open
    incidents, as one top-level message."""
    overview = render_reply(Command("show"), views, now, loc=loc)
    title = f":sunrise: {loc.lang.digest_title.format(day=day)}"
    blocks: list[dict[str, Any]] = [
        header_block(title),
        *overview["blocks"][:45],
        context_block(_incident_text(incidents, now, loc, SLACK)),
    ]
    text = f"{title} — {overview['text']}"
    return Op(
        id=op_id,
        kind=OpKind.DIGEST,
        channel=policy.channel,
        root_id=op_id,
        scope=",".join(v.scope for v in views),
        text=text[:3000],
        blocks=tuple(blocks),
    )


def chat_digest_op(
    op_id: str,
    day: str,
    views: Sequence[ScopeView],
    incidents: Mapping[str, Incident],
    now: datetime,
    loc: Locale = DEFAULT,
) -> Op:
    """The same summary as markdown for a chat robot: a title, a line per scope, the open
    incidents. Each robot's envelope (and size limit) is applied when it is sent."""
    lines: list[str] = []
    for view in views:
        lines.append(f"- {scope_summary(view, loc, MARKDOWN)}")
        lines.extend(
            "  - "
            + escape_markdown(
                loc.lang.labelled.format(label=loc.lang.type_name[t], text=runs_out(f, now, loc))
            )
            for t, f in sorted(view.forecasts.items())
        )
    body = "\n".join([*lines, "", _incident_text(incidents, now, loc, MARKDOWN)])
    return Op(
        id=op_id,
        kind=OpKind.DIGEST,
        channel="",
        root_id=op_id,
        scope=",".join(v.scope for v in views),
        text=loc.lang.digest_title.format(day=day),
        markdown=body,
    )
