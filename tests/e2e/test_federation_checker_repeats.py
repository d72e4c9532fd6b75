"""The relay checker with repeated writes to the same keys, link cuts and a central crash.

A central gateway (durable kv, ``fsync: always``) and an edge whose link goes through a proxy.
A real ``iii-sdk`` worker on the edge has a ``state`` trigger on the scope and records the
revision of every event it gets. A Bridge in this process writes to the central, cycling over
five keys (so each key is written many times, by ``set`` and by ``update``). Meanwhile:

- the edge's link is cut twice under load;
- the edge is held off (the proxy refuses it) while more writes land, then the central is
  killed with SIGKILL and restarted on the same ports and data, and only then is the edge let
  back: it must resume from a revision older than the restarted central's in-memory history,
  so the changes come from the central's log, not from a snapshot catch-up (which would show
  one event per key and leave a gap).

At the end the revisions the trigger saw must be exactly ``first .. barrier``: no gap, no
duplicate, and the edge never resynced. (The trigger delivers one key's events in order and
different keys concurrently, so the check waits for every revision, not just the barrier's.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from gateway.config.settings import Endpoint
from gateway.errors import GatewayError
from gateway.state.ops import increment_op
from tests.e2e.test_federation_checker import Revisions
from tests.helpers.federation import Peer, bridge_settings, eventually, fast_backoff, write_key
from tests.helpers.gateway_procs import FedGateway, bridge_adapter, kv_adapter
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.sdk_helpers import bind, connect_worker, roundtrip, shutdown

pytestmark = pytest.mark.slow

SCOPE = "rep"
KEYS = 5


@pytest.fixture
async def procs() -> AsyncIterator[list[FedGateway]]:
    started: list[FedGateway] = []
    yield started
    for gw in reversed(started):
        await gw.stop()


async def test_repeated_keys_through_cuts_and_a_central_crash(
    tmp_path: Path, procs: list[FedGateway]
) -> None:
    keys = tmp_path / "keys"
    edge_key, w_key = write_key(keys, "edge"), write_key(keys, "writer")
    central = FedGateway(
        tmp_path / "central",
        "central",
        adapter=kv_adapter(tmp_path / "central", fsync="always"),
        peers=[Peer("edge", edge_key), Peer("writer", w_key)],
    )
    procs.append(central)
    await central.start_ready()
    assert central.link_port is not None
    proxy = TcpProxy(central.link_port)
    await proxy.start()
    edge = FedGateway(
        tmp_path / "edge",
        "edge",
        key=edge_key,
        adapter=bridge_adapter(edge_key, [("central", [proxy.port], central.public)]),
    )
    procs.append(edge)
    await edge.start_ready()

    revisions = Revisions()
    watcher = await connect_worker(edge.worker_url, "checker")
    watcher.register_function("checker::on_change", revisions.handler)
    bind(watcher, "state", "checker::on_change", {"scope": SCOPE})
    await roundtrip(watcher)
    endpoint = Endpoint("tcp", "127.0.0.1", central.link_port)
    writer = BridgeAdapter(
        bridge_settings(w_key, [("central", [endpoint], central.public, ["*"])]),
        engine_id="writer",
        backoff=fast_backoff,
    )
    await writer.start()

    try:
        stop = asyncio.Event()
        acknowledged: list[int] = []

        async def write_repeatedly() -> None:
            i = 0
            while not stop.is_set():
                key = f"k{i % KEYS}"
                try:
                    if i % 2:
                        result = await writer.update(SCOPE, key, [increment_op("n", 1)])
                    else:
                        result = await writer.set(SCOPE, key, {"n": i})
                    acknowledged.append(result.revision)
                except GatewayError:  # the central is down: wait for it
                    with contextlib.suppress(AssertionError):
                        await eventually(lambda: writer.ready() or stop.is_set(), timeout=30)
                i += 1

        async def written(more: int) -> None:
            target = len(acknowledged) + more
            await eventually(lambda: len(acknowledged) >= target, timeout=30, what=f"{more} more writes")

        load = asyncio.create_task(write_repeatedly())
        try:
            await revisions.progress(40)
            for _ in range(2):
                assert proxy.cut() >= 1  # the edge's link dies mid-stream
                await revisions.progress(40)
            proxy.refuse = True  # hold the edge off while the central moves on
            proxy.cut()
            await written(60)
            central.kill()  # a crash, with writes in flight
            central.start()
            await central.ready()
            await written(20)
            proxy.refuse = False  # the edge resumes from before the central's restart
            await revisions.progress(40)
        finally:
            stop.set()
            await asyncio.gather(load, return_exceptions=True)
        await eventually(writer.ready, timeout=30)
        barrier = (await writer.set(SCOPE, "barrier", True)).revision
        # Events of one key are delivered in order, keys concurrently: the barrier's own key
        # may overtake the others, so wait for every revision (a gap ends this by timeout).
        first = min(revisions.snapshot())
        with contextlib.suppress(TimeoutError):
            await revisions.wait_for(lambda seen: set(range(first, barrier + 1)) <= set(seen))

        seen = revisions.snapshot()
        assert len(seen) == len(set(seen)), "a revision was delivered twice"
        missing = sorted(set(range(first, barrier + 1)) - set(seen))
        assert not missing, (
            f"{len(missing)} revisions never delivered: {missing[:20]}; edge: {edge.log_tail()}"
        )
        assert {r for r in acknowledged if r >= first} <= set(seen)
        assert len(seen) > 200
        resyncs = await edge.metric("iii_gateway_resyncs_total", upstream="central", reason="history_gone")
        assert resyncs == 0  # the restarted central served the resume from its log
    finally:
        await writer.close()
        await shutdown(watcher)
        await proxy.stop()
