"""Output of `sms-balance-bot check`: an aligned table, the contract's JSON, the exit status.

Pure: views and `now` in, text / dicts / ints out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.alerts_types import Forecast
from bot.messages import fmt_duration, fmt_error, fmt_int, fmt_threshold, fmt_when
from bot.quota import QUOTA_TYPES, Level, Status, exit_code, worst
from bot.snapshot import ScopeView

_HEADER = ("SCOPE", "TYPE", "VALUE", "LEVEL", "THRESHOLD", "RUNS OUT")
_RIGHT_ALIGNED = frozenset({2})  # VALUE
_GAP = "  "
_NOT_READ = "not read yet"


def overall_status(views: Sequence[ScopeView]) -> Status:
    return worst(view.status for view in views)


def exit_status(views: Sequence[ScopeView]) -> int:
    return exit_code(overall_status(views))


# --- table -------------------------------------------------------------------------------------


def _scope_rows(view: ScopeView, now: datetime) -> list[tuple[str, ...]]:
    reading, levels = view.reading, view.levels
    status = view.status.value
    # Rows that are not per type end with their explanation, which is left out of the widths.
    if reading is None:
        return [(view.scope, "-", "-", status, _NOT_READ)]
    if reading.error is not None:
        return [(view.scope, "-", "-", status, f"cannot read: {fmt_error(reading.error)}")]
    if reading.unassigned or reading.balances is None or levels is None:
        return [(view.scope, "-", "-", status, "quota not assigned (50033)")]
    rows: list[tuple[str, ...]] = []
    for t in QUOTA_TYPES:
        value = reading.balances.get(t)
        level = levels[t]
        forecast = view.forecasts.get(t)
        rows.append(
            (
                view.scope,
                t.value,
                fmt_int(value) if value is not None else "-",
                level.value,
                "-" if level is Level.UNASSIGNED else fmt_threshold(view.thresholds.get(t)),
                _runs_out(forecast, now) if forecast is not None and value is not None else "",
            )
        )
    return rows


def _runs_out(forecast: Forecast, now: datetime) -> str:
    return f"{fmt_duration(forecast.seconds_to_empty(now))} ({fmt_when(forecast.empty_at, now)})"


def _align(rows: Sequence[tuple[str, ...]]) -> list[str]:
    # A row's last cell never pads anything, so a long error cannot widen every column.
    widths = [0] * len(_HEADER)
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in rows:
        cells = [
            cell
            if i == len(row) - 1
            else (cell.rjust(widths[i]) if i in _RIGHT_ALIGNED else cell.ljust(widths[i]))
            for i, cell in enumerate(row)
        ]
        lines.append(_GAP.join(cells).rstrip())
    return lines


def render_table(views: Sequence[ScopeView], now: datetime) -> str:
    rows: list[tuple[str, ...]] = [_HEADER]
    for view in views:
        rows.extend(_scope_rows(view, now))
    status = overall_status(views)
    plural = "scope" if len(views) == 1 else "scopes"
    footer = (
        f"overall: {status.value} (exit {exit_code(status)}) · {len(views)} {plural} · "
        f"checked {fmt_when(now)}"
    )
    return "\n".join([*_align(rows), footer])


# --- JSON --------------------------------------------------------------------------------------


def _iso_z(dt: datetime) -> str:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scope_json(view: ScopeView) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": view.scope,
        "kind": view.kind.value,
        "status": view.status.value,
        "error": None,
        "balances": None,
        "levels": None,
    }
    reading, levels = view.reading, view.levels
    if reading is None:
        # Nothing read yet is as unknown as a failed read; say why in the error's shape.
        out["error"] = {"code": None, "message": _NOT_READ}
        return out
    if reading.error is not None:
        # The contract's example omits "forecast" on error scopes.
        out["error"] = {"code": reading.error.code, "message": reading.error.message}
        return out
    if levels is None:
        return out
    # Unassigned (50033) scope: there are no numbers, so "balances" is null (a dict of nulls
    # would read like four unassigned types of a readable scope); "levels" still says
    # "unassigned" for every type, since that is a level in the contract's vocabulary.
    if not reading.unassigned and reading.balances is not None:
        out["balances"] = {t.value: reading.balances.get(t) for t in QUOTA_TYPES}
    out["levels"] = {t.value: levels[t].value for t in QUOTA_TYPES}
    out["forecast"] = {
        t.value: {
            "per_hour": round(float(view.forecasts[t].per_hour), 1),
            "empty_at": _iso_z(view.forecasts[t].empty_at),
        }
        for t in QUOTA_TYPES
        if t in view.forecasts
    }
    return out


def check_json(views: Sequence[ScopeView], now: datetime) -> dict[str, Any]:
    """The `check --json` object, exactly as in the contract. `now` is unused today; it is
    part of the signature so every renderer takes the same inputs."""
    del now
    return {
        "status": overall_status(views).value,
        "scopes": [_scope_json(view) for view in views],
    }
