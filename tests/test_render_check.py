"""`sms-balance-bot check`: the documented JSON shape, the status order and the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import builders
import pytest
from builders import NOW, Q, values

from bot.forecast import Forecast
from bot.quota import FetchError, ScopeKind, ScopeReading, Threshold
from bot.render.check import check_json, exit_status, render_table
from bot.views import ScopeView

TYPES = ["balance", "voice", "industry", "market"]


def view(name: str, *args: Any, read: bool = True, **kw: Any) -> ScopeView:
    return builders.view(name, *args, read_ago=timedelta(seconds=2) if read else None, **kw)


OK = view("ok", values())
WARNING = view("warn", values(voice=702))
CRITICAL = view(
    "account",
    values(balance=9, voice=702, industry=121981, market=11683),
    forecasts={Q.INDUSTRY: Forecast(120.54, datetime(2026, 12, 1, 8, 0, 0, 999_000, tzinfo=UTC))},
)
UNKNOWN = view("shop", error=FetchError(50002, "auth failed", config=True))
UNASSIGNED = view("crm", unassigned=True)


# --- JSON -------------------------------------------------------------------------------------


def test_documented_json_example() -> None:
    assert check_json([CRITICAL, UNKNOWN]) == {
        "status": "critical",
        "scopes": [
            {
                "name": "account",
                "kind": "account",
                "status": "critical",
                "error": None,
                "balances": {"balance": 9, "voice": 702, "industry": 121981, "market": 11683},
                "levels": {
                    "balance": "critical",
                    "voice": "warning",
                    "industry": "ok",
                    "market": "ok",
                },
                "forecast": {"industry": {"per_hour": 120.5, "empty_at": "2026-12-01T08:00:00Z"}},
            },
            {
                "name": "shop",
                "kind": "app",
                "status": "unknown",
                "error": {"code": 50002, "message": "auth failed"},
                "balances": None,
                "levels": None,
            },
        ],
    }


READABLE_KEYS = {"name", "kind", "status", "error", "balances", "levels", "forecast"}
ERROR_KEYS = READABLE_KEYS - {"forecast"}


def assert_scope_shape(scope: dict[str, Any]) -> None:
    assert isinstance(scope["name"], str)
    assert scope["kind"] in ("account", "app")
    assert scope["status"] in ("ok", "warning", "critical", "unassigned", "unknown")
    if scope["status"] == "unknown":
        assert set(scope) == ERROR_KEYS
        assert set(scope["error"]) == {"code", "message"}
        assert scope["error"]["code"] is None or isinstance(scope["error"]["code"], int)
        assert isinstance(scope["error"]["message"], str)
        assert scope["balances"] is None
        assert scope["levels"] is None
        return
    assert set(scope) == READABLE_KEYS
    assert scope["error"] is None
    assert list(scope["levels"]) == TYPES
    assert set(scope["levels"].values()) <= {"ok", "warning", "critical", "unassigned"}
    if scope["balances"] is not None:
        assert list(scope["balances"]) == TYPES
        for value in scope["balances"].values():
            assert value is None or (isinstance(value, int) and not isinstance(value, bool))
    assert isinstance(scope["forecast"], dict)
    for name, forecast in scope["forecast"].items():
        assert name in TYPES
        assert set(forecast) == {"per_hour", "empty_at"}
        assert isinstance(forecast["per_hour"], float)
        datetime.strptime(forecast["empty_at"], "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("scope_view", "status"),
    [
        (OK, "ok"),
        (WARNING, "warning"),
        (CRITICAL, "critical"),
        (UNKNOWN, "unknown"),
        (UNASSIGNED, "unassigned"),
        (view("later", read=False), "unknown"),
        (view("net", error=FetchError(None, "connection reset")), "unknown"),
    ],
)
def test_scope_shape(scope_view: ScopeView, status: str) -> None:
    out = check_json([scope_view])
    assert set(out) == {"status", "scopes"}
    (scope,) = out["scopes"]
    assert scope["status"] == status
    assert_scope_shape(scope)
    json.dumps(out)  # plain JSON types only


def test_readable_scope_details() -> None:
    (ok,) = check_json([OK])["scopes"]
    assert ok["forecast"] == {}
    assert ok["levels"] == dict.fromkeys(TYPES, "ok")
    (warning,) = check_json([WARNING])["scopes"]
    assert warning["levels"]["voice"] == "warning"
    assert warning["balances"]["voice"] == 702


def test_unassigned_scope() -> None:
    # 50033: no numbers at all, so balances is null; every level says unassigned.
    (scope,) = check_json([UNASSIGNED])["scopes"]
    assert scope == {
        "name": "crm",
        "kind": "app",
        "status": "unassigned",
        "error": None,
        "balances": None,
        "levels": dict.fromkeys(TYPES, "unassigned"),
        "forecast": {},
    }


def test_null_type_is_unassigned() -> None:
    (scope,) = check_json([view("a", {**values(), Q.VOICE: None})])["scopes"]
    assert scope["balances"]["voice"] is None
    assert scope["levels"]["voice"] == "unassigned"
    assert scope["status"] == "ok"


def test_not_read_yet_is_unknown() -> None:
    (scope,) = check_json([view("later", read=False)])["scopes"]
    assert scope["error"] == {"code": None, "message": "not read yet"}


@pytest.mark.parametrize(
    ("per_hour", "empty_at", "json_rate", "json_at"),
    [
        (120.54, datetime(2026, 12, 1, 8, 0, tzinfo=UTC), 120.5, "2026-12-01T08:00:00Z"),
        (0.04, datetime(2026, 12, 1, 8, 0, 59, 999_999, tzinfo=UTC), 0.0, "2026-12-01T08:00:59Z"),
        (
            3,
            datetime(2026, 12, 1, 16, 0, tzinfo=timezone(timedelta(hours=8))),
            3.0,
            "2026-12-01T08:00:00Z",
        ),
        (1e6 / 3, datetime(2026, 12, 1, 8, 0), 333333.3, "2026-12-01T08:00:00Z"),
    ],
)
def test_forecast_format(
    per_hour: float, empty_at: datetime, json_rate: float, json_at: str
) -> None:
    scoped = view("a", values(), forecasts={Q.MARKET: Forecast(per_hour, empty_at)})
    (scope,) = check_json([scoped])["scopes"]
    assert scope["forecast"] == {"market": {"per_hour": json_rate, "empty_at": json_at}}
    assert isinstance(scope["forecast"]["market"]["per_hour"], float)


@pytest.mark.parametrize(
    ("views", "status", "code"),
    [
        ([], "ok", 0),
        ([OK], "ok", 0),
        ([UNASSIGNED], "ok", 0),
        ([OK, UNASSIGNED], "ok", 0),
        ([OK, WARNING], "warning", 1),
        ([WARNING, UNASSIGNED], "warning", 1),
        ([WARNING, UNKNOWN], "unknown", 3),
        ([UNKNOWN, OK], "unknown", 3),
        ([UNKNOWN, CRITICAL], "critical", 2),
        ([CRITICAL, WARNING, OK, UNASSIGNED], "critical", 2),
        ([view("later", read=False)], "unknown", 3),
    ],
)
def test_status_order(views: list[ScopeView], status: str, code: int) -> None:
    assert check_json(views)["status"] == status
    assert exit_status(views) == code


# --- table ------------------------------------------------------------------------------------


def test_table() -> None:
    views = [
        CRITICAL,
        UNKNOWN,
        UNASSIGNED,
        view("later", read=False),
        view("mixed", {**values(), Q.BALANCE: None}),
    ]
    table = render_table(views, NOW)
    assert table.split("\n") == [
        "SCOPE    TYPE        VALUE  LEVEL       THRESHOLD                  RUNS OUT",
        "account  balance         9  critical    warn < 1,000 / crit < 100",
        "account  voice         702  warning     warn < 1,000 / crit < 100",
        "account  industry  121,981  ok          warn < 1,000 / crit < 100"
        "  about 5 days (Tue 08:00 UTC)",
        "account  market     11,683  ok          warn < 1,000 / crit < 100",
        "shop     -               -  unknown     cannot read: auth failed (50002)",
        "crm      -               -  unassigned  quota not assigned (50033)",
        "later    -               -  unknown     not read yet",
        "mixed    balance         -  unassigned  -",
        "mixed    voice       5,000  ok          warn < 1,000 / crit < 100",
        "mixed    industry    5,000  ok          warn < 1,000 / crit < 100",
        "mixed    market      5,000  ok          warn < 1,000 / crit < 100",
        "overall: critical (exit 2) · 5 scopes · checked 2026-11-26 09:44 UTC",
    ]


def test_table_alignment_survives_long_errors_and_names() -> None:
    long_error = view("shop", error=FetchError(50019, "upstream said: " + "x" * 150))
    views = [view("a-rather-long-app-name", values(balance=1_234_567)), long_error, OK]
    lines = render_table(views, NOW).split("\n")
    header = lines[0]
    value_end = header.index("VALUE") + len("VALUE")
    threshold_at = header.index("THRESHOLD")
    for line in lines[1:-1]:
        if " - " in line and "cannot read" in line:
            assert line[threshold_at:].startswith("cannot read: upstream said: ")
            continue
        # right-aligned values end under the end of "VALUE"; thresholds start under "THRESHOLD"
        assert line[value_end - 1] != " "
        assert line[value_end : value_end + 2] == "  "
        assert line[threshold_at:].startswith(("warn < ", "-", "off"))
    assert "1,234,567" in lines[1]
    assert lines[-1] == "overall: unknown (exit 3) · 3 scopes · checked 2026-11-26 09:44 UTC"
    assert all(line == line.rstrip() for line in lines)


def test_disabled_thresholds() -> None:
    custom = ScopeView(
        "a",
        ScopeKind.APP,
        ScopeReading("a", ScopeKind.APP, NOW, balances=values()),
        {Q.BALANCE: Threshold(0, 0), Q.VOICE: Threshold(1000, 0), Q.INDUSTRY: Threshold(0, 50)},
    )
    rows = render_table([custom], NOW).split("\n")[1:5]
    assert [row.split("  ok  ")[1].strip() for row in rows] == [
        "off",
        "warn < 1,000",
        "crit < 50",
        "off",
    ]
