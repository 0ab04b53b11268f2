from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from botproc import BotProcess
from fake_slack import FakeSlack
from redis_server import RedisServer, redis_server_binary

from bot.simulator import JPushSimulator

# Fakes and processes ------------------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack (Web API, webhook, response_url) on loopback."""
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bots() -> AsyncIterator[list[BotProcess]]:
    """Bot processes a test starts; any still running at the end are killed."""
    started: list[BotProcess] = []
    yield started
    for bot in started:
        await bot.stop_quietly()


@pytest.fixture
async def start_sim() -> AsyncIterator[Callable[[JPushSimulator], Awaitable[JPushSimulator]]]:
    """Starts a JPush simulator on loopback for the test; every one started is stopped after."""
    started: list[JPushSimulator] = []

    async def start(simulator: JPushSimulator) -> JPushSimulator:
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in reversed(started):
        await simulator.stop()


# Redis --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by the session."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database (a test that stopped the server gets it back up)."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url
