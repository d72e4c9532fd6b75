"""Fixtures for the StateAdapter contract suite (``test_state_adapter_contract.py``).

Every test of the suite takes the ``case`` fixture and runs once per adapter named in
``ADAPTER_FIXTURES``. To put a new backend under the contract, add **one fixture** here that
yields a started adapter wrapped in an :class:`AdapterCase` (and closes it afterwards), then
append the fixture's name to ``ADAPTER_FIXTURES``::

    @pytest.fixture
    async def redis_adapter() -> AsyncIterator[AdapterCase]:
        adapter = RedisAdapter(RedisSettings(redis_url=...), engine_id=ENGINE_ID)
        await adapter.start()
        yield AdapterCase(adapter, ordered=False)   # Redis does not keep key order
        await adapter.close()

    ADAPTER_FIXTURES = [..., "redis_adapter"]

Capabilities are flags on :class:`AdapterCase`; a test that depends on one checks the flag
(e.g. ``ordered``: ``list``/``items`` return keys in insertion order) and asserts the weaker
promise otherwise, so every adapter runs every test. The fixture may ``pytest.skip`` when its
backend is not reachable.

The adapter's ``engine_id`` must be :data:`ENGINE_ID`: the suite checks that events without an
explicit origin carry it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from adapters.kv.store import KvAdapter
from adapters.redis import RedisAdapter
from gateway.config.settings import KvSettings, RedisSettings
from gateway.state.adapter import StateAdapter
from tests.helpers.federation import InProcessUpstream, Peer, bridge_settings, fast_backoff, write_key
from tests.integration.redis_server import RedisServer, redis_available

ENGINE_ID = "contract-engine"


@dataclass
class AdapterCase:
    """A started adapter under test and what it promises beyond the base contract."""

    adapter: StateAdapter
    ordered: bool = True  # list/items follow key insertion order (overwrite keeps the position)


@pytest.fixture
async def kv_in_memory() -> AsyncIterator[AdapterCase]:
    adapter = KvAdapter(KvSettings(store_method="in_memory"), engine_id=ENGINE_ID)
    await adapter.start()
    yield AdapterCase(adapter)
    await adapter.close()


@pytest.fixture
async def kv_file_based(tmp_path: Path) -> AsyncIterator[AdapterCase]:
    # fsync=always: the strictest path (group commit, changes published after the fsync).
    settings = KvSettings(store_method="file_based", file_path=str(tmp_path / "kv"), fsync="always")
    adapter = KvAdapter(settings, engine_id=ENGINE_ID)
    await adapter.start()
    yield AdapterCase(adapter)
    await adapter.close()


@pytest.fixture
async def redis_adapter(tmp_path: Path) -> AsyncIterator[AdapterCase]:
    # A private redis-server on a free port (tests/integration/redis_server.py).
    if not redis_available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        adapter = RedisAdapter(RedisSettings(redis_url=server.url), engine_id=ENGINE_ID)
        await adapter.start()
        yield AdapterCase(adapter, ordered=False)  # Redis does not keep key order
        await adapter.close()
    finally:
        server.kill()


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[AdapterCase]:
    # A Bridge to a real upstream: an in-memory kv store served by the link listener on a
    # free loopback port in this event loop (tests/helpers/federation.py). Every operation and
    # every event crosses a real authenticated socket.
    edge_key = write_key(tmp_path / "keys", "edge")
    upstream = InProcessUpstream(tmp_path / "central", [Peer("edge", edge_key)])
    await upstream.start()
    settings = bridge_settings(edge_key, [("central", [upstream.endpoint()], upstream.public, ["*"])])
    adapter = BridgeAdapter(settings, engine_id=ENGINE_ID, backoff=fast_backoff)
    try:
        await adapter.start()
        yield AdapterCase(adapter)
        await adapter.close()
    finally:
        await upstream.stop()


@pytest.fixture
async def bridge_to_redis(tmp_path: Path) -> AsyncIterator[AdapterCase]:
    # A Bridge to an upstream whose store is Redis (a private redis-server on a free port).
    if not redis_available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    edge_key = write_key(tmp_path / "keys", "edge")
    central = RedisAdapter(RedisSettings(redis_url=server.url), engine_id="central")
    upstream = InProcessUpstream(tmp_path / "central", [Peer("edge", edge_key)], adapter=central)
    try:
        await upstream.start()
        settings = bridge_settings(edge_key, [("central", [upstream.endpoint()], upstream.public, ["*"])])
        adapter = BridgeAdapter(settings, engine_id=ENGINE_ID, backoff=fast_backoff)
        await adapter.start()
        yield AdapterCase(adapter, ordered=False)  # Redis does not keep key order
        await adapter.close()
    finally:
        await upstream.stop()
        server.kill()


@pytest.fixture
async def bridge_chain(tmp_path: Path) -> AsyncIterator[AdapterCase]:
    # edge -> region -> central: the region is a gateway whose own store is a Bridge.
    edge_key = write_key(tmp_path / "keys", "edge")
    region_key = write_key(tmp_path / "keys", "region")
    central = InProcessUpstream(tmp_path / "central", [Peer("region", region_key)])
    await central.start()
    region_settings = bridge_settings(region_key, [("central", [central.endpoint()], central.public, ["*"])])
    region_bridge = BridgeAdapter(region_settings, engine_id="region", backoff=fast_backoff)
    region = InProcessUpstream(
        tmp_path / "region", [Peer("edge", edge_key)], adapter=region_bridge, name="region"
    )
    try:
        await region.start()
        settings = bridge_settings(edge_key, [("region", [region.endpoint()], region.public, ["*"])])
        adapter = BridgeAdapter(settings, engine_id=ENGINE_ID, backoff=fast_backoff)
        await adapter.start()
        yield AdapterCase(adapter)
        await adapter.close()
    finally:
        await region.stop()
        await central.stop()


ADAPTER_FIXTURES = [
    "kv_in_memory",
    "kv_file_based",
    "redis_adapter",
    "bridge",
    "bridge_to_redis",
    "bridge_chain",
]


@pytest.fixture(params=ADAPTER_FIXTURES)
def case(request: pytest.FixtureRequest) -> AdapterCase:
    """The adapter under test, one run per entry of ADAPTER_FIXTURES."""
    value = request.getfixturevalue(request.param)
    assert isinstance(value, AdapterCase)
    return value
