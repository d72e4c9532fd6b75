"""A region (a Bridge served over the link) started before its central keeps the relay whole.

The region's history has no epoch until its Bridge links to the central. It must neither admit
watchers (they would be told the region's empty epoch) nor reset on the first relayed change
(every edge would then resync and skip the writes in between): the edge's triggers see each of
its writes once, in order.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from gateway.config.settings import Endpoint
from tests.helpers.federation import (
    ChangeLog,
    InProcessUpstream,
    Peer,
    bridge_settings,
    eventually,
    fast_backoff,
    write_key,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Chain:
    """edge -> region -> central, each started when the test says."""

    def __init__(self, tmp: Path) -> None:
        self.central_key = write_key(tmp / "keys", "central")
        self.region_key = write_key(tmp / "keys", "region")
        self.edge_key = write_key(tmp / "keys", "edge")
        self.central_port = free_port()
        self.central = InProcessUpstream(
            tmp / "central", [Peer("region", self.region_key)], name="central", key=self.central_key
        )
        central_ep = Endpoint("tcp", "127.0.0.1", self.central_port)
        self.region_bridge = BridgeAdapter(
            bridge_settings(self.region_key, [("central", [central_ep], self.central_key.public, ["*"])]),
            engine_id="region",
            backoff=fast_backoff,
        )
        self.region = InProcessUpstream(
            tmp / "region", [Peer("edge", self.edge_key)], adapter=self.region_bridge, name="region"
        )
        self.edge: BridgeAdapter | None = None
        self.log = ChangeLog()

    async def start_edge(self) -> BridgeAdapter:
        route = ("region", [self.region.endpoint()], self.region.public, ["*"])
        self.edge = BridgeAdapter(
            bridge_settings(self.edge_key, [route], timeout_ms=1000), engine_id="edge", backoff=fast_backoff
        )
        self.edge.subscribe(self.log)
        await self.edge.start()
        return self.edge

    async def close(self) -> None:
        if self.edge is not None:
            await self.edge.close()
        await self.region.stop()
        await self.central.stop()


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    built = Chain(tmp_path)
    yield built
    await built.close()


async def write_three_and_check(chain: Chain, edge: BridgeAdapter) -> None:
    await eventually(lambda: edge.upstreams[0].relay_live, what="the edge's watch is live")
    written = [(await edge.set("s", f"k{i}", i)).revision for i in range(3)]
    await chain.log.wait_count(3)
    assert [(c.key, c.revision) for c in chain.log.changes] == [(f"k{i}", r) for i, r in enumerate(written)]
    assert chain.region.service is not None
    assert chain.region.service.history.resets_total == 0
    assert edge.upstreams[0].resyncs_total == 0


async def test_region_started_before_central_relays_every_write_of_the_edge(chain: Chain) -> None:
    await chain.region.start()  # its Bridge cannot link yet: no epoch
    assert chain.region.service is not None and not chain.region.service.history.has_epoch()
    await chain.central.start(port=chain.central_port)
    await eventually(lambda: chain.region_bridge.upstreams[0].relay_live, what="the region is linked")
    edge = await chain.start_edge()
    await write_three_and_check(chain, edge)


async def test_edge_watching_a_region_without_epoch_retries_until_it_has_one(chain: Chain) -> None:
    await chain.region.start()
    edge = await chain.start_edge()  # the region refuses its watch for now
    assert not edge.upstreams[0].relay_live
    await chain.central.start(port=chain.central_port)
    await write_three_and_check(chain, edge)
