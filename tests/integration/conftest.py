"""Fixtures for integration tests: real servers on free loopback ports, cleaned up after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.redis import RedisAdapter
from gateway.config.settings import RedisSettings
from tests.integration.redis_server import RedisServer, redis_available

RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start any number of redis-servers: ``redis_factory(appendonly=True, password=...)``.

    Each one gets its own directory under the test's ``tmp_path``; all are killed at teardown.
    """
    if not redis_available():
        pytest.skip("redis-server is not installed")
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(redis_factory: RedisFactory) -> RedisServer:
    """A fresh, empty redis-server without persistence."""
    return redis_factory()


@pytest.fixture
def redis_server_aof(redis_factory: RedisFactory) -> RedisServer:
    """A fresh redis-server with ``appendonly yes`` and ``appendfsync always`` (survives kill -9)."""
    return redis_factory(appendonly=True)


AdapterFactory = Callable[..., Awaitable[RedisAdapter]]


@pytest.fixture
async def redis_adapter_factory() -> AsyncIterator[AdapterFactory]:
    """Started RedisAdapters: ``await make(server_or_url, engine_id="e1", **settings)``.

    Every adapter made here is closed at teardown (close is idempotent, so tests may close
    their own earlier, e.g. to restart one with the same engine id).
    """
    adapters: list[RedisAdapter] = []

    async def make(
        target: RedisServer | str, *, engine_id: str = "engine-1", start: bool = True, **settings: Any
    ) -> RedisAdapter:
        url = target.url if isinstance(target, RedisServer) else target
        adapter = RedisAdapter(RedisSettings(redis_url=url, **settings), engine_id=engine_id)
        adapters.append(adapter)
        if start:
            await adapter.start()
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()
