"""Builds the bot's services from settings, in one place, for `serve`, `check` and `demo`.

Settings, a state store and a notifier in; the JPush client, the metrics, the poll cycle
(Monitor), the outbox drain (Deliverer) and the loops that run them (Worker) out. The clocks
and the JPush client can be injected, so tests drive time and talk to a simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC

from aiohttp import web

from bot.chat_notify import make_chat_destinations
from bot.clock import Clock, Monotonic, utcnow
from bot.delivery import DEFAULT_BACKOFF_CAP, Deliverer
from bot.digest import DigestPolicy, parse_time_of_day
from bot.errors import ConfigError, StoreError
from bot.forecast import min_span_for
from bot.incident_actions import IncidentActions
from bot.jpush import JPushClient
from bot.metrics import Metrics
from bot.monitor import Monitor
from bot.notify import EventSender, Notifier, make_routing
from bot.quota import Scope
from bot.settings import Settings
from bot.store.base import StateStore
from bot.worker import Worker

log = logging.getLogger("bot")

SHUTDOWN_TIMEOUT = 5.0  # in-flight requests; well inside the platform's 30 s kill


@dataclass(frozen=True, slots=True)
class Services:
    """One bot's services, built together so they share one clock, store and metrics."""

    settings: Settings
    scopes: list[Scope]
    store: StateStore
    notifier: Notifier
    client: JPushClient
    metrics: Metrics
    monitor: Monitor
    deliverer: Deliverer  # the primary destination's
    worker: Worker
    clock: Clock
    monotonic: Monotonic
    actions: IncidentActions  # acknowledge and snooze, from any transport
    # The other destinations (team chats) by name, each drained by its own loop.
    destinations: Mapping[str, Notifier | EventSender] = field(default_factory=dict)

    async def close(self) -> None:
        await self.actions.close()
        await self.client.close()
        await self.notifier.close()
        for other in self.destinations.values():
            await other.close()
        with contextlib.suppress(StoreError):
            await self.store.close()


def new_holder(prefix: str = "") -> str:
    """A process's identity for the poller lease and message claims: unique per process, so
    overlapping processes (replicas, cron runs of `check --notify`) never share a claim."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def digest_policy(settings: Settings) -> DigestPolicy | None:
    """DIGEST_AT in TZ (UTC when unset); posted where alerts go (SLACK_CHANNEL)."""
    if settings.digest_at is None:
        return None
    return DigestPolicy(
        at=parse_time_of_day(settings.digest_at),
        tz=settings.timezone or UTC,
        channel=settings.slack_channel or "",
    )


def build_services(
    settings: Settings,
    *,
    store: StateStore,
    notifier: Notifier,
    clock: Clock = utcnow,
    monotonic: Monotonic = time.monotonic,
    client: JPushClient | None = None,
    holder: str | None = None,
    destinations: Mapping[str, Notifier | EventSender] | None = None,
) -> Services:
    """Everything `serve` runs and `check --notify` runs once. Opens nothing: the worker
    opens the store (retrying), and `check` opens it itself.

    `notifier` serves the primary destination (Slack or the terminal); `destinations` are
    the others by name (team chats), each with its own queue and delivery loop."""
    if destinations is None:
        destinations = {d.name: d for d in make_chat_destinations(settings, settings.locale())}
    destinations = dict(destinations)
    scopes = settings.require_scopes()
    holder = holder or new_holder()
    metrics = Metrics()
    client = client or JPushClient(
        settings.jpush_base_url,
        timeout=settings.jpush_timeout,
        concurrency=settings.jpush_concurrency,
        clock=clock,
        monotonic=monotonic,
        # No answer may silence a JPush key for longer than one poll interval.
        max_pause=settings.poll_interval.total_seconds(),
    )
    monitor = Monitor(
        scopes,
        settings.policy(),
        client,
        store,
        clock=clock,
        monotonic=monotonic,
        metrics=metrics,
        forecast_min_span=min_span_for(settings.poll_interval),
        routing=replace(make_routing(settings), destinations=tuple(destinations)),
        digest=digest_policy(settings),
        locale=settings.locale(),
    )

    # A retry should not wait longer than a poll interval: the next cycle's news waits too.
    backoff_cap = min(settings.poll_interval, DEFAULT_BACKOFF_CAP)
    deliverer = Deliverer(
        store,
        notifier,
        holder=holder,
        clock=clock,
        metrics=metrics,
        backoff_cap=backoff_cap,
        locale=settings.locale(),
    )
    others = [
        Deliverer(
            store,
            other,
            holder=holder,
            clock=clock,
            metrics=metrics,
            backoff_cap=backoff_cap,
            destination=name,
            locale=settings.locale(),
        )
        for name, other in destinations.items()
    ]
    worker = Worker(
        monitor,
        deliverer,
        store,
        others=others,
        poll_interval=settings.poll_interval,
        holder=holder,
        clock=clock,
        monotonic=monotonic,
        metrics=metrics,
    )
    metrics.observe_config(scopes, settings.poll_interval, worker.started_at)
    return Services(
        settings=settings,
        scopes=scopes,
        store=store,
        notifier=notifier,
        client=client,
        metrics=metrics,
        monitor=monitor,
        deliverer=deliverer,
        worker=worker,
        clock=clock,
        monotonic=monotonic,
        destinations=destinations,
        actions=IncidentActions(
            store,
            clock=clock,
            known_scopes={s.name for s in scopes},
            wake_delivery=worker.wake_delivery,
        ),
    )


def tune_gc() -> None:
    """Freeze what start-up made, once everything is built: it lives as long as the process.

    A 2,000-app poll cycle allocates enough to run the collector's full pass about once a
    cycle, and each pass walked every object made at import and start-up (~120,000). Frozen,
    they are skipped: bench/cycle_cost.py's 2,000-app cycle went from 292 to 244 ms. A higher
    collection threshold saved a little more CPU but let garbage pile up between passes
    (bench/soak.py: +1.7 MB of RSS per 1,000 cycles instead of +0.4), so it is left alone.
    """
    gc.collect()
    gc.freeze()


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_started: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Bind, run until SIGTERM/SIGINT, then stop accepting, finish in-flight work, exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Before anything runs: the full collection blocks the loop (tens of ms).
    tune_gc()
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        # A name that does not resolve, or an address this machine does not have, is HOST's
        # fault; a port in use or not allowed is PORT's.
        host_fault = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
        variable = "HOST" if host_fault else "PORT"
        reason = exc.strerror or type(exc).__name__
        # The values stay out of the line, as for every other setting.
        what = "this address" if host_fault else "this port"
        raise ConfigError(f"{variable}: cannot listen on {what}: {reason}") from None
    bound = port
    if runner.addresses:
        bound = int(runner.addresses[0][1])
    log.info("listening on http://%s:%s", host, bound)
    if on_started is not None:
        await on_started(bound)
    await stop.wait()
    log.info("shutting down: finishing in-flight work")
    await runner.cleanup()
    log.info("stopped")
    return 0
