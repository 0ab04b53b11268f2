from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer, redis_server_binary

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
