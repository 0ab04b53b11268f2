"""Output of `sms-balance-bot check`: an aligned table, its JSON, the exit status.

Pure: views and `now` in, text / dicts / ints out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.quota import QUOTA_TYPES, Level, Status, worst
from bot.render.format import (
    DEFAULT,
    Locale,
    display_width,
    fmt_error,
    fmt_int,
    fmt_threshold,
    fmt_when,
    pad,
    runs_out_cell,
    utc,
)
from bot.views import ScopeView

_RIGHT_ALIGNED = frozenset({2})  # VALUE
_GAP = "  "
# The JSON is read by programs, so its words do not follow the message language.
_NOT_READ_JSON = "not read yet"


def overall_status(views: Sequence[ScopeView]) -> Status:
    return worst(view.status for view in views)


def exit_status(views: Sequence[ScopeView]) -> int:
    return overall_status(views).exit_code


# --- table -------------------------------------------------------------------------------------


def _scope_rows(view: ScopeView, now: datetime, loc: Locale) -> list[tuple[str, ...]]:
    lang = loc.lang
    reading, levels = view.reading, view.levels
    status = lang.status_word[view.status]

    def note(text: str) -> list[tuple[str, ...]]:
        # Rows that are not per type end with their explanation, left out of the widths.
        return [(view.scope, "-", "-", status, text)]

    if reading is None:
        return note(lang.not_read)
    if reading.error is not None:
        return note(lang.cannot_read.format(error=fmt_error(reading.error, loc)))
    if reading.unassigned or reading.balances is None or levels is None:
        return note(lang.not_assigned_code)
    rows: list[tuple[str, ...]] = []
    for t in QUOTA_TYPES:
        value = reading.balances.get(t)
        level = levels[t]
        forecast = view.forecasts.get(t)
        rows.append(
            (
                view.scope,
                lang.type_name[t],
                fmt_int(value, loc) if value is not None else "-",
                lang.status_word[level.status],
                "-" if level is Level.UNASSIGNED else fmt_threshold(view.thresholds.get(t), loc),
                runs_out_cell(forecast, now, loc) if forecast and value is not None else "",
            )
        )
    return rows


def _align(rows: Sequence[tuple[str, ...]], columns: int) -> list[str]:
    # A row's last cell never pads anything, so a long error cannot widen every column.
    widths = [0] * columns
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], display_width(cell))
    lines = []
    for row in rows:
        cells = [
            cell if i == len(row) - 1 else pad(cell, widths[i], right=i in _RIGHT_ALIGNED)
            for i, cell in enumerate(row)
        ]
        lines.append(_GAP.join(cells).rstrip())
    return lines


def render_table(views: Sequence[ScopeView], now: datetime, loc: Locale = DEFAULT) -> str:
    lang = loc.lang
    rows: list[tuple[str, ...]] = [lang.table_header]
    for view in views:
        rows.extend(_scope_rows(view, now, loc))
    status = overall_status(views)
    footer = lang.table_footer.format(
        status=lang.status_word[status],
        code=status.exit_code,
        n=len(views),
        scopes=lang.scope_one if len(views) == 1 else lang.scope_many,
        when=fmt_when(now, loc=loc),
    )
    return "\n".join([*_align(rows, len(lang.table_header)), footer])


# --- JSON --------------------------------------------------------------------------------------


def _iso_z(dt: datetime) -> str:
    return utc(dt).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        out["error"] = {"code": None, "message": _NOT_READ_JSON}
        return out
    if reading.error is not None:
        # Error scopes carry no "forecast" key.
        out["error"] = {"code": reading.error.code, "message": reading.error.message}
        return out
    if levels is None:
        return out
    # Unassigned (50033) scope: there are no numbers, so "balances" is null (a dict of nulls
    # would read like four unassigned types of a readable scope); "levels" still says
    # "unassigned" for every type, since that is a level word.
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
    if view.burns:
        out["burn"] = {
            t.value: {
                "last_hour": round(view.burns[t].last_hour, 1),
                "usual_per_hour": round(view.burns[t].usual, 1),
                "ratio": round(view.burns[t].ratio, 2),
            }
            for t in QUOTA_TYPES
            if t in view.burns
        }
    return out


def check_json(views: Sequence[ScopeView]) -> dict[str, Any]:
    """The `check --json` object."""
    return {
        "status": overall_status(views).value,
        "scopes": [_scope_json(view) for view in views],
    }
