"""STATE_URL -> a StateStore (not yet opened)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bot.clock import Clock
from bot.errors import ConfigError
from bot.store.base import DEFAULT_RETENTION, StateStore
from bot.store.redis import RedisStore
from bot.store.sqlite import SqliteStore, sqlite_path_from_url
from bot.store.urls import redact_url

if TYPE_CHECKING:
    from bot.settings import Settings


def make_store(
    url: str,
    *,
    retention: timedelta = DEFAULT_RETENTION,
    prefix: str = "sms-balance-bot",
    clock: Clock | None = None,
    tls_verify: bool = True,
) -> StateStore:
    """`sqlite:///rel/path`, `sqlite:////abs/path`, `redis://...`, `rediss://...`; `memory://`
    is SQLite in memory (one process, nothing kept).

    Raises ConfigError naming STATE_URL (never with the URL's password) when the URL is
    unusable; connecting is left to `open()`.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url), retention=retention, clock=clock)
    if scheme == "memory":
        return SqliteStore(":memory:", retention=retention, clock=clock)
    if scheme in ("redis", "rediss"):
        return RedisStore(
            url, prefix=prefix, retention=retention, clock=clock, tls_verify=tls_verify
        )
    raise ConfigError(
        f"STATE_URL: unsupported {redact_url(url)!r}; expected sqlite:///PATH, redis:// or "
        "rediss://"
    )


def _sqlite_path(url: str) -> str:
    try:
        path = sqlite_path_from_url(url)
    except ValueError:
        raise ConfigError(
            "STATE_URL: expected sqlite:///PATH (sqlite:////PATH if absolute)"
        ) from None
    if path != ":memory:":
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"STATE_URL: directory {parent} does not exist")
    return path


def store_from_settings(settings: Settings) -> StateStore:
    return make_store(
        settings.effective_state_url,
        retention=settings.history_retention,
        tls_verify=settings.redis_tls_verify,
    )
