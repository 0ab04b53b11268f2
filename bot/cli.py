"""`sms-balance-bot serve | check | simulate | demo` — the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from bot.app import build_services, new_holder, serve_app
from bot.clock import Clock, utcnow
from bot.errors import ConfigError, StoreError
from bot.forecast import Burns, Forecasts
from bot.logs import setup_logging
from bot.notify import ConsoleNotifier, make_notifier, warn_console_delivery
from bot.quota import ScopeReading
from bot.settings import Settings, load_settings
from bot.store.base import StateStore
from bot.store.factory import store_from_settings
from bot.views import unread_views

log = logging.getLogger("bot")

EXIT_CONFIG = 2
EXIT_UNKNOWN = 3  # Nagios UNKNOWN, used by `check` for configuration errors


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
    commands: dict[str, Callable[[], int]] = {
        "serve": lambda: _serve(load_settings(env_file)),
        "check": lambda: asyncio.run(_check(load_settings(env_file), args.json, args.notify)),
        "simulate": lambda: _simulate(args.host, args.port),
        "demo": lambda: _demo(env_file),
    }
    try:
        return commands[args.command]()
    except ConfigError as exc:
        print(f"sms-balance-bot: configuration error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN if args.command == "check" else EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


# serve ---------------------------------------------------------------------------------------


def _serve(settings: Settings) -> int:
    from bot.web import create_app

    setup_logging(settings.log_level, settings.log_format, settings.secret_values())
    settings.require_scopes()
    warn_console_delivery(settings)
    store = store_from_settings(settings)
    app = create_app(build_services(settings, store=store, notifier=make_notifier(settings)))
    return asyncio.run(serve_app(app, settings.host, settings.port))


# check ---------------------------------------------------------------------------------------


async def _check(settings: Settings, as_json: bool, notify: bool) -> int:
    from bot.render.check import check_json, exit_status, render_table

    # stdout carries the table or the JSON; everything else goes to stderr.
    setup_logging(
        "WARNING" if settings.log_level == "INFO" else settings.log_level,
        settings.log_format,
        settings.secret_values(),
    )
    scopes = settings.require_scopes()
    store = store_from_settings(settings)
    if notify:
        console = sys.stderr if as_json else sys.stdout
        try:
            readings, forecasts, burns = await check_and_notify(settings, store, console=console)
        except StoreUnavailable as exc:
            print(f"sms-balance-bot: state store unavailable: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
    else:
        readings, forecasts, burns = await check_once(settings, store)
    views = unread_views(scopes, {r.scope: r for r in readings}, forecasts, burns=burns)
    now = utcnow()
    if as_json:
        print(json.dumps(check_json(views), ensure_ascii=False))
    else:
        print(render_table(views, now, settings.locale()))
    return exit_status(views)


class StoreUnavailable(Exception):
    """The state store could not be opened, so alert state cannot be kept."""


async def check_once(
    settings: Settings, store: StateStore, *, clock: Clock = utcnow
) -> tuple[list[ScopeReading], Forecasts, Burns]:
    """Read every scope once and forecast from the stored history, if the store answers.

    The readings join the history (so cron-driven checks build forecasts), but no alert is
    evaluated: without the store the numbers are still worth printing.
    """
    try:
        await store.open()
        store_ok = True
    except StoreError as exc:
        log.warning("state store unavailable, no forecasts: %s", exc)
        store_ok = False
    # Nothing is delivered: the notifier is only there to complete the services.
    services = build_services(
        settings, store=store, notifier=ConsoleNotifier(sys.stderr), clock=clock
    )
    try:
        readings = await services.client.fetch_all(services.scopes)
        if not store_ok:
            return readings, {}, {}
        try:
            outlook = await services.monitor.outlook(readings, clock())
            await store.save_readings(readings)
        except StoreError as exc:
            log.warning("state store unavailable, no forecasts: %s", exc)
            return readings, {}, {}
        return readings, outlook.forecasts, outlook.burns
    finally:
        await services.close()


async def check_and_notify(
    settings: Settings, store: StateStore, *, console: TextIO, clock: Clock = utcnow
) -> tuple[list[ScopeReading], Forecasts, Burns]:
    """One `serve` cycle: read, evaluate, commit, and deliver what is queued (this cycle's
    message and any a previous run left), with the same services `serve` uses."""
    try:
        await store.open()
    except StoreError as exc:
        raise StoreUnavailable(str(exc)) from exc
    notifier = make_notifier(settings, console=console)
    if isinstance(notifier, ConsoleNotifier):
        warn_console_delivery(settings)
    services = build_services(
        settings, store=store, notifier=notifier, clock=clock, holder=new_holder("check-")
    )
    try:
        result = await services.monitor.cycle()
        # Every destination in turn; one that fails does not keep the others from trying.
        for deliverer in services.worker.deliverers:
            await deliverer.deliver_pending()
            status = deliverer.status
            if status.queued:
                log.warning(
                    "%d alert message(s) for %s still queued (%s); the next run retries",
                    status.queued,
                    deliverer.destination,
                    status.problem or "rate limit",
                )
    finally:
        await services.close()
    return result.readings, result.forecasts, result.burns


# demo ----------------------------------------------------------------------------------------


def _demo(env_file: str | None) -> int:
    from bot.demo import run_demo

    return run_demo(env_file)


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
