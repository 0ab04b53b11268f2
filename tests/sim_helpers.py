"""Shared helpers for tests that talk to the JPush simulator over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind
from bot.simulator import JPushSimulator, SimScope

ACCOUNT_KEY = "acct-key"
ACCOUNT_SECRET = "acct-secret-do-not-log"
ACCOUNT_BALANCES: dict[str, int | None] = {
    "balance": 9,
    "voice": 702,
    "industry": 121981,
    "market": 11683,
}


def app_key(name: str) -> str:
    return f"{name}-key"


def app_secret(name: str) -> str:
    return f"{name}-master-secret-do-not-log"


def account_scope(*, secret: str = ACCOUNT_SECRET) -> Scope:
    return Scope(name="account", kind=ScopeKind.ACCOUNT, key=ACCOUNT_KEY, secret=SecretStr(secret))


def app_scope(name: str, *, secret: str | None = None) -> Scope:
    return Scope(
        name=name,
        kind=ScopeKind.APP,
        key=app_key(name),
        secret=SecretStr(secret if secret is not None else app_secret(name)),
    )


def app_balances(index: int) -> dict[str, int | None]:
    """Distinct, non-zero values per app so a mix-up between scopes cannot go unnoticed."""
    return {"balance": 1 + index, "voice": 22 + index, "industry": 44 + index, "market": 14 + index}


def add_account(sim: JPushSimulator, **extra: Any) -> None:
    sim.add_scope(
        SimScope(
            key=ACCOUNT_KEY,
            secret=ACCOUNT_SECRET,
            kind="account",
            balances=dict(ACCOUNT_BALANCES),
            **extra,
        )
    )


def add_app(sim: JPushSimulator, name: str, balances: dict[str, int | None], **extra: Any) -> None:
    sim.add_scope(
        SimScope(
            key=app_key(name),
            secret=app_secret(name),
            kind="app",
            name=name,
            balances=dict(balances),
            **extra,
        )
    )


def typed(balances: dict[str, int | None]) -> dict[QuotaType, int | None]:
    return {t: balances[t.value] for t in QUOTA_TYPES}


@asynccontextmanager
async def serving(sim: JPushSimulator) -> AsyncIterator[str]:
    url = await sim.start()
    try:
        yield url
    finally:
        await sim.stop()


class FakeTime:
    """A sleep that returns at once but records each delay and advances a fake monotonic clock.

    `on_sleep` runs before each recorded sleep returns (to change the world between attempts).
    """

    def __init__(self, on_sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            await self.on_sleep(seconds)

    def monotonic(self) -> float:
        return self.now


class ManualClock:
    """A monotonic clock the test moves by hand (for the simulator's drain and rate limit)."""

    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, interval: float = 0.005
) -> None:
    """Wait for a condition with a deadline (never a fixed sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(interval)
