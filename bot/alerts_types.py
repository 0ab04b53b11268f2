"""Values shared by the alert engine, the state store and the message renderer.

Pure data with lossless JSON round-trips, so the state store can keep them verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.forecast import Burn, Drop, Forecast
from bot.quota import FetchError, Level, QuotaType, ScopeReading


class EventKind(StrEnum):
    FIRED = "fired"
    ESCALATED = "escalated"
    REPEATED = "repeated"
    RESOLVED = "resolved"
    RUNNING_OUT = "running_out"
    FETCH_FAILING = "fetch_failing"
    FETCH_RECOVERED = "fetch_recovered"
    SUDDEN_DROP = "sudden_drop"  # informational, one-off: no alert stays open
    BURNING_FAST = "burning_fast"


class AlertKind(StrEnum):
    THRESHOLD = "threshold"  # below warning / critical
    RUNNING_OUT = "running_out"  # projected empty within the forecast horizon
    BURN = "burn"  # burning faster than usual; open beside the type's other alert
    # From JPush delivery reports (see bot.report_alerts): per app, not per quota type.
    SENDS_FAILING = "sends_failing"  # status 4005, quota exhausted
    RATE_LIMITED = "rate_limited"  # status 4006, rate exceeded


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth telling a human about; one cycle's events become one message."""

    kind: EventKind
    scope: str
    at: datetime
    quota_type: QuotaType | None = None  # None for fetch_failing / fetch_recovered
    # For threshold events: the alert's level (warning/critical). For resolved: the level
    # that was open. None for running_out and fetch events.
    level: Level | None = None
    value: int | None = None
    threshold: int | None = None  # the threshold crossed (or the resolve bar for resolved)
    alert: AlertKind | None = None  # which kind of alert this event is about
    forecast: Forecast | None = None
    error: FetchError | None = None
    opened_at: datetime | None = None  # when the condition first opened
    drop: Drop | None = None  # sudden_drop: how much, in how long
    burn: Burn | None = None  # burn alerts: the last hour against the usual hour
    pool: int | None = None  # what the account pool holds of this type, when it could help

    @property
    def key(self) -> str:
        if self.kind is EventKind.SUDDEN_DROP:
            # Nothing stays open for a drop: its key names no alert of the book.
            return f"{alert_key(self.scope, self.quota_type)}/drop"
        if self.alert in REPORT_ALERTS:
            return report_alert_key(self.scope, self.alert)
        return alert_key(self.scope, self.quota_type, self.alert)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "scope": self.scope,
            "at": _ts(self.at),
            "quota_type": self.quota_type.value if self.quota_type else None,
            "level": self.level.value if self.level else None,
            "value": self.value,
            "threshold": self.threshold,
            "alert": self.alert.value if self.alert else None,
            "forecast": self.forecast.to_json() if self.forecast else None,
            "error": self.error.to_json() if self.error else None,
            "opened_at": _ts(self.opened_at) if self.opened_at else None,
            "drop": self.drop.to_json() if self.drop else None,
            "burn": self.burn.to_json() if self.burn else None,
            "pool": self.pool,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        err = d.get("error")
        return cls(
            kind=EventKind(d["kind"]),
            scope=d["scope"],
            at=_dt(d["at"]),
            quota_type=QuotaType(d["quota_type"]) if d.get("quota_type") else None,
            level=Level(d["level"]) if d.get("level") else None,
            value=d.get("value"),
            threshold=d.get("threshold"),
            alert=AlertKind(d["alert"]) if d.get("alert") else None,
            forecast=Forecast.from_json(d["forecast"]) if d.get("forecast") else None,
            error=FetchError.from_json(err) if err else None,
            opened_at=_dt(d["opened_at"]) if d.get("opened_at") else None,
            drop=Drop.from_json(d["drop"]) if d.get("drop") else None,
            burn=Burn.from_json(d["burn"]) if d.get("burn") else None,
            pool=d.get("pool"),
        )


def alert_key(scope: str, quota_type: QuotaType | None, alert: AlertKind | None = None) -> str:
    """`scope/type` for quota alerts (`scope/type/burn` for burning faster than usual, which
    may be open beside the others), `scope` alone for the scope's fetch-health alert."""
    if quota_type is None:
        return scope
    key = f"{scope}/{quota_type.value}"
    return f"{key}/burn" if alert is AlertKind.BURN else key


REPORT_ALERTS = frozenset({AlertKind.SENDS_FAILING, AlertKind.RATE_LIMITED})


def report_alert_key(scope: str, alert: AlertKind) -> str:
    """`scope/sends_failing`, `scope/rate_limited`: never a quota type's name."""
    return f"{scope}/{alert.value}"


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open condition on one (scope, type): at most one at a time, at its worst level."""

    alert: AlertKind
    level: Level  # WARNING or CRITICAL for threshold alerts; WARNING for running_out
    opened_at: datetime
    # When the last message about it was delivered (or queued, while `pending`).
    announced_at: datetime
    # A message about it sits in the outbox; no repeat is due until it is delivered.
    pending: bool = True
    value: int | None = None
    # Delivery-report alerts: when a report last confirmed the condition.
    last_seen: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alert": self.alert.value,
            "level": self.level.value,
            "opened_at": _ts(self.opened_at),
            "announced_at": _ts(self.announced_at),
            "pending": self.pending,
            "value": self.value,
        }
        if self.last_seen is not None:
            data["last_seen"] = _ts(self.last_seen)
        return data

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OpenAlert:
        return cls(
            alert=AlertKind(d["alert"]),
            level=Level(d["level"]),
            opened_at=_dt(d["opened_at"]),
            announced_at=_dt(d["announced_at"]),
            pending=bool(d["pending"]),
            value=d.get("value"),
            last_seen=_dt(d["last_seen"]) if d.get("last_seen") else None,
        )


@dataclass(frozen=True, slots=True)
class ScopeHealth:
    """Fetch health of one scope, for fetch_failing / fetch_recovered."""

    consecutive_failures: int = 0
    failing_since: datetime | None = None  # set while a fetch_failing alert is open
    announced_at: datetime | None = None
    pending: bool = False
    last_error: FetchError | None = None

    def to_json(self) -> dict[str, Any]:
        err = self.last_error
        return {
            "consecutive_failures": self.consecutive_failures,
            "failing_since": _ts(self.failing_since) if self.failing_since else None,
            "announced_at": _ts(self.announced_at) if self.announced_at else None,
            "pending": self.pending,
            "last_error": err.to_json() if err else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScopeHealth:
        err = d.get("last_error")
        return cls(
            consecutive_failures=int(d["consecutive_failures"]),
            failing_since=_dt(d["failing_since"]) if d.get("failing_since") else None,
            announced_at=_dt(d["announced_at"]) if d.get("announced_at") else None,
            pending=bool(d.get("pending", False)),
            last_error=FetchError.from_json(err) if err else None,
        )


# --- incidents: one live Slack conversation per scope (decided by bot.incidents) ------------

# Events that close a condition; every other kind opens or restates one, except the
# informational ones, which are told once and leave nothing open.
CLOSING_EVENTS = frozenset({EventKind.RESOLVED, EventKind.FETCH_RECOVERED})
INFORMATIONAL_EVENTS = frozenset({EventKind.SUDDEN_DROP})


class OpKind(StrEnum):
    ROOT = "root"  # chat.postMessage, top level
    REPLY = "reply"  # chat.postMessage with thread_ts (and maybe reply_broadcast)
    UPDATE = "update"  # chat.update of the root
    DIGEST = "digest"  # the daily summary: a top-level post of its own (text and blocks)


class NoticeKind(StrEnum):
    ACK = "ack"
    UNACK = "unack"
    SNOOZE = "snooze"
    UNSNOOZE = "unsnooze"
    SNOOZE_OVER = "snooze_over"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Ack:
    by: str  # Slack user id
    at: datetime


@dataclass(frozen=True, slots=True)
class Snooze:
    by: str
    until: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """A thread line that is not an alert event: who acknowledged, snoozed, or that it ended."""

    kind: NoticeKind
    by: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    scope: str
    channel: str
    opened_at: datetime
    root_id: str  # id of the operation that posts the root (shared by a flood summary)
    # The latest event of every open condition, by alert key: what the root shows.
    alerts: Mapping[str, Event] = field(default_factory=dict)
    root_ts: str | None = None  # set once Slack accepted the root
    ack: Ack | None = None
    snooze: Snooze | None = None
    closed_at: datetime | None = None

    @property
    def level(self) -> Level:
        """The worst open level: critical if any alert is critical, else warning."""
        if any(e.level is Level.CRITICAL for e in self.alerts.values()):
            return Level.CRITICAL
        return Level.WARNING

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "channel": self.channel,
            "opened_at": self.opened_at.isoformat(),
            "root_id": self.root_id,
            "alerts": {k: e.to_json() for k, e in sorted(self.alerts.items())},
            "root_ts": self.root_ts,
            "ack": {"by": self.ack.by, "at": self.ack.at.isoformat()} if self.ack else None,
            "snooze": (
                {"by": self.snooze.by, "until": self.snooze.until.isoformat()}
                if self.snooze
                else None
            ),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Incident:
        ack = d.get("ack")
        snooze = d.get("snooze")
        return cls(
            id=d["id"],
            scope=d["scope"],
            channel=d["channel"],
            opened_at=datetime.fromisoformat(d["opened_at"]),
            root_id=d["root_id"],
            alerts={k: Event.from_json(e) for k, e in d.get("alerts", {}).items()},
            root_ts=d.get("root_ts"),
            ack=Ack(ack["by"], datetime.fromisoformat(ack["at"])) if ack else None,
            snooze=(
                Snooze(snooze["by"], datetime.fromisoformat(snooze["until"])) if snooze else None
            ),
            closed_at=datetime.fromisoformat(d["closed_at"]) if d.get("closed_at") else None,
        )


@dataclass(frozen=True, slots=True)
class IncidentBook:
    """The open incidents, at most one per scope."""

    open: Mapping[str, Incident] = field(default_factory=dict)  # by scope

    def to_json(self) -> dict[str, Any]:
        return {"open": {s: i.to_json() for s, i in sorted(self.open.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> IncidentBook:
        if not d:
            return cls()
        return cls(open={s: Incident.from_json(i) for s, i in d.get("open", {}).items()})

    def record_root(self, root_id: str, ts: str) -> IncidentBook:
        """Slack accepted the root posted by operation `root_id` as message `ts`."""
        changed = {
            s: replace(i, root_ts=ts)
            for s, i in self.open.items()
            if i.root_id == root_id and i.root_ts != ts
        }
        if not changed:
            return self
        return IncidentBook(open={**self.open, **changed})


@dataclass(frozen=True, slots=True)
class Op:
    """One Slack call to make, in order, for one root conversation.

    `views` is the state a ROOT or UPDATE shows (several incidents for a flood summary);
    `events`/`notice` is what a REPLY says. `keys` are the alert keys whose announcement this
    operation carries (they stop being pending when it is delivered).
    """

    id: str
    kind: OpKind
    channel: str
    root_id: str  # for ROOT: its own id
    views: tuple[Incident, ...] = ()
    events: tuple[Event, ...] = ()
    notice: Notice | None = None
    broadcast: bool = False
    mention: bool = False  # put the critical mention in front
    keys: tuple[str, ...] = ()
    scope: str = ""  # for a notice: whose incident it is about
    text: str = ""  # a digest's fallback text
    blocks: tuple[dict[str, Any], ...] = ()  # a digest's Block Kit
    markdown: str = ""  # a digest's body for a chat robot (then `text` is its title)

    @property
    def top_level(self) -> bool:
        """Whether the channel sees it as a new message."""
        return self.kind is OpKind.ROOT or (self.kind is OpKind.REPLY and self.broadcast)

    def to_json(self) -> dict[str, Any]:
        n = self.notice
        return {
            "id": self.id,
            "kind": self.kind.value,
            "channel": self.channel,
            "root_id": self.root_id,
            "views": [v.to_json() for v in self.views],
            "events": [e.to_json() for e in self.events],
            "notice": (
                {
                    "kind": n.kind.value,
                    "by": n.by,
                    "until": n.until.isoformat() if n.until else None,
                }
                if n
                else None
            ),
            "broadcast": self.broadcast,
            "mention": self.mention,
            "keys": list(self.keys),
            "scope": self.scope,
            "text": self.text,
            "blocks": list(self.blocks),
            "markdown": self.markdown,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Op:
        n = d.get("notice")
        return cls(
            id=d["id"],
            kind=OpKind(d["kind"]),
            channel=d["channel"],
            root_id=d["root_id"],
            views=tuple(Incident.from_json(v) for v in d.get("views", [])),
            events=tuple(Event.from_json(e) for e in d.get("events", [])),
            notice=(
                Notice(
                    kind=NoticeKind(n["kind"]),
                    by=n.get("by"),
                    until=datetime.fromisoformat(n["until"]) if n.get("until") else None,
                )
                if n
                else None
            ),
            broadcast=bool(d.get("broadcast", False)),
            mention=bool(d.get("mention", False)),
            keys=tuple(d.get("keys", [])),
            scope=str(d.get("scope", "")),
            text=str(d.get("text", "")),
            blocks=tuple(d.get("blocks", [])),
            markdown=str(d.get("markdown", "")),
        )


@dataclass(frozen=True, slots=True)
class AlertBook:
    """Everything the alert engine remembers between polls; persisted as one JSON document."""

    alerts: Mapping[str, OpenAlert] = field(default_factory=dict)  # key: alert_key(scope, type)
    health: Mapping[str, ScopeHealth] = field(default_factory=dict)  # key: scope name
    # Stored with the alerts so an incident changes atomically with the alerts behind it.
    incidents: IncidentBook = field(default_factory=IncidentBook)
    # The local date (ISO) of the last daily summary queued: one per day across restarts and
    # replicas, because it is committed with the summary itself.
    digest_day: str | None = None
    # When the newest reading this book has taken in was read, per scope: an older reading
    # (a late cycle's, another poller's) is ignored, so it can never undo newer news.
    read_at: Mapping[str, datetime] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "alerts": {k: v.to_json() for k, v in sorted(self.alerts.items())},
            "health": {k: v.to_json() for k, v in sorted(self.health.items())},
            "incidents": self.incidents.to_json(),
            "digest_day": self.digest_day,
            "read_at": {k: _ts(v) for k, v in sorted(self.read_at.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlertBook:
        return cls(
            alerts={k: OpenAlert.from_json(v) for k, v in d.get("alerts", {}).items()},
            health={k: ScopeHealth.from_json(v) for k, v in d.get("health", {}).items()},
            incidents=IncidentBook.from_json(d.get("incidents")),
            digest_day=d.get("digest_day"),
            read_at={k: _dt(v) for k, v in d.get("read_at", {}).items()},
        )

    def is_newer(self, reading: ScopeReading) -> bool:
        """False for a reading older than one of that scope the book has already taken in."""
        seen = self.read_at.get(reading.scope)
        return seen is None or reading.read_at >= seen

    def mark_delivered(self, keys: list[str], now: datetime) -> AlertBook:
        """A message naming `keys` reached Slack: repeats now count from `now`."""
        alerts = dict(self.alerts)
        health = dict(self.health)
        for key in keys:
            if key in alerts and alerts[key].pending:
                alerts[key] = replace(alerts[key], pending=False, announced_at=now)
            elif key in health and health[key].pending:
                health[key] = replace(health[key], pending=False, announced_at=now)
        return replace(self, alerts=alerts, health=health)

    def record_root(self, root_id: str, ts: str) -> AlertBook:
        """Slack accepted the root posted by outbox entry `root_id` as message `ts`."""
        incidents = self.incidents.record_root(root_id, ts)
        return self if incidents is self.incidents else replace(self, incidents=incidents)


def _ts(value: datetime) -> str:
    return value.isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)
