"""The relay checker: every state trigger on an edge sees every upstream revision exactly once.

A central gateway (durable kv, ``fsync: always``) and two edges. A real ``iii-sdk`` worker on
edge A has a ``state`` trigger on the scope every writer writes to, and records the revision
of each event it gets. Two writers keep a steady load: a Bridge in this process writing to the
central, and an ``iii-sdk`` worker writing through edge B. Meanwhile the checker

- cuts edge A's link twice (a proxy resets it),
- kills the central with SIGKILL and restarts it on the same ports and data,
- restarts edge B (the writers' edge) with SIGTERM.

Every write is to a fresh key of one scope, and nothing else writes to the central, so its
revisions are contiguous and each one is an event the trigger must see. At the end (after a
barrier write) the revisions the trigger saw must be exactly ``first .. barrier``: no gap, no
duplicate, whatever was in flight when the link died (a resumed watch, or after the central
restart a catch-up from a snapshot, see ``adapters/bridge/upstream.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.bridge import BridgeAdapter
from gateway.config.settings import Endpoint
from gateway.errors import GatewayError
from tests.helpers.federation import Peer, bridge_settings, eventually, fast_backoff, write_key
from tests.helpers.gateway_procs import FedGateway, bridge_adapter, kv_adapter
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.sdk_helpers import bind, call, connect_worker, roundtrip, shutdown

pytestmark = pytest.mark.slow

SCOPE = "chk"


class Revisions:
    """A trigger handler (runs in SDK threads) recording revisions, awaitable from the test."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def handler(self, data: Any, metadata: Any = None) -> Any:
        with self._lock:
            self.seen.append(int(data["revision"]))
        self._loop.call_soon_threadsafe(self._changed.set)
        return {"ok": True}

    def snapshot(self) -> list[int]:
        with self._lock:
            return list(self.seen)

    async def wait_for(self, predicate: Callable[[list[int]], bool], timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.snapshot()):
                self._changed.clear()
                await self._changed.wait()

    async def progress(self, more: int) -> None:
        """Until ``more`` further events arrived (the system is moving again)."""
        target = len(self.snapshot()) + more
        await self.wait_for(lambda seen: len(seen) >= target)


@pytest.fixture
async def procs() -> AsyncIterator[list[FedGateway]]:
    started: list[FedGateway] = []
    yield started
    for gw in reversed(started):
        await gw.stop()


async def test_no_gap_no_duplicate_through_cuts_and_restarts(tmp_path: Path, procs: list[FedGateway]) -> None:
    keys = tmp_path / "keys"
    a_key, b_key, w_key = write_key(keys, "edge-a"), write_key(keys, "edge-b"), write_key(keys, "writer")
    central = FedGateway(
        tmp_path / "central",
        "central",
        adapter=kv_adapter(tmp_path / "central", fsync="always"),
        peers=[Peer("edge-a", a_key), Peer("edge-b", b_key), Peer("writer", w_key)],
    )
    procs.append(central)
    await central.start_ready()
    assert central.link_port is not None
    proxy = TcpProxy(central.link_port)
    await proxy.start()
    edge_a = FedGateway(
        tmp_path / "edge-a",
        "edge-a",
        key=a_key,
        adapter=bridge_adapter(a_key, [("central", [proxy.port], central.public)]),
    )
    edge_b = FedGateway(
        tmp_path / "edge-b",
        "edge-b",
        key=b_key,
        adapter=bridge_adapter(b_key, [("central", [central.link_port], central.public)]),
    )
    for edge in (edge_a, edge_b):
        procs.append(edge)
        await edge.start_ready()

    revisions = Revisions()
    watcher = await connect_worker(edge_a.worker_url, "checker")
    watcher.register_function("checker::on_change", revisions.handler)
    bind(watcher, "state", "checker::on_change", {"scope": SCOPE})
    await roundtrip(watcher)
    via_b = await connect_worker(edge_b.worker_url, "writer-b")
    writer = BridgeAdapter(
        bridge_settings(
            w_key, [("central", [Endpoint("tcp", "127.0.0.1", central.link_port)], central.public, ["*"])]
        ),
        engine_id="writer",
        backoff=fast_backoff,
    )
    await writer.start()

    try:
        stop = asyncio.Event()
        acknowledged: list[int] = []

        async def write_direct() -> None:
            i = 0
            while not stop.is_set():
                try:
                    acknowledged.append((await writer.set(SCOPE, f"direct-{i}", i)).revision)
                except GatewayError:  # the central is down or the link is cut: wait for it
                    with contextlib.suppress(AssertionError):
                        await eventually(lambda: writer.ready() or stop.is_set(), timeout=30)
                i += 1

        async def write_through_edge_b() -> None:
            i = 0
            while not stop.is_set():
                with contextlib.suppress(Exception):  # edge B restarts under us
                    await call(via_b, "state::set", {"scope": SCOPE, "key": f"via-b-{i}", "value": i})
                i += 1

        load = [asyncio.create_task(write_direct()), asyncio.create_task(write_through_edge_b())]
        try:
            await revisions.progress(50)
            for _ in range(2):
                assert proxy.cut() >= 1  # edge A's link dies mid-stream
                await revisions.progress(50)
            central.kill()  # a crash, with writes in flight
            central.start()
            await central.ready()
            await revisions.progress(50)
            await edge_b.stop()  # the writers' edge restarts
            edge_b.start()
            await edge_b.ready()
            await revisions.progress(50)
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        await eventually(writer.ready, timeout=30)
        barrier = (await writer.set(SCOPE, "barrier", True)).revision
        await revisions.wait_for(lambda seen: barrier in seen)

        seen = revisions.snapshot()
        first = min(seen)
        assert len(seen) == len(set(seen)), "a revision was delivered twice"
        missing = sorted(set(range(first, barrier + 1)) - set(seen))
        assert not missing, f"revisions never delivered: {missing[:20]}"
        assert max(seen) == barrier
        assert {r for r in acknowledged if r >= first} <= set(seen)
        assert len(seen) > 250
        # edge A really lost its link each time (the second cut may overlap the central's crash)
        assert await edge_a.metric("iii_gateway_link_connects_total", upstream="central", result="ok") >= 3

    finally:
        await writer.close()
        await shutdown(watcher, via_b)
        await proxy.stop()
