"""Prometheus metrics, one registry per app so tests and replicas never share globals.

Names follow Prometheus' conventions: base units (seconds, Unix-time `_timestamp_seconds`),
`_total` only on counters (prometheus-client appends it), and labels drawn from bounded sets:
the configured scopes, the four quota types, the two alert levels, a fixed list of outcomes.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from bot.quota import QUOTA_TYPES, Scope
from bot.views import ScopeView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A `<counter>_created` series per counter and histogram doubles what every scrape stores and
# nothing here reads it. The switch is process-wide in prometheus-client; the bot owns its process.
disable_created_metrics()  # type: ignore[no-untyped-call]

SLASH_OUTCOMES = ("answered", "rejected", "too_large", "ssl_check")


def authorized(token: str | None, authorization: str | None) -> bool:
    """Whether an Authorization header carries the metrics token (always, when none is set)."""
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: how much of a guess matched must not show in the response time.
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        scope_type = ["scope", "type"]
        self.balance = Gauge(
            "sms_balance",
            "Messages left in the JPush SMS quota at the last successful read",
            scope_type,
            registry=r,
        )
        self.seconds_to_empty = Gauge(
            "sms_balance_seconds_to_empty",
            "Projected seconds until the quota runs out at the fitted burn rate"
            " (present only while a forecast exists)",
            scope_type,
            registry=r,
        )
        self.burn_rate = Gauge(
            "sms_balance_burn_rate_per_second",
            "Fitted consumption of the quota in messages per second",
            scope_type,
            registry=r,
        )
        self.burn_ratio = Gauge(
            "sms_balance_burn_ratio",
            "Burn over the last hour divided by the median hourly burn of the last 7 days"
            " (present only with at least 24 hours of history and a usual burn above zero)",
            scope_type,
            registry=r,
        )
        self.threshold = Gauge(
            "sms_balance_threshold",
            "Alert threshold of the quota: the bot alerts at this level when the balance is"
            " strictly below it (absent when the level is switched off)",
            [*scope_type, "level"],
            registry=r,
        )
        self.scope_up = Gauge(
            "sms_scope_up",
            "1 if the last read of the scope succeeded, else 0",
            ["scope"],
            registry=r,
        )
        self.last_read = Gauge(
            "sms_scope_last_read_timestamp_seconds",
            "When the scope was last read, successfully or not (Unix time)",
            ["scope"],
            registry=r,
        )
        self.poll_interval = Gauge(
            "sms_poll_interval_seconds", "Configured time between poll cycles", registry=r
        )
        self.last_cycle = Gauge(
            "sms_poll_last_completed_timestamp_seconds",
            "When a poll cycle last completed, by any replica (Unix time; the process start"
            " until the first one)",
            registry=r,
        )
        self.polls = Counter("sms_polls", "Completed poll cycles", registry=r)
        self.fetch_errors = Counter(
            "sms_fetch_errors", "Scope reads that failed", ["scope"], registry=r
        )
        self.alerts_queued = Counter(
            "sms_alerts_queued", "Alert messages written to the outbox", registry=r
        )
        self.alerts_sent = Counter("sms_alerts_sent", "Alert messages Slack accepted", registry=r)
        self.delivery_failures = Counter(
            "sms_alert_delivery_failures", "Failed alert delivery attempts", registry=r
        )
        self.outbox_size = Gauge(
            "sms_alert_outbox_messages", "Alert messages waiting for delivery", registry=r
        )
        self.outbox_oldest = Gauge(
            "sms_alert_outbox_oldest_timestamp_seconds",
            "When the oldest alert message still waiting for delivery was queued (Unix time;"
            " 0 while the outbox is empty)",
            registry=r,
        )
        self.commands = Counter(
            "sms_slash_commands",
            "Slash command requests by outcome (answered, rejected, too_large, ssl_check)",
            ["outcome"],
            registry=r,
        )
        # Bound once: the slash handler is the hot path. Every outcome is exported from the
        # start, so a rate over it is 0 rather than absent.
        self.commands_answered = self.commands.labels("answered")
        self.commands_rejected = self.commands.labels("rejected")
        self.commands_too_large = self.commands.labels("too_large")
        self.commands_ssl_check = self.commands.labels("ssl_check")
        self.delivery_reports = Counter(
            "sms_delivery_reports",
            "JPush delivery reports by scope and status (JPush's code; other, reply, unknown_type)",
            ["scope", "status"],
            registry=r,
        )
        self.callbacks_refused = Counter(
            "sms_jpush_callbacks_refused",
            "JPush callback requests refused, by HTTP status",
            ["status"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "sms_poll_duration_seconds",
            "Time of one complete poll cycle",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )

    def observe_config(
        self, scopes: Iterable[Scope], poll_interval: timedelta, started_at: datetime
    ) -> None:
        """The settings the alerting rules compare against, so no rule hard-codes a number."""
        self.poll_interval.set(poll_interval.total_seconds())
        self.last_cycle.set(started_at.timestamp())
        self.threshold.clear()
        for scope in scopes:
            # Known label values are exported from the start, so rate() sees 0, not nothing.
            self.fetch_errors.labels(scope.name)
            for quota_type, threshold in scope.thresholds.items():
                for level, value in (
                    ("warning", threshold.warning),
                    ("critical", threshold.critical),
                ):
                    if value:
                        self.threshold.labels(scope.name, quota_type.value, level).set(value)

    def observe_cycle(self, completed_at: datetime | None) -> None:
        if completed_at is not None:
            self.last_cycle.set(completed_at.timestamp())

    def observe_outbox(self, queued: int, oldest_at: datetime | None) -> None:
        self.outbox_size.set(queued)
        self.outbox_oldest.set(oldest_at.timestamp() if queued and oldest_at else 0)

    def observe_views(self, views: Sequence[ScopeView], now: datetime) -> None:
        """Set the per-scope gauges from a snapshot (the shared state, so every replica agrees)."""
        self.balance.clear()
        self.seconds_to_empty.clear()
        self.burn_rate.clear()
        self.burn_ratio.clear()
        for view in views:
            reading = view.reading
            if reading is None:
                continue
            self.last_read.labels(view.scope).set(reading.read_at.timestamp())
            self.scope_up.labels(view.scope).set(0 if reading.error else 1)
            if reading.balances is not None:
                for quota_type in QUOTA_TYPES:
                    value = reading.balances.get(quota_type)
                    if value is not None:
                        self.balance.labels(view.scope, quota_type.value).set(value)
            for quota_type, forecast in view.forecasts.items():
                labels = (view.scope, quota_type.value)
                self.seconds_to_empty.labels(*labels).set(forecast.seconds_to_empty(now))
                self.burn_rate.labels(*labels).set(forecast.per_hour / 3600)
            for quota_type, burn in view.burns.items():
                self.burn_ratio.labels(view.scope, quota_type.value).set(burn.ratio)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def callback_refused(self, status: int) -> None:
        self.callbacks_refused.labels(str(status)).inc()
