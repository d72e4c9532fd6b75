"""The Bridge's offline outbox over real links: queued while the upstream is unreachable,
replayed once and in order when it is back, also after a crash in the middle of a replay.

A real upstream (kv store behind the link listener, in this event loop) watched by a change
log; the Bridge dials it through a proxy that refuses connections while "the central is down".
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bridge import BridgeAdapter
from adapters.bridge.outbox import Outbox, OutboxFull
from gateway.config.settings import BridgeOutboxSettings, Endpoint
from gateway.errors import AdapterUnavailable, ConfigError
from gateway.link.auth import parse_public_key
from gateway.link.client import connect
from gateway.link.requests import SetArgs
from gateway.state.adapter import ChangeKind
from gateway.state.ops import parse_ops
from tests.helpers.federation import (
    ChangeLog,
    InProcessUpstream,
    Peer,
    bridge_settings,
    eventually,
    fast_backoff,
    write_key,
)
from tests.helpers.tcp_proxy import TcpProxy

EDGE = "edge-1"


class Site:
    """The central (with a change log), a proxy in front of it, and edges with one outbox dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.key = write_key(tmp_path / "keys", "edge")
        self.up = InProcessUpstream(tmp_path / "central", [Peer("edge", self.key)])
        self.outbox_dir = tmp_path / "outbox"
        self.central_log = ChangeLog()
        self.proxy: TcpProxy | None = None
        self.bridges: list[BridgeAdapter] = []

    async def start(self) -> TcpProxy:
        await self.up.start()
        assert self.up.adapter is not None
        self.up.adapter.subscribe(self.central_log)
        self.proxy = TcpProxy(self.up.port)
        await self.proxy.start()
        return self.proxy

    async def edge(self, *, max_entries: int = 1000) -> tuple[BridgeAdapter, ChangeLog]:
        assert self.proxy is not None
        via = Endpoint("tcp", "127.0.0.1", self.proxy.port)
        settings = dataclasses.replace(
            bridge_settings(self.key, [("central", [via], self.up.public, ["*"])], timeout_ms=2000),
            outbox=BridgeOutboxSettings(enabled=True, path=str(self.outbox_dir), max_entries=max_entries),
        )
        bridge = BridgeAdapter(settings, engine_id=EDGE, backoff=fast_backoff)
        log = ChangeLog()
        bridge.subscribe(log)
        self.bridges.append(bridge)
        await bridge.start()
        return bridge, log

    async def close(self) -> None:
        for bridge in self.bridges:
            await bridge.close()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.up.stop()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path)
    yield s
    await s.close()


async def test_offline_writes_are_queued_then_replayed_once_in_order(site: Site) -> None:
    proxy = await site.start()
    proxy.refuse = True  # the central is unreachable from the start
    bridge, edge_log = await site.edge()
    assert not bridge.ready()
    queued = [
        await bridge.set("orders", "a", {"n": 1}),
        await bridge.update("orders", "a", parse_ops([{"type": "increment", "path": "n", "by": 2}])),
        await bridge.set("orders", "b", "x"),
        await bridge.delete("orders", "b"),
        await bridge.set("orders", "c", [1, 2]),
    ]
    assert all(r.queued and r.revision == 0 for r in queued)
    stats = bridge.statistics()
    assert stats["outbox_entries"] == 5 and stats["outbox_bytes"] > 0
    assert stats["outbox_oldest_age_seconds"] >= 0
    with pytest.raises(AdapterUnavailable):
        await bridge.get("orders", "a")  # reads never come from the queue
    assert edge_log.changes == []  # no local event before the upstream has it
    proxy.refuse = False
    await site.central_log.wait_count(5)
    central = site.up.adapter
    assert central is not None
    assert [(c.key, c.kind) for c in site.central_log.changes] == [
        ("a", ChangeKind.CREATED),
        ("a", ChangeKind.UPDATED),
        ("b", ChangeKind.CREATED),
        ("b", ChangeKind.DELETED),
        ("c", ChangeKind.CREATED),
    ]
    assert all(c.origin == EDGE for c in site.central_log.changes)
    a = await central.get("orders", "a")
    assert a is not None and a.value == {"n": 3}
    assert await central.get("orders", "b") is None
    await edge_log.wait_count(5)  # the edge's triggers see them once, relayed back
    await eventually(lambda: bridge.statistics()["outbox_entries"] == 0, what="the queue to drain")
    assert bridge.statistics()["outbox_replayed_total"] == 5
    barrier = await bridge.set("orders", "z", 0)  # linked and empty: straight through
    assert not barrier.queued and barrier.revision > 0
    await site.central_log.wait_count(6)
    assert len(site.central_log.changes) == 6


async def test_a_replay_cut_by_a_crash_applies_nothing_twice(site: Site) -> None:
    proxy = await site.start()
    proxy.refuse = True
    first, _ = await site.edge()
    for i in range(6):
        await first.set("s", f"k{i}", i)
    await first.close()  # the edge goes away with six writes queued
    # What a crash mid-replay leaves: the first three reached the central, no ack was written.
    box = Outbox(str(site.outbox_dir), max_entries=100, max_bytes=1 << 20, engine_id=EDGE)
    box.open()
    pending = list(box.pending)
    box.close()
    assert [w.key for w in pending] == [f"k{i}" for i in range(6)]
    client = await connect(
        "127.0.0.1",
        site.up.port,
        private_key=site.key.key,
        client_id=EDGE,
        server_key=parse_public_key(site.up.public),
    )
    for write in pending[:3]:
        await client.request(SetArgs("s", write.key, write.payload[0], EDGE, idem=write.idem), 5.0)
    await client.aclose("GOING_AWAY", "crashed")
    await site.central_log.wait_count(3)
    proxy.refuse = False
    second, _ = await site.edge()  # restarted: the replay starts over from the first write
    await eventually(lambda: second.statistics()["outbox_entries"] == 0, what="the queue to drain")
    marker = await second.set("s", "done", True)
    await site.central_log.wait_for(lambda cs: cs[-1].revision == marker.revision)
    keys = [c.key for c in site.central_log.changes]
    assert keys == [f"k{i}" for i in range(6)] + ["done"]  # each exactly once, in order
    assert site.up.service is not None
    assert site.up.service.server.handler.idempotency.repeats_total == 3  # type: ignore[attr-defined]


async def test_a_full_outbox_refuses_with_a_clear_code(site: Site) -> None:
    proxy = await site.start()
    proxy.refuse = True
    bridge, _ = await site.edge(max_entries=2)
    await bridge.set("s", "a", 1)
    await bridge.delete("s", "a")
    with pytest.raises(OutboxFull) as info:
        await bridge.set("s", "b", 2)
    assert info.value.code == "OUTBOX_FULL"
    assert bridge.statistics()["outbox_entries"] == 2


async def test_an_outbox_path_that_cannot_be_opened_is_a_config_error(site: Site) -> None:
    await site.start()
    site.outbox_dir.write_text("not a directory")
    with pytest.raises(ConfigError) as info:
        await site.edge()
    assert "outbox" in info.value.message


async def test_the_upstream_remembers_idempotency_keys_across_a_restart(tmp_path: Path) -> None:
    key = write_key(tmp_path / "keys", "edge")
    up = InProcessUpstream(
        tmp_path / "central", [Peer("edge", key)], server_options={"state_dir": str(tmp_path / "data")}
    )
    await up.start()

    async def send(value: int) -> Any:
        client = await connect(
            "127.0.0.1", up.port, private_key=key.key, client_id=EDGE, server_key=parse_public_key(up.public)
        )
        try:
            return await client.request(SetArgs("s", "k", value, EDGE, idem=f"{EDGE}:once"), 5.0)
        finally:
            await client.aclose()

    try:
        first = await send(1)
        await up.stop(close_adapter=False)  # the link service restarts over the same store
        await up.start(start_adapter=False)
        assert await send(2) == first  # answered from the file, not applied again
        assert up.adapter is not None
        entry = await up.adapter.get("s", "k")
        assert entry is not None and entry.value == 1
    finally:
        await up.stop()
