"""The read cache with real gateway processes and iii-sdk workers.

Under a write load on the central, a reader on the edge never gets a value older than one the
edge's own state trigger was already given; with the edge's link cut, reads fail instead of
answering from the cache, and after the link is back they see what was written meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.federation import Peer, write_key
from tests.helpers.gateway_procs import FedGateway, bridge_adapter
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.sdk_helpers import bind, call, connect_worker, expect_error, roundtrip, shutdown

pytestmark = pytest.mark.slow


class Highest:
    """The highest ``n`` the edge's trigger was given (handlers run on SDK threads)."""

    def __init__(self) -> None:
        self.n = -1
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, data: Any, metadata: Any = None) -> Any:
        value = data.get("new_value") if isinstance(data, dict) else None
        with self._lock:
            self.calls += 1
            if isinstance(value, dict):
                self.n = max(self.n, int(value["n"]))
        return {"ok": True}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[FedGateway, FedGateway, TcpProxy]]:
    edge_key = write_key(tmp_path / "keys", "edge")
    central = FedGateway(tmp_path / "central", "central", peers=[Peer("edge", edge_key)])
    await central.start_ready()
    assert central.link_port is not None
    proxy = TcpProxy(central.link_port)
    await proxy.start()
    cache = {"enabled": True, "max_entries": 1000}
    edge = FedGateway(
        tmp_path / "edge",
        "edge",
        key=edge_key,
        adapter=bridge_adapter(edge_key, [("central", [proxy.port], central.public)], cache=cache),
    )
    try:
        await edge.start_ready()
        yield central, edge, proxy
    finally:
        await edge.stop()
        await proxy.stop()
        await central.stop()


async def test_edge_reads_are_never_older_than_what_its_trigger_got(
    site: tuple[FedGateway, FedGateway, TcpProxy],
) -> None:
    central, edge, proxy = site
    seen = Highest()
    trigger = await connect_worker(edge.worker_url, "edge-trigger")
    trigger.register_function("edgew::on_change", seen)
    bind(trigger, "state", "edgew::on_change", {"scope": "s"})
    await roundtrip(trigger)
    writer = await connect_worker(central.worker_url, "central-writer")
    reader = await connect_worker(edge.worker_url, "edge-reader")
    try:
        await call(writer, "state::set", {"scope": "s", "key": "k", "value": {"n": 0}})
        done = asyncio.Event()
        violations: list[tuple[int, int]] = []
        reads = 0

        async def write_load() -> None:
            n = 1
            while reads < 200 or seen.calls < 20:  # until reads and events have interleaved
                await call(writer, "state::set", {"scope": "s", "key": "k", "value": {"n": n}})
                n += 1
            done.set()

        async def read_load() -> None:
            nonlocal reads
            while not done.is_set():
                floor = seen.n  # already given to the edge's trigger
                value = await call(reader, "state::get", {"scope": "s", "key": "k"})
                reads += 1
                if value is None or value["n"] < floor:
                    violations.append((-1 if value is None else value["n"], floor))

        await asyncio.gather(write_load(), read_load())
        assert violations == []
        assert await edge.metric("iii_gateway_cache_requests_total", result="hit") > 0
        assert await edge.metric("iii_gateway_cache_entries") >= 1

        # Cut the edge off; the central keeps taking writes. No read may come from the cache.
        proxy.refuse = True
        proxy.cut()
        bypass = await edge.metric("iii_gateway_cache_requests_total", result="bypass")
        async with asyncio.timeout(20):
            while await edge.metric("iii_gateway_bridge_upstreams_connected") != 0:
                await asyncio.sleep(0.02)
        error = await expect_error(reader, "state::get", {"scope": "s", "key": "k"})
        assert error.code == "UPSTREAM_UNAVAILABLE"
        assert await edge.metric("iii_gateway_cache_requests_total", result="bypass") > bypass
        assert await edge.metric("iii_gateway_cache_entries") == 0
        await call(writer, "state::set", {"scope": "s", "key": "k", "value": {"n": -7}})
        proxy.refuse = False
        await edge.ready()  # relinked: the cache starts empty, the read sees the write made meanwhile
        assert await call(reader, "state::get", {"scope": "s", "key": "k"}) == {"n": -7}
    finally:
        await shutdown(trigger, writer, reader)
