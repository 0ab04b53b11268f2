"""Prometheus metrics, one registry per app so tests and replicas never share globals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.quota import QUOTA_TYPES
from bot.views import ScopeView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.balance = Gauge(
            "sms_balance", "Latest JPush SMS quota value", ["scope", "type"], registry=r
        )
        self.seconds_to_empty = Gauge(
            "sms_balance_seconds_to_empty",
            "Projected seconds until the quota runs out at the current burn rate",
            ["scope", "type"],
            registry=r,
        )
        self.burn_per_hour = Gauge(
            "sms_balance_burn_per_hour",
            "Fitted consumption per hour",
            ["scope", "type"],
            registry=r,
        )
        self.scope_up = Gauge(
            "sms_scope_up", "1 if the last read of the scope succeeded", ["scope"], registry=r
        )
        self.last_read = Gauge(
            "sms_scope_last_read_timestamp_seconds",
            "When the scope was last read (Unix time)",
            ["scope"],
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
            "sms_alert_delivery_failures", "Failed delivery attempts", registry=r
        )
        self.commands = Counter(
            "sms_slash_commands",
            "Slash command requests by outcome (answered, rejected, too_large, ssl_check)",
            ["outcome"],
            registry=r,
        )
        # Bound once: the slash handler is the hot path.
        self.commands_answered = self.commands.labels("answered")
        self.commands_rejected = self.commands.labels("rejected")
        self.commands_too_large = self.commands.labels("too_large")
        self.commands_ssl_check = self.commands.labels("ssl_check")
        self.outbox_size = Gauge("sms_alerts_outbox", "Messages waiting for delivery", registry=r)
        self.poll_duration = Histogram(
            "sms_poll_duration_seconds",
            "Time of one complete poll cycle",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )

    def observe_views(self, views: Sequence[ScopeView], now: datetime) -> None:
        """Set the per-scope gauges from a snapshot (the shared state, so every replica agrees)."""
        self.balance.clear()
        self.seconds_to_empty.clear()
        self.burn_per_hour.clear()
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
                self.burn_per_hour.labels(*labels).set(forecast.per_hour)

    def render(self) -> bytes:
        return generate_latest(self.registry)
