"""What is known about one scope right now: the input to every reply, table and gauge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.alerts_types import Forecast
from bot.quota import Level, QuotaType, ScopeKind, ScopeReading, Status, Thresholds, evaluate
from bot.quota import scope_status as _scope_status


@dataclass(frozen=True, slots=True)
class ScopeView:
    scope: str
    kind: ScopeKind
    reading: ScopeReading | None  # None: not read yet
    thresholds: Thresholds
    forecasts: Mapping[QuotaType, Forecast] = field(default_factory=dict)
    # Values over the last 24 h, oldest first, for sparklines (single-scope replies only).
    trend: Mapping[QuotaType, Sequence[int]] = field(default_factory=dict)

    # Computed once: renderers ask for levels many times per view.
    levels: dict[QuotaType, Level] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        levels = None if self.reading is None else evaluate(self.reading, self.thresholds)
        object.__setattr__(self, "levels", levels)

    @property
    def status(self) -> Status:
        if self.reading is None:
            return Status.UNKNOWN
        return _scope_status(self.reading, self.levels)
