"""Quota vocabulary and the level decision.

Pure: plain values in, plain values out. No I/O, no clock, no environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import SecretStr


class QuotaType(StrEnum):
    BALANCE = "balance"  # all-purpose
    VOICE = "voice"
    INDUSTRY = "industry"  # transactional
    MARKET = "market"  # marketing


QUOTA_TYPES: tuple[QuotaType, ...] = tuple(QuotaType)


class Status(StrEnum):
    """A scope's (or the whole run's) status; also the Nagios exit status."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNASSIGNED = "unassigned"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        """The one severity order: critical > unknown > warning > ok = unassigned."""
        return _SEVERITY[self]

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


class Level(StrEnum):
    """One quota type's level: the statuses a readable value can have."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNASSIGNED = "unassigned"

    @property
    def status(self) -> Status:
        """The same word as a status, so levels share the statuses' order, emoji and words."""
        return Status(self.value)


class ScopeKind(StrEnum):
    ACCOUNT = "account"
    APP = "app"


# Statuses order critical > unknown > warning > ok; unassigned counts as ok.
_SEVERITY: dict[Status, int] = {
    Status.OK: 0,
    Status.UNASSIGNED: 0,
    Status.WARNING: 1,
    Status.UNKNOWN: 2,
    Status.CRITICAL: 3,
}

_EXIT_CODES: dict[Status, int] = {
    Status.OK: 0,
    Status.UNASSIGNED: 0,
    Status.WARNING: 1,
    Status.CRITICAL: 2,
    Status.UNKNOWN: 3,
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """Alert when a value is strictly below `warning` / `critical`; 0 disables that level."""

    warning: int
    critical: int

    @property
    def disabled(self) -> bool:
        return self.warning == 0 and self.critical == 0


Thresholds = Mapping[QuotaType, Threshold]

# None means "no quota allocated for this type" (JPush sends null).
Balances = Mapping[QuotaType, int | None]


@dataclass(frozen=True, slots=True)
class FetchError:
    """Why a scope could not be read; never to be mistaken for a zero balance."""

    code: int | None
    message: str
    # configuration errors (bad keys, SMS disabled) alert at once instead of after N failures
    config: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "config": self.config}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FetchError:
        return cls(code=data.get("code"), message=data["message"], config=data["config"])


@dataclass(frozen=True, slots=True)
class ScopeReading:
    """One poll of one scope: either balances, or unassigned (50033), or an error."""

    scope: str
    kind: ScopeKind
    read_at: datetime
    balances: Balances | None = None
    error: FetchError | None = None
    unassigned: bool = False


@dataclass(frozen=True, slots=True)
class Scope:
    """A configured thing to poll: the account (dev key) or one app."""

    name: str
    kind: ScopeKind
    key: str
    secret: SecretStr
    thresholds: Thresholds = field(default_factory=dict)


def level_for(value: int | None, threshold: Threshold) -> Level:
    if value is None:
        return Level.UNASSIGNED
    if threshold.critical and value < threshold.critical:
        return Level.CRITICAL
    if threshold.warning and value < threshold.warning:
        return Level.WARNING
    return Level.OK


def evaluate(reading: ScopeReading, thresholds: Thresholds) -> dict[QuotaType, Level] | None:
    """Level of every type of a reading; None when there is nothing to judge (error)."""
    if reading.error is not None:
        return None
    if reading.unassigned or reading.balances is None:
        return {t: Level.UNASSIGNED for t in QUOTA_TYPES}
    return {
        t: level_for(reading.balances.get(t), thresholds.get(t, Threshold(0, 0)))
        for t in QUOTA_TYPES
    }


def scope_status(reading: ScopeReading, levels: Mapping[QuotaType, Level] | None) -> Status:
    if reading.error is not None or levels is None:
        return Status.UNKNOWN
    if reading.unassigned:
        return Status.UNASSIGNED
    present = set(levels.values())
    if Level.CRITICAL in present:
        return Status.CRITICAL
    if Level.WARNING in present:
        return Status.WARNING
    if present == {Level.UNASSIGNED}:
        return Status.UNASSIGNED
    return Status.OK


def worst(statuses: Iterable[Status]) -> Status:
    result = Status.OK
    for status in statuses:
        if status.severity > result.severity:
            result = status
    return result


def exit_code(status: Status) -> int:
    return status.exit_code
