"""`sms-balance-bot serve | check | simulate | demo` — the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from bot.errors import ConfigError, StoreError
from bot.jpush import JPushClient
from bot.logs import setup_logging
from bot.notify import ConsoleNotifier, make_notifier
from bot.settings import Settings, load_settings
from bot.store.factory import store_from_settings

log = logging.getLogger("bot")

EXIT_CONFIG = 2
EXIT_UNKNOWN = 3  # Nagios UNKNOWN, used by `check` for configuration errors
SHUTDOWN_TIMEOUT = 5.0  # in-flight requests; well inside the platform's 30 s kill


def utcnow() -> datetime:
    return datetime.now(UTC)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this file (default: .env in the working directory, if present)",
    )
    parser = argparse.ArgumentParser(
        prog="sms-balance-bot",
        description="Watch JPush SMS quotas and warn a Slack channel before they run out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "serve", parents=[common], help="run the poll loop, alerting and the web server on $PORT"
    )
    check = sub.add_parser(
        "check",
        parents=[common],
        help="poll every scope once; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--notify",
        action="store_true",
        help="also evaluate and deliver alerts like one serve cycle",
    )
    simulate = sub.add_parser("simulate", parents=[common], help="run the JPush simulator alone")
    simulate.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    simulate.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    sub.add_parser(
        "demo", parents=[common], help="run the whole bot against the built-in simulator"
    )
    return parser


def _env_file(path: str | None) -> str | None:
    if path is not None:
        return path
    return ".env" if Path(".env").is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env_file = _env_file(args.env_file)
    try:
        if args.command == "serve":
            return _serve(load_settings(env_file))
        if args.command == "check":
            return asyncio.run(_check(load_settings(env_file), args.json, args.notify))
        if args.command == "simulate":
            return _simulate(args.host, args.port)
        if args.command == "demo":
            from bot.demo import run_demo

            return run_demo(env_file)
    except ConfigError as exc:
        print(f"sms-balance-bot: configuration error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN if args.command == "check" else EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return EXIT_CONFIG


# serve ---------------------------------------------------------------------------------------


def warn_console_delivery(settings: Settings) -> None:
    if settings.slack_bot_token is None and settings.slack_webhook_url is None:
        log.warning(
            "no Slack delivery configured (SLACK_BOT_TOKEN + SLACK_CHANNEL, or"
            " SLACK_WEBHOOK_URL): alerts are written to standard output"
        )


def _serve(settings: Settings) -> int:
    from bot.web import create_app

    setup_logging(settings.log_level, settings.log_format)
    settings.require_scopes()
    warn_console_delivery(settings)
    store = store_from_settings(settings)
    app = create_app(settings, store=store, notifier=make_notifier(settings))
    return asyncio.run(serve_app(app, settings.host, settings.port))


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
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"PORT: cannot listen on {host}:{port}: {exc.strerror}") from None
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


# check ---------------------------------------------------------------------------------------


async def _check(settings: Settings, as_json: bool, notify: bool) -> int:
    from bot.delivery import Deliverer
    from bot.forecast import min_span_for
    from bot.monitor import Monitor
    from bot.render.check import check_json, exit_status, render_table
    from bot.snapshot import ScopeView

    # stdout carries the table or the JSON; everything else goes to stderr.
    setup_logging(
        "WARNING" if settings.log_level == "INFO" else settings.log_level, settings.log_format
    )
    scopes = settings.require_scopes()
    store = store_from_settings(settings)
    store_ok = True
    try:
        await store.open()
    except StoreError as exc:
        store_ok = False
        if notify:
            print(f"sms-balance-bot: state store unavailable: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        log.warning("state store unavailable, no forecasts: %s", exc)
    try:
        async with JPushClient(
            settings.jpush_base_url,
            timeout=settings.jpush_timeout,
            concurrency=settings.jpush_concurrency,
            clock=utcnow,
        ) as client:
            monitor = Monitor(
                scopes,
                settings.policy(),
                client,
                store,
                clock=utcnow,
                forecast_min_span=min_span_for(settings.poll_interval),
            )
            if notify:
                result = await monitor.cycle()
                readings, forecasts = result.readings, result.forecasts
                notifier = make_notifier(settings, console=sys.stderr if as_json else sys.stdout)
                if isinstance(notifier, ConsoleNotifier):
                    warn_console_delivery(settings)
                # Unique per run: overlapping cron runs must not share a claim on a message.
                holder = f"check-{uuid.uuid4().hex[:12]}"
                deliverer = Deliverer(store, notifier, holder=holder, clock=utcnow)
                await deliverer.deliver_pending()
                if deliverer.status.queued:
                    log.warning(
                        "%d alert message(s) still queued (%s); the next run retries",
                        deliverer.status.queued,
                        deliverer.status.problem,
                    )
                await notifier.close()
            else:
                readings = await client.fetch_all(scopes)
                forecasts = {}
                if store_ok:
                    try:
                        forecasts = await monitor.forecasts_for(readings, utcnow())
                        await store.save_readings(readings)
                    except StoreError as exc:
                        log.warning("state store unavailable, no forecasts: %s", exc)
    finally:
        if store_ok:
            await store.close()
    by_scope = {r.scope: r for r in readings}
    views = [
        ScopeView(
            scope=s.name,
            kind=s.kind,
            reading=by_scope.get(s.name),
            thresholds=s.thresholds,
            forecasts=forecasts.get(s.name, {}),
        )
        for s in scopes
    ]
    now = utcnow()
    if as_json:
        print(json.dumps(check_json(views), ensure_ascii=False))
    else:
        print(render_table(views, now))
    return exit_status(views)


# simulate ------------------------------------------------------------------------------------


def _simulate(host: str, port: int) -> int:
    from bot.simulator import run_simulator

    setup_logging("INFO", "text")

    async def run() -> None:
        task = asyncio.ensure_future(run_simulator(host, port))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return 0
