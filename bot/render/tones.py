"""One row per kind of alert event: how bad it is and which emoji marks it.

An event's tone is decided once (`tone_of`); every other question a renderer asks about an
event (its severity, emoji, tag, header, summary word) is a look-up keyed by that tone. The
words live in the language tables; the emoji here are Slack's and are dropped by plain-text
destinations.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from bot.alerts_types import REPORT_ALERTS, AlertKind, Event, EventKind
from bot.quota import Level, Status


class Tone(Enum):
    """In order of precedence: the first tone present in a cycle names the message header,
    and the cycle's summary counts tones in this order."""

    CRITICAL = "critical"
    UNREADABLE = "unreadable"
    WARNING = "warning"
    RUNNING_OUT = "running_out"
    BURNING = "burning"  # burning faster than usual
    DROPPED = "dropped"  # a sudden drop: informational
    RESOLVED = "resolved"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class ToneStyle:
    # Orders scopes and events within a message, in the one status order
    # (critical > unknown > warning > ok). Warning and running-out tie on purpose: within a
    # scope they stay in quota-type order.
    status: Status
    emoji: str  # beside each event line
    header_emoji: str  # beside the message header when this tone names it


TONES: dict[Tone, ToneStyle] = {
    Tone.CRITICAL: ToneStyle(Status.CRITICAL, ":red_circle:", ":rotating_light:"),
    Tone.UNREADABLE: ToneStyle(Status.UNKNOWN, ":x:", ":x:"),
    Tone.WARNING: ToneStyle(Status.WARNING, ":large_orange_circle:", ":warning:"),
    Tone.RUNNING_OUT: ToneStyle(
        Status.WARNING, ":hourglass_flowing_sand:", ":hourglass_flowing_sand:"
    ),
    Tone.BURNING: ToneStyle(Status.WARNING, ":fire:", ":fire:"),
    # Informational: orders with the good news, after every warning.
    Tone.DROPPED: ToneStyle(
        Status.OK, ":chart_with_downwards_trend:", ":chart_with_downwards_trend:"
    ),
    Tone.RESOLVED: ToneStyle(Status.OK, ":white_check_mark:", ":white_check_mark:"),
    Tone.RECOVERED: ToneStyle(Status.OK, ":large_green_circle:", ":white_check_mark:"),
}

# A scope's (or a quota type's) status, wherever it is shown beside its word.
STATUS_EMOJI: dict[Status, str] = {
    Status.OK: ":large_green_circle:",
    Status.WARNING: ":large_orange_circle:",
    Status.CRITICAL: ":red_circle:",
    Status.UNASSIGNED: ":white_circle:",
    Status.UNKNOWN: ":x:",
}


def is_fetch(event: Event) -> bool:
    """About the scope's readability rather than one quota type."""
    return event.kind in (EventKind.FETCH_FAILING, EventKind.FETCH_RECOVERED) or (
        event.quota_type is None
        and event.kind is EventKind.REPEATED
        and event.alert not in REPORT_ALERTS
    )


def is_running_out(event: Event) -> bool:
    return event.kind is EventKind.RUNNING_OUT or event.alert is AlertKind.RUNNING_OUT


def is_burn(event: Event) -> bool:
    return event.kind is EventKind.BURNING_FAST or event.alert is AlertKind.BURN


def tone_of(event: Event) -> Tone:
    if event.kind is EventKind.RESOLVED:
        return Tone.RESOLVED
    if event.kind is EventKind.SUDDEN_DROP:
        return Tone.DROPPED
    if is_burn(event):
        return Tone.BURNING
    if event.kind is EventKind.FETCH_RECOVERED:
        return Tone.RECOVERED
    if is_fetch(event):
        return Tone.UNREADABLE
    if is_running_out(event):
        return Tone.RUNNING_OUT
    if event.level is Level.CRITICAL:
        return Tone.CRITICAL
    return Tone.WARNING


def severity(event: Event) -> int:
    return TONES[tone_of(event)].status.severity
