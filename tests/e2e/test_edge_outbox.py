"""The offline outbox with real gateway processes: writes made at the edge while the central
is down reach it exactly once and in order, also when the edge is SIGKILLed mid-replay.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge.outbox import Outbox
from tests.helpers.federation import Peer, write_key
from tests.helpers.gateway_procs import FedGateway, bridge_adapter
from tests.integration.sdk_helpers import call, connect_worker, expect_error, shutdown

pytestmark = pytest.mark.slow

WRITES = 300  # queued while the central is down: one increment and one set each


@pytest.fixture
async def procs() -> AsyncIterator[list[FedGateway]]:
    started: list[FedGateway] = []
    yield started
    for gw in reversed(started):
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.send_signal(signal.SIGCONT)
        await gw.stop()


async def _central_value(central: FedGateway, key: str) -> object:
    worker = await connect_worker(central.worker_url, "central-reader")
    try:
        return await call(worker, "state::get", {"scope": "orders", "key": key})
    finally:
        await shutdown(worker)


async def test_a_replay_cut_by_sigkill_continues_after_restart_and_applies_nothing_twice(
    tmp_path: Path, procs: list[FedGateway]
) -> None:
    edge_key = write_key(tmp_path / "keys", "edge")
    central = FedGateway(
        tmp_path / "central",
        "central",
        peers=[Peer("edge", edge_key)],
    )
    procs.append(central)
    await central.start_ready()
    assert central.link_port is not None
    outbox_dir = tmp_path / "outbox"
    outbox = {"enabled": True, "path": str(outbox_dir), "max_entries": 2 * WRITES + 1}
    edge = FedGateway(
        tmp_path / "edge",
        "edge",
        key=edge_key,
        adapter=bridge_adapter(edge_key, [("central", [central.link_port], central.public)], outbox=outbox),
    )
    procs.append(edge)
    await edge.start_ready()
    worker = await connect_worker(edge.worker_url, "edge-writer")
    try:
        await call(worker, "state::set", {"scope": "orders", "key": "stats", "value": {"count": 0}})
        await central.stop()  # the central goes down; the edge keeps taking writes
        for i in range(WRITES):
            bump = {
                "scope": "orders",
                "key": "stats",
                "ops": [{"type": "increment", "path": "count", "by": 1}],
            }
            queued = await call(worker, "state::update", bump)
            assert queued["queued"] is True and queued["revision"] == 0
            await call(worker, "state::set", {"scope": "orders", "key": "last", "value": i})
        error = await expect_error(worker, "state::get", {"scope": "orders", "key": "stats"})
        assert error.code == "UPSTREAM_UNAVAILABLE"  # offline reads never come from the queue
        assert await edge.metric("iii_gateway_outbox_entries") == 2 * WRITES
    finally:
        await shutdown(worker)

    central.start()
    await central.ready()
    # Freeze the central as soon as the replay has begun, then crash the edge mid-replay.
    reader = await connect_worker(central.worker_url, "central-watch")
    try:
        async with asyncio.timeout(30):
            while (await call(reader, "state::get", {"scope": "orders", "key": "stats"}))["count"] == 0:
                pass
    finally:
        await shutdown(reader)
    assert central.proc is not None
    central.proc.send_signal(signal.SIGSTOP)
    edge.kill()
    left = Outbox(str(outbox_dir), max_entries=2 * WRITES + 1, max_bytes=1 << 30, engine_id="edge")
    left.open()
    remaining = len(left)
    left.close()
    assert 0 < remaining < 2 * WRITES  # the crash really was in the middle of the replay
    central.proc.send_signal(signal.SIGCONT)

    edge.start()  # restarted: the replay goes on from the first write not acknowledged
    await edge.ready()

    async def drained() -> bool:
        return await edge.metric("iii_gateway_outbox_entries") == 0

    async with asyncio.timeout(30):
        while not await drained():
            await asyncio.sleep(0.05)
    assert await _central_value(central, "stats") == {"count": WRITES}  # exactly once each
    assert await _central_value(central, "last") == WRITES - 1  # in order: the last write wins
