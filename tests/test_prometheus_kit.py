"""deploy/: the Prometheus alerting rules, their promtool tests and the Grafana dashboard.

Every metric a rule or a panel names must be one a running bot exports, checked against the
/metrics of a `serve` process; the rules' own behaviour is tested by promtool (also in CI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_slack import FakeSlack
from live_metrics import live_bot, samples

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sms-balance-bot.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed: apt-get install prometheus"
)

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for name, call in _IDENTIFIER.findall(text):
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sms_balance", {"sms_balance"}),
        (
            'sms_balance{job=~"$job"} < ignoring(level) sms_balance_threshold{level="warning"}',
            {"sms_balance", "sms_balance_threshold"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(sms_poll_duration_seconds_bucket[5m])))",
            {"sms_poll_duration_seconds_bucket"},
        ),
        ("time() - x > 3 * y or absent(z)", {"x", "y", "z"}),
        ("count(a == 0) or vector(0)", {"a"}),
        (
            "sms_balance_seconds_to_empty < 24 * 3600 and b > 1e3",
            {"sms_balance_seconds_to_empty", "b"},
        ),
        ('rate(c{a="x{y}"}[$__rate_interval]) * 60', {"c"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def queried_metrics(query: str) -> set[str]:
    found = _LABEL_VALUES.match(query)
    if found:
        return metric_names(found.group(1) or "")
    return metric_names(query)


def test_each_rule_has_a_firing_and_a_not_firing_case() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    names = [rule["alert"] for rule in rules()]
    assert names and len(names) == len(set(names))
    for name in names:
        assert cases.get(name) == {True, False}, f"{name}: needs a firing and a quiet case"
    assert set(cases) <= set(names)


def test_rules_cover_the_conditions_and_carry_severity_and_text() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    exprs = " ".join(rule["expr"] for rule in by_name.values())
    for metric in (
        "sms_balance_threshold",
        "sms_balance_seconds_to_empty",
        "sms_scope_up",
        "sms_poll_last_completed_timestamp_seconds",
        "sms_alert_outbox_oldest_timestamp_seconds",
    ):
        assert metric in exprs
    # Projected empty: a day ahead as a warning, four hours ahead as critical.
    assert "24 * 3600" in by_name["SmsQuotaRunningOut"]["expr"]
    assert "4 * 3600" in by_name["SmsQuotaRunningOutSoon"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        # No quota number is hard-coded: thresholds come from the bot's own gauge.
        assert not re.search(r"sms_balance\s*[<>]=?\s*\d", rule["expr"])


@needs_promtool
def test_promtool_checks_and_tests_the_rules() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert test.returncode == 0, test.stdout + test.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses the queries as recording rules, with Grafana's variables filled in.
    recording = []
    for index, expr in enumerate(t["expr"] for p in panels() for t in p["targets"]):
        filled = (
            expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$scope", ".*")
        )
        recording.append({"record": f"dashboard:query_{index}", "expr": filled})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_dashboard_structure() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "scope"} <= variables
    titles = " / ".join(p["title"].lower() for p in panels())
    for topic in ("balances", "time to empty", "burn rate", "poll", "outbox", "slash-command"):
        assert topic in titles, topic
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert queried_metrics(target["expr"]), (panel["title"], target["expr"])


async def test_every_metric_in_rules_and_dashboard_is_exported(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with live_bot(tmp_path, slack) as bot:
        exported = set(samples(await bot.scrape()))
    named = {m for q in dashboard_queries() for m in queried_metrics(q)}
    named |= {m for rule in rules() for m in metric_names(rule["expr"])}
    assert "sms_balance" in named and "sms_slash_commands_total" in named
    assert named - exported == set(), "queries name metrics the bot does not export"
