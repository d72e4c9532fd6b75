"""The Bridge's read cache over real links: hits only while the relay is live, never stale.

A real upstream (kv store behind the link listener, in this event loop) and a BridgeAdapter
dialling it over loopback TCP through a proxy that can cut the link.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from gateway.config.settings import BridgeCacheSettings, Endpoint
from gateway.errors import AdapterUnavailable
from gateway.metrics import Metrics
from gateway.state.adapter import Change, ChangeKind
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


class Edge:
    """One upstream behind a proxy and one caching Bridge; torn down by the fixture."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.key = write_key(tmp_path / "keys", "edge")
        self.up = InProcessUpstream(tmp_path / "central", [Peer("edge", self.key)])
        self.proxy: TcpProxy | None = None
        self.bridge: BridgeAdapter | None = None
        self.metrics = Metrics()
        self.log = ChangeLog()

    async def start(self, max_entries: int = 1000) -> BridgeAdapter:
        await self.up.start()
        self.proxy = TcpProxy(self.up.port)
        await self.proxy.start()
        via = Endpoint("tcp", "127.0.0.1", self.proxy.port)
        settings = dataclasses.replace(
            bridge_settings(self.key, [("central", [via], self.up.public, ["*"])], timeout_ms=3000),
            cache=BridgeCacheSettings(enabled=True, max_entries=max_entries),
        )
        self.bridge = BridgeAdapter(settings, engine_id="edge-1", metrics=self.metrics, backoff=fast_backoff)
        self.bridge.subscribe(self.log)
        await self.bridge.start()
        return self.bridge

    def count(self, result: str) -> float:
        name = "iii_gateway_cache_requests_total"
        return self.metrics.registry.get_sample_value(name, {"result": result}) or 0.0

    async def close(self) -> None:
        if self.bridge is not None:
            await self.bridge.close()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.up.stop()


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    e = Edge(tmp_path)
    yield e
    await e.close()


async def test_hits_follow_relayed_changes_and_counters_move(edge: Edge) -> None:
    bridge = await edge.start()
    central = edge.up.adapter
    assert central is not None
    first = await central.set("s", "a", 1)
    await edge.log.wait_count(1)
    assert (await bridge.get("s", "a")) is not None  # installed by the event: a hit
    assert edge.count("hit") == 1
    assert await bridge.get("s", "missing") is None
    assert await bridge.get("s", "missing") is None  # "missing" is cached too
    assert (edge.count("miss"), edge.count("hit")) == (1, 2)
    second = await central.set("s", "a", 2)  # written elsewhere: the event updates the entry
    await edge.log.wait_for(lambda cs: cs[-1].revision == second.revision)
    entry = await bridge.get("s", "a")
    assert entry is not None and (entry.value, entry.revision) == (2, second.revision)
    assert second.revision > first.revision
    await central.set("s", "missing", "now")
    await edge.log.wait_count(3)
    now = await bridge.get("s", "missing")
    assert now is not None and now.value == "now"
    assert bridge.statistics()["cache_entries"] == 2


async def test_a_scope_is_listed_once_then_kept_by_events(edge: Edge) -> None:
    bridge = await edge.start()
    central = edge.up.adapter
    assert central is not None
    for i in range(3):
        await central.set("s", f"k{i}", i)
    await edge.log.wait_count(3)
    assert await bridge.list("s") == [0, 1, 2]
    misses = edge.count("miss")
    await central.delete("s", "k1")
    last = await central.set("s", "k3", 3)
    await edge.log.wait_for(lambda cs: cs[-1].revision == last.revision)
    assert await bridge.list("s") == [0, 2, 3] == await central.list("s")
    assert [k for k, _ in await bridge.items("s")] == ["k0", "k2", "k3"]
    assert edge.count("miss") == misses  # served from the complete scope
    mine = await bridge.set("s", "k4", 4)  # our own write is visible at once (read-your-writes)
    entry = await bridge.get("s", "k4")
    assert entry is not None and entry.revision == mine.revision


async def test_lru_eviction_is_bounded_and_counted(edge: Edge) -> None:
    bridge = await edge.start(max_entries=4)
    central = edge.up.adapter
    assert central is not None
    for i in range(10):
        await central.set("s", f"k{i}", i)
    await edge.log.wait_count(10)
    stats = bridge.statistics()
    assert stats["cache_entries"] == 4 and stats["cache_evictions_total"] == 6
    entry = await bridge.get("s", "k0")  # evicted: read upstream again
    assert entry is not None and entry.value == 0
    assert edge.count("miss") == 1
    assert len(await bridge.list("s")) == 10  # larger than the cache: never a complete scope
    assert len(await bridge.list("s")) == 10
    assert edge.count("miss") == 3


async def test_a_reader_never_gets_older_than_what_its_triggers_got(edge: Edge) -> None:
    bridge = await edge.start(max_entries=3)  # small: misses, evictions and races all happen
    central = edge.up.adapter
    assert central is not None
    given: dict[str, int] = {}

    def trigger(change: Change) -> None:
        given[change.key] = change.revision

    bridge.subscribe(trigger)
    keys = [f"k{i}" for i in range(5)]
    done = asyncio.Event()

    violations: list[tuple[str, int, int]] = []
    reads = 0

    async def writer() -> None:
        n = 0
        while reads < 300:  # writes go on until the readers have raced with them enough
            await central.set("s", keys[n % len(keys)], n)
            if n % 7 == 0:
                await central.delete("s", keys[(n + 3) % len(keys)])
            n += 1
            await asyncio.sleep(0)
        done.set()

    async def reader(offset: int) -> None:
        nonlocal reads
        n = offset
        while not done.is_set():
            key = keys[n % len(keys)]
            n += 1
            entry = await bridge.get("s", key)
            reads += 1
            floor = given.get(key, 0)
            if entry is not None and entry.revision < floor:
                violations.append((key, entry.revision, floor))
            if entry is None and floor and _last_kind(edge.log, key) is not ChangeKind.DELETED:
                violations.append((key, 0, floor))

    await asyncio.gather(writer(), reader(0), reader(2), reader(3))
    assert violations == []
    assert reads >= 300 and edge.count("hit") > 0 and edge.count("miss") > 0


def _last_kind(log: ChangeLog, key: str) -> ChangeKind | None:
    for change in reversed(log.changes):
        if change.key == key:
            return change.kind
    return None


async def test_after_a_cut_reads_go_upstream_never_to_stale_entries(edge: Edge) -> None:
    bridge = await edge.start()
    central = edge.up.adapter
    assert central is not None and edge.proxy is not None
    await central.set("s", "a", "old")
    await edge.log.wait_count(1)
    assert (await bridge.get("s", "a")) is not None and edge.count("hit") == 1
    edge.proxy.refuse = True
    edge.proxy.cut()
    await eventually(lambda: not bridge.ready(), what="the bridge to notice the cut")
    with pytest.raises(AdapterUnavailable):
        await bridge.get("s", "a")
    assert edge.count("bypass") == 1
    assert bridge.statistics()["cache_entries"] == 0  # flushed when the watch stopped
    newer = await central.set("s", "a", "new")  # missed while cut off
    edge.proxy.refuse = False
    await edge.log.wait_for(lambda cs: cs[-1].revision == newer.revision)
    await eventually(lambda: edge.up.adapter is not None and bridge.upstreams[0].relay_live, what="live")
    entry = await bridge.get("s", "a")
    assert entry is not None and (entry.value, entry.revision) == ("new", newer.revision)
