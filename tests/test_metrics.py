"""/metrics: the token, no `_created` series, and names that follow Prometheus' conventions,
checked on the exposition of a running `serve` process."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_slack import FakeSlack
from live_metrics import TOKEN, live_bot, samples
from prometheus_client.parser import text_string_to_metric_families

from bot.delivery_reports import STATUS_LABELS
from bot.metrics import SLASH_OUTCOMES, Metrics, authorized
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind, Threshold

# Units that have a base unit Prometheus prefers (seconds, bytes, ratios 0..1).
NOT_BASE_UNITS = re.compile(
    r"_(milliseconds|ms|minutes|hours|hour|days|percent|kilobytes|megabytes)(_|$)|_per_(minute|hour|day)(_|$)"
)
LABEL_VALUES = {
    "scope": {"account", "shop"},
    "type": {t.value for t in QUOTA_TYPES},
    "level": {"warning", "critical"},
    "outcome": set(SLASH_OUTCOMES),
    # Delivery reports by JPush status; refused callbacks by HTTP status.
    "status": set(STATUS_LABELS) | {"400", "401", "413"},
}


@pytest.mark.parametrize(
    ("token", "header", "allowed"),
    [
        (None, None, True),
        (None, "Bearer anything", True),
        ("tok", None, False),
        ("tok", "", False),
        ("tok", "Bearer tok", True),
        ("tok", "bearer tok", True),
        ("tok", "Bearer  tok ", True),
        ("tok", "Bearer tok2", False),
        ("tok", "Bearer to", False),
        ("tok", "Bearer", False),
        ("tok", "Basic dG9rOg==", False),
        ("tok", "tok", False),
        ("tok", "Bearer tök", False),
    ],
)
def test_authorized(token: str | None, header: str | None, allowed: bool) -> None:
    assert authorized(token, header) is allowed


def scope(name: str, thresholds: dict[QuotaType, Threshold]) -> Scope:
    from pydantic import SecretStr

    return Scope(
        name=name, kind=ScopeKind.APP, key="k", secret=SecretStr("s"), thresholds=thresholds
    )


def test_thresholds_are_exported_per_scope_type_and_level_and_only_when_on() -> None:
    metrics = Metrics()
    started = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    metrics.observe_config(
        [
            scope(
                "shop", {QuotaType.INDUSTRY: Threshold(500, 50), QuotaType.VOICE: Threshold(0, 0)}
            ),
            scope("crm", {QuotaType.MARKET: Threshold(1000, 0)}),
        ],
        timedelta(minutes=5),
        started,
    )
    found = samples(metrics.render().decode())
    thresholds = {
        (labels["scope"], labels["type"], labels["level"]): value
        for labels, value in found["sms_balance_threshold"]
    }
    assert thresholds == {
        ("shop", "industry", "warning"): 500,
        ("shop", "industry", "critical"): 50,
        ("crm", "market", "warning"): 1000,
    }
    assert found["sms_poll_interval_seconds"] == [({}, 300.0)]
    # Every configured scope's error counter exists from the start, at 0.
    assert sorted(found["sms_fetch_errors_total"], key=str) == [
        ({"scope": "crm"}, 0.0),
        ({"scope": "shop"}, 0.0),
    ]
    # Until the first cycle completes, the start time stands in (as /healthz counts it).
    assert found["sms_poll_last_completed_timestamp_seconds"] == [({}, started.timestamp())]


def test_outbox_oldest_is_zero_when_empty() -> None:
    metrics = Metrics()
    queued_at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    metrics.observe_outbox(2, queued_at)
    found = samples(metrics.render().decode())
    assert found["sms_alert_outbox_messages"] == [({}, 2.0)]
    assert found["sms_alert_outbox_oldest_timestamp_seconds"] == [({}, queued_at.timestamp())]
    metrics.observe_outbox(0, None)
    found = samples(metrics.render().decode())
    assert found["sms_alert_outbox_oldest_timestamp_seconds"] == [({}, 0.0)]


async def test_metrics_token_created_series_and_naming(slack: FakeSlack, tmp_path: Path) -> None:
    async with live_bot(tmp_path, slack) as bot:
        # The token: nothing, a wrong one or another scheme is refused; /healthz stays open.
        for headers in (
            None,
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            status, body = await bot.get("/metrics", headers)
            assert status == 401, headers
            assert "sms_balance" not in body and "shop" not in body
        status, _ = await bot.get("/healthz")
        assert status == 200
        exposition = await bot.scrape()

    assert "_created" not in exposition
    families = list(text_string_to_metric_families(exposition))
    assert families
    now = time.time()
    for family in families:
        name = family.name
        assert name.startswith("sms_"), name
        assert family.documentation.strip(), f"{name} has no help text"
        assert not NOT_BASE_UNITS.search(name), f"{name}: use base units"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == name + "_total", sample.name
            else:
                assert not sample.name.endswith("_total"), f"{sample.name} is not a counter"
            for label, value in sample.labels.items():
                if label == "le":
                    assert family.type == "histogram"
                    continue
                assert value in LABEL_VALUES[label], (sample.name, label, value)
            if sample.name.endswith("_timestamp_seconds") and sample.value:
                assert now - 3600 < sample.value < now + 60, sample

    found = samples(exposition)
    # The documented metric names, a threshold the rules compare against, the stuck alert.
    assert ({"scope": "account", "type": "balance"}, 500.0) in found["sms_balance"]
    assert any(
        labels == {"scope": "shop", "type": "industry"}
        for labels, _ in found["sms_balance_seconds_to_empty"]
    )
    rate = dict((labels["type"], v) for labels, v in found["sms_balance_burn_rate_per_second"])
    assert rate["industry"] == pytest.approx(100.0, rel=0.3)
    thresholds = {
        (labels["scope"], labels["type"], labels["level"]): value
        for labels, value in found["sms_balance_threshold"]
    }
    assert thresholds[("account", "balance", "warning")] == 1000
    assert thresholds[("account", "balance", "critical")] == 100
    assert thresholds[("shop", "industry", "warning")] == 2000
    assert ("shop", "industry", "critical") not in thresholds  # switched off for that app
    assert found["sms_alert_outbox_messages"][0][1] >= 1
    oldest = found["sms_alert_outbox_oldest_timestamp_seconds"][0][1]
    assert now - 120 < oldest <= now + 1
    assert found["sms_poll_interval_seconds"] == [({}, 0.3)]
    assert now - 30 < found["sms_poll_last_completed_timestamp_seconds"][0][1] <= now + 1
