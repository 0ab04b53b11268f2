"""Incidents: one live Slack conversation per scope, planned as pure data.

An incident opens with the first open alert of a scope and closes when its last alert resolves.
Its root message shows the scope's current state and is updated in place; every later event is a
reply in the root's thread. Pure: events, `now` and the policy in; the new book and the outbox
operations out. Delivery writes the root's `ts` back with `record_root`.

    (no incident) --opening event--> OPEN --last alert resolved--> (closed: root turns green)
                                     |  ack: no reminders until an escalation clears it
                                     |  snooze until T: thread only, except critical news;
                                     +-- at T, if still open, one reminder in the channel

Operations reference their root by the id of the operation that posts it, so a reply or an
update can be planned before Slack has answered the root; the outbox holds them until it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from bot.alerts_types import (
    CLOSING_EVENTS,
    INFORMATIONAL_EVENTS,
    Ack,
    Event,
    EventKind,
    Incident,
    IncidentBook,
    Notice,
    NoticeKind,
    Op,
    OpKind,
    Snooze,
)
from bot.quota import Level

__all__ = [
    "Ack",
    "Incident",
    "IncidentBook",
    "IncidentPolicy",
    "NoIncident",
    "Notice",
    "NoticeKind",
    "Op",
    "OpKind",
    "Plan",
    "Snooze",
    "act",
    "step",
]

_CLOSING = CLOSING_EVENTS
FLOOD_ROOTS = 5  # more new incidents than this in one channel and cycle share one summary root
MAX_TOP_LEVEL = 6  # new channel-visible messages per channel and cycle, broadcasts included


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    channel: str  # where incidents go unless the scope has its own
    channels: Mapping[str, str] = field(default_factory=dict)  # scope -> channel
    mention: str | None = None  # put in front of channel-visible critical news
    flood_roots: int = FLOOD_ROOTS
    max_top_level: int = MAX_TOP_LEVEL

    def channel_for(self, scope: str) -> str:
        return self.channels.get(scope, self.channel)


@dataclass(frozen=True, slots=True)
class Plan:
    book: IncidentBook
    ops: list[Op]
    # Alert keys of events that no operation carries (a reminder silenced by an ack): they
    # count as announced now, so the alert engine's repeat clock keeps running.
    quiet_keys: list[str]


class _Ids:
    """Operation ids: the cycle's id and a counter, so they sort in plan order."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"{self._prefix}-{self._n:03d}"


def step(
    book: IncidentBook,
    events: Sequence[Event],
    now: datetime,
    policy: IncidentPolicy,
    id_prefix: str,
) -> Plan:
    """Advance the incidents by one cycle's events; expired snoozes remind once.

    `id_prefix` must be unique per call and sort after every earlier call's (the outbox id of
    the cycle does both).
    """
    # Provisional ids while planning; the final ones follow the plan's order (_number).
    ids = _Ids(f"{id_prefix}~")
    by_scope: dict[str, list[Event]] = {}
    for event in events:
        by_scope.setdefault(event.scope, []).append(event)
    incidents = dict(book.open)
    closed: list[Incident] = []
    replies: dict[str, list[Op]] = {}  # by root id, in plan order
    quiet: list[str] = []
    opened: list[Incident] = []
    for scope in sorted(set(by_scope) | set(incidents)):
        current = incidents.get(scope)
        scope_events = by_scope.get(scope, [])
        if current is None:
            new = _open(scope, scope_events, now, policy, f"{scope}@{id_prefix}")
            if new is not None:
                opened.append(new)
            continue
        updated, scope_replies, scope_quiet = _advance(current, scope_events, now, ids)
        quiet.extend(scope_quiet)
        if updated == current and not scope_replies:
            # (An informational event changes nothing open, yet is still said in the thread.)
            continue
        replies.setdefault(current.root_id, []).extend(scope_replies)
        if updated.closed_at is None:
            incidents[scope] = updated
        else:
            del incidents[scope]
            closed.append(updated)
    ops, incidents = _roots(opened, incidents, policy, ids)
    for root_id, root_replies in replies.items():
        # The root first: whoever follows a broadcast lands on the current state.
        ops.append(_update(root_id, _sharing(root_id, incidents, closed), ids))
        ops.extend(_mentioning(r, policy) for r in root_replies)
    # Roots come first, so a channel's cap counts them before any broadcast.
    ops, incidents = _number(_cap(ops, policy), incidents, id_prefix)
    return Plan(book=IncidentBook(open=incidents), ops=ops, quiet_keys=quiet)


def _number(
    ops: Sequence[Op], incidents: Mapping[str, Incident], prefix: str
) -> tuple[list[Op], dict[str, Incident]]:
    """Final ids in plan order (each destination sends in id order); new roots renamed."""
    final = {op.id: f"{prefix}-{n:03d}" for n, op in enumerate(ops, 1)}

    def root(root_id: str) -> str:
        return final.get(root_id, root_id)

    numbered = [
        replace(
            op,
            id=final[op.id],
            root_id=root(op.root_id),
            views=tuple(replace(v, root_id=root(v.root_id)) for v in op.views),
        )
        for op in ops
    ]
    renamed = {s: replace(i, root_id=root(i.root_id)) for s, i in incidents.items()}
    return numbered, renamed


def _sharing(
    root_id: str, incidents: Mapping[str, Incident], closed: Sequence[Incident] = ()
) -> tuple[Incident, ...]:
    """Every incident a root shows: one, or all of a flood summary's."""
    found = [i for i in incidents.values() if i.root_id == root_id]
    found.extend(i for i in closed if i.root_id == root_id)
    return tuple(sorted(found, key=lambda i: i.scope))


def _update(root_id: str, views: tuple[Incident, ...], ids: _Ids) -> Op:
    return Op(id=ids(), kind=OpKind.UPDATE, channel=views[0].channel, root_id=root_id, views=views)


def _mentioning(op: Op, policy: IncidentPolicy) -> Op:
    return op if policy.mention or not op.mention else replace(op, mention=False)


def _open(
    scope: str, events: Sequence[Event], now: datetime, policy: IncidentPolicy, incident_id: str
) -> Incident | None:
    if not events:
        return None
    alerts: dict[str, Event] = {}
    for event in events:
        _apply(alerts, event)
    # Only closing events with nothing open (state from before incidents existed): a root
    # that says so, closed at once, so the news is not lost.
    return Incident(
        id=incident_id,
        scope=scope,
        channel=policy.channel_for(scope),
        opened_at=now,
        root_id="",  # set by _roots
        alerts=alerts if alerts else {e.key: e for e in events},
        closed_at=None if alerts else now,
    )


def _apply(alerts: dict[str, Event], event: Event) -> None:
    if event.kind in INFORMATIONAL_EVENTS:
        return
    if event.kind in _CLOSING:
        alerts.pop(event.key, None)
    else:
        alerts[event.key] = event


def _roots(
    opened: Sequence[Incident],
    incidents: dict[str, Incident],
    policy: IncidentPolicy,
    ids: _Ids,
) -> tuple[list[Op], dict[str, Incident]]:
    by_channel: dict[str, list[Incident]] = {}
    for incident in opened:
        by_channel.setdefault(incident.channel, []).append(incident)
    ops: list[Op] = []
    for channel in sorted(by_channel):
        group = by_channel[channel]
        batches = [group] if len(group) > policy.flood_roots else [[i] for i in group]
        for batch in batches:
            root_id = ids()
            views = tuple(replace(i, root_id=root_id) for i in batch)
            for view in views:
                if view.closed_at is None:
                    incidents[view.scope] = view
            ops.append(
                Op(
                    id=root_id,
                    kind=OpKind.ROOT,
                    channel=channel,
                    root_id=root_id,
                    views=views,
                    mention=bool(policy.mention) and any(_tells_critical(v) for v in views),
                    keys=tuple(sorted({k for v in views for k in v.alerts})),
                )
            )
    return ops, incidents


def _tells_critical(incident: Incident) -> bool:
    return incident.closed_at is None and incident.level is Level.CRITICAL


def _critical_news(event: Event, before: Mapping[str, Event]) -> bool:
    """Warning to critical, or a condition first seen at critical."""
    if event.level is not Level.CRITICAL:
        return False
    if event.kind is EventKind.ESCALATED:
        return True
    return event.kind is EventKind.FIRED and event.key not in before


def _escalates(event: Event, before: Mapping[str, Event]) -> bool:
    """Clears an acknowledgement: warning to critical, or another condition of the scope."""
    if event.kind is EventKind.ESCALATED:
        return True
    if event.kind in _CLOSING or event.kind in INFORMATIONAL_EVENTS:
        return False
    if event.kind is EventKind.REPEATED:
        return False
    return event.key not in before


def _advance(
    incident: Incident, events: Sequence[Event], now: datetime, ids: _Ids
) -> tuple[Incident, list[Op], list[str]]:
    """The incident after this cycle's events, its thread replies, and silenced keys."""
    before = incident.alerts
    alerts = dict(before)
    said: list[Event] = []
    quiet: list[str] = []
    ack = incident.ack
    critical = False  # critical news: breaks through a snooze
    loud = False  # something the channel should see
    for event in events:
        if _escalates(event, before):
            ack = None
        _apply(alerts, event)
        if event.kind is EventKind.REPEATED and ack is not None:
            quiet.append(event.key)
            continue
        news = _critical_news(event, before)
        critical = critical or news
        loud = loud or news or event.kind in (EventKind.FETCH_FAILING, EventKind.REPEATED)
        said.append(event)
    snooze = incident.snooze
    reminder = snooze is not None and now >= snooze.until
    closing = not alerts
    updated = replace(
        incident,
        alerts=alerts,
        ack=None if closing else ack,
        snooze=None if closing or reminder else snooze,
        closed_at=now if closing else None,
    )
    root = incident.root_id
    ops: list[Op] = []
    if said:
        # Snoozed: only critical news reaches the channel; the thread still gets everything.
        broadcast = critical if snooze is not None and not reminder else loud
        ops.append(
            Op(
                id=ids(),
                kind=OpKind.REPLY,
                channel=incident.channel,
                root_id=root,
                events=tuple(said),
                broadcast=broadcast,
                mention=broadcast and _says_critical(said),
                keys=tuple(sorted({e.key for e in said})),
            )
        )
    if closing:
        notice = Notice(NoticeKind.RESOLVED)
        ops.append(_reply(incident, notice, ids))
    elif reminder:
        assert snooze is not None
        notice = Notice(NoticeKind.SNOOZE_OVER, by=snooze.by, until=snooze.until)
        ops.append(
            replace(
                _reply(incident, notice, ids),
                broadcast=True,
                mention=updated.level is Level.CRITICAL,
            )
        )
    return updated, ops, quiet


def _says_critical(events: Iterable[Event]) -> bool:
    return any(e.level is Level.CRITICAL and e.kind not in _CLOSING for e in events)


def _reply(incident: Incident, notice: Notice, ids: _Ids) -> Op:
    return Op(
        id=ids(),
        kind=OpKind.REPLY,
        channel=incident.channel,
        root_id=incident.root_id,
        notice=notice,
        scope=incident.scope,
    )


def _cap(ops: list[Op], policy: IncidentPolicy) -> list[Op]:
    """At most `max_top_level` new messages per channel; later broadcasts stay in threads."""
    seen: dict[str, int] = {}
    capped: list[Op] = []
    for op in ops:
        if op.top_level:
            count = seen.get(op.channel, 0)
            if count >= policy.max_top_level and op.kind is OpKind.REPLY:
                op = replace(op, broadcast=False, mention=False)
            else:
                seen[op.channel] = count + 1
        capped.append(op)
    return capped


# --- acknowledge and snooze ------------------------------------------------------------------


class NoIncident(LookupError):
    """The scope has no open incident to acknowledge or snooze."""


def act(
    book: IncidentBook,
    scope: str,
    notice: Notice,
    now: datetime,
    id_prefix: str,
) -> tuple[IncidentBook, list[Op]]:
    """Apply an ack / unack / snooze / unsnooze by a user; raise NoIncident if nothing is open.

    The root is updated to show it and a thread line records who did it; nothing is broadcast.
    """
    incident = book.open.get(scope)
    if incident is None:
        raise NoIncident(scope)
    by = notice.by or "someone"
    if notice.kind is NoticeKind.ACK:
        updated = replace(incident, ack=Ack(by=by, at=now))
    elif notice.kind is NoticeKind.UNACK:
        updated = replace(incident, ack=None)
    elif notice.kind is NoticeKind.SNOOZE:
        if notice.until is None or notice.until <= now:
            raise ValueError("a snooze needs a time in the future")
        updated = replace(incident, snooze=Snooze(by=by, until=notice.until))
    elif notice.kind is NoticeKind.UNSNOOZE:
        updated = replace(incident, snooze=None)
    else:
        raise ValueError(f"not a user action: {notice.kind}")
    ids = _Ids(id_prefix)
    incidents = {**book.open, scope: updated}
    ops = [_update(incident.root_id, _sharing(incident.root_id, incidents), ids)]
    ops.append(_reply(incident, replace(notice, by=by), ids))
    return IncidentBook(open=incidents), ops


def roots_of(ops: Iterable[Op]) -> set[str]:
    return {op.id for op in ops if op.kind is OpKind.ROOT}
