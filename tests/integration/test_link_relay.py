"""Event relay through the Bridge over real links: once per revision, resume, resync, slow consumers.

Every test runs a real upstream (a kv store behind the link listener, in this event loop) and a
BridgeAdapter dialling it over loopback TCP, sometimes through a proxy that cuts the link.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bridge import BridgeAdapter
from adapters.kv.store import KvAdapter
from gateway.config.settings import Endpoint, KvSettings
from gateway.errors import GatewayError
from gateway.link.client import connect
from gateway.link.messages import WatchEvent
from gateway.link.requests import GetArgs, SnapshotArgs, WatchArgs
from gateway.metrics import Metrics
from gateway.state.adapter import ChangeKind
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


class Federation:
    """Builds upstreams, proxies and bridges for one test and tears them all down."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.edge_key = write_key(tmp_path / "keys", "edge")
        self.upstreams: list[InProcessUpstream] = []
        self.bridges: list[BridgeAdapter] = []
        self.proxies: list[TcpProxy] = []

    async def upstream(self, name: str = "central", **kwargs: Any) -> InProcessUpstream:
        peers = kwargs.pop("peers", None) or [Peer("edge", self.edge_key)]
        start_adapter = kwargs.pop("start_adapter", True)
        up = InProcessUpstream(self.tmp / name, peers, name=name, **kwargs)
        await up.start(start_adapter=start_adapter)
        self.upstreams.append(up)
        return up

    async def proxy(self, up: InProcessUpstream) -> TcpProxy:
        proxy = TcpProxy(up.port)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    async def bridge(
        self, routes: list[tuple[str, list[Endpoint], str, list[str]]], **kwargs: Any
    ) -> tuple[BridgeAdapter, ChangeLog, Metrics]:
        metrics = Metrics()
        settings = bridge_settings(self.edge_key, routes, **kwargs)
        bridge = BridgeAdapter(settings, engine_id=EDGE, metrics=metrics, backoff=fast_backoff)
        log = ChangeLog()
        bridge.subscribe(log)
        self.bridges.append(bridge)
        await bridge.start()
        return bridge, log, metrics

    async def close(self) -> None:
        for bridge in self.bridges:
            await bridge.close()
        for proxy in self.proxies:
            await proxy.stop()
        for up in self.upstreams:
            await up.stop()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = Federation(tmp_path)
    yield federation
    await federation.close()


def revisions(log: ChangeLog) -> list[int]:
    return [c.revision for c in log.changes]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_every_write_reaches_the_sinks_once_with_its_author(fed: Federation) -> None:
    up = await fed.upstream()
    bridge, log, metrics = await fed.bridge([("central", [up.endpoint()], up.public, ["*"])])
    assert up.adapter is not None
    ours = await bridge.set("s", "a", 1)
    theirs = await up.adapter.set("s", "b", 2)  # written at the upstream by someone else
    mine_again = await bridge.update("s", "a", [])
    deleted = await bridge.delete("s", "b")
    await log.wait_count(4)
    assert revisions(log) == [ours.revision, theirs.revision, mine_again.revision, deleted.revision]
    assert [c.origin for c in log.changes] == [EDGE, "central", EDGE, EDGE]
    assert [c.kind for c in log.changes] == [
        ChangeKind.CREATED,
        ChangeKind.CREATED,
        ChangeKind.UPDATED,
        ChangeKind.DELETED,
    ]
    barrier = await up.adapter.set("s", "z", 0)
    await log.wait_for(lambda changes: changes[-1].revision == barrier.revision)
    assert len(log.changes) == 5  # nothing delivered twice
    assert sample(metrics, "iii_gateway_events_relayed_total", upstream="central") == 5
    assert sample(metrics, "iii_gateway_relay_lag_seconds_count", upstream="central") == 5


async def test_link_cut_resumes_from_the_last_revision_without_gap_or_duplicate(fed: Federation) -> None:
    up = await fed.upstream()
    proxy = await fed.proxy(up)
    via = Endpoint("tcp", "127.0.0.1", proxy.port)
    bridge, log, metrics = await fed.bridge([("central", [via], up.public, ["*"])])
    assert up.adapter is not None
    for i in range(10):
        await up.adapter.set("s", f"k{i}", i)
    await log.wait_count(10)
    proxy.refuse = True
    assert proxy.cut() == 1
    await eventually(lambda: not bridge.ready(), what="the bridge to notice the cut")
    for i in range(10, 30):
        await up.adapter.set("s", f"k{i}", i)  # missed by the edge while it is cut off
    proxy.refuse = False
    await log.wait_count(30)
    last = await up.adapter.set("s", "last", True)
    await log.wait_for(lambda changes: changes[-1].revision == last.revision)
    assert revisions(log) == list(range(1, last.revision + 1))
    assert sample(metrics, "iii_gateway_resyncs_total", upstream="central", reason="history_gone") == 0
    assert bridge.upstreams[0].connects_total == 2


async def test_history_gone_resyncs_with_a_catch_up_at_one_revision(fed: Federation) -> None:
    # the link's ring and the kv store's own history (which the ring falls back to) both hold 5
    store = KvAdapter(KvSettings(store_method="in_memory", history_size=5), engine_id="central")
    up = await fed.upstream(history_size=5, adapter=store)
    proxy = await fed.proxy(up)
    via = Endpoint("tcp", "127.0.0.1", proxy.port)
    bridge, log, metrics = await fed.bridge([("central", [via], up.public, ["*"])])
    a = up.adapter
    assert a is not None
    await a.set("s", "kept", 1)
    await a.set("s", "doomed", 1)
    await log.wait_count(2)
    epoch_before = bridge.info().epoch
    proxy.refuse = True
    proxy.cut()
    await eventually(lambda: not bridge.ready(), what="the bridge to notice the cut")
    for i in range(8):
        await a.set("gap", f"k{i}", i)  # more than the history holds
    await a.set("gap", "k0", "twice")  # a key written twice in the gap: one catch-up event
    await a.delete("s", "doomed")  # a delete in the gap: not visible in a snapshot
    proxy.refuse = False
    await eventually(
        lambda: sample(metrics, "iii_gateway_resyncs_total", upstream="central", reason="history_gone") == 1,
        what="the resync",
    )
    live = await a.set("s", "after", 1)
    await log.wait_for(lambda changes: changes[-1].revision == live.revision)
    catch_up = [c for c in log.changes if c.origin == "resync:central"]
    assert [(c.key, c.new_value) for c in catch_up] == [(f"k{i}", i) for i in range(1, 8)] + [("k0", "twice")]
    assert all(c.kind is ChangeKind.UPDATED and c.old_value is None for c in catch_up)
    seen = revisions(log)
    assert seen == sorted(set(seen))  # in order, none twice
    assert bridge.info().epoch != epoch_before  # downstream chains must resync too


async def test_new_upstream_epoch_resyncs_without_replaying_the_new_store(fed: Federation) -> None:
    up = await fed.upstream()
    bridge, log, metrics = await fed.bridge([("central", [up.endpoint()], up.public, ["*"])])
    assert up.adapter is not None
    await up.adapter.set("s", "old", 1)
    await log.wait_count(1)
    port = up.port
    await up.stop()
    await eventually(lambda: not bridge.ready(), what="the bridge to notice the restart")
    up.adapter = KvAdapter(KvSettings(store_method="in_memory"), engine_id="central")  # a new epoch
    await up.start(port=port)
    await up.adapter.set("s", "before-resync", 1)
    await eventually(
        lambda: sample(metrics, "iii_gateway_resyncs_total", upstream="central", reason="epoch_changed") == 1,
        what="the resync",
    )
    fresh = await bridge.set("s", "new", 2)
    await log.wait_for(lambda changes: changes[-1].key == "new")
    assert [(c.key, c.revision) for c in log.changes] == [("old", 1), ("new", fresh.revision)]
    assert bridge.info().epoch.startswith(up.adapter.info().epoch)


async def test_slow_watcher_is_cut_while_others_keep_receiving(fed: Federation) -> None:
    up = await fed.upstream(server_options={"max_outbound_bytes": 1024 * 1024})
    _, log, _ = await fed.bridge([("central", [up.endpoint()], up.public, ["*"])])
    assert up.key is not None
    server_key = up.key.key.public_key()
    slow = await connect(
        "127.0.0.1", up.port, private_key=fed.edge_key.key, client_id="slow", server_key=server_key
    )

    class Listener:
        events = 0

        def on_event(self, event: WatchEvent) -> None:
            self.events += 1

        def on_backlog_end(self, revision: int, epoch: str) -> None:
            pass

        def on_progress(self, revision: int) -> None:
            pass

    listener = Listener()
    watch = slow.watch(WatchArgs(("*",)), listener)
    await eventually(lambda: up.service is not None and up.service.statistics()["link_watches"] == 2)
    assert slow.transport is not None
    slow.transport.pause_reading()  # a peer that stops reading
    assert up.adapter is not None
    blob = "x" * 32 * 1024
    count = 800  # ~26 MB of events: more than loopback socket buffers hold
    for i in range(count):
        await up.adapter.set("big", str(i), blob)
        await asyncio.sleep(0)  # writes arrive over time: the loop runs between them
    await log.wait_count(count)  # the healthy bridge got everything
    assert up.service is not None
    stats = up.service.statistics()
    assert stats["link_watch_cuts_total"] == 1 and stats["link_watches"] == 1
    slow.transport.resume_reading()
    with pytest.raises(GatewayError) as info:
        await watch.done
    assert info.value.code == "SLOW_CONSUMER"
    assert 0 < listener.events < count
    await slow.aclose()


async def test_routing_sends_each_scope_to_its_upstream(fed: Federation) -> None:
    central = await fed.upstream("central")
    eu = await fed.upstream("eu")
    bridge, log, _ = await fed.bridge(
        [
            ("eu", [eu.endpoint()], eu.public, ["eu-*"]),
            ("central", [central.endpoint()], central.public, ["*"]),
        ]
    )
    await bridge.set("eu-orders", "1", "eu")
    await bridge.set("orders", "1", "central")
    assert eu.adapter is not None and central.adapter is not None
    assert await eu.adapter.list_groups() == ["eu-orders"]
    assert await central.adapter.list_groups() == ["orders"]
    await central.adapter.set("eu-stray", "x", 1)  # not routed to central: invisible at the edge
    assert await bridge.list_groups() == ["eu-orders", "orders"]
    await log.wait_count(2)
    last = await central.adapter.set("orders", "2", "c")
    await log.wait_for(lambda changes: changes[-1].revision == last.revision and changes[-1].key == "2")
    assert [(c.scope, c.new_value) for c in log.changes] == [
        ("eu-orders", "eu"),
        ("orders", "central"),
        ("orders", "c"),
    ]


async def test_failover_to_the_next_endpoint_and_back(fed: Federation) -> None:
    a = await fed.upstream("central")
    assert a.adapter is not None
    # a second listener on the same store with the same identity (two central processes)
    b = await fed.upstream("central-b", adapter=a.adapter, key=a.key, start_adapter=False)
    bridge, log, metrics = await fed.bridge([("central", [a.endpoint(), b.endpoint()], a.public, ["*"])])
    assert bridge.upstreams[0].endpoint == a.endpoint()
    await bridge.set("s", "1", 1)
    await a.stop(close_adapter=False)
    await eventually(lambda: bridge.upstreams[0].endpoint == b.endpoint() and bridge.ready(), what="failover")
    second = await bridge.set("s", "2", 2)
    await log.wait_for(lambda changes: changes[-1].revision == second.revision)
    assert revisions(log) == [1, 2]
    assert sample(metrics, "iii_gateway_link_connects_total", upstream="central", result="unreachable") >= 1


async def test_unreachable_upstream_fails_fast_and_is_not_ready(fed: Federation) -> None:
    up = await fed.upstream()
    port = up.port
    await up.stop()
    bridge, _, metrics = await fed.bridge(
        [("central", [Endpoint("tcp", "127.0.0.1", port)], up.public, ["*"])], timeout_ms=60_000
    )
    assert not bridge.ready()
    with pytest.raises(GatewayError) as info:
        await bridge.get("s", "k")
    assert info.value.code == "UPSTREAM_UNAVAILABLE"
    labels = {"upstream": "central", "op": "get", "outcome": "unavailable"}
    assert sample(metrics, "iii_gateway_link_requests_total", **labels) == 1


class StallingAdapter(KvAdapter):
    """A kv store whose ``get`` of scope "stall" never answers (an upstream that hangs)."""

    def __init__(self) -> None:
        super().__init__(KvSettings(store_method="in_memory"), engine_id="central")
        self.stalled = 0
        self.cancelled = 0

    async def get(self, scope: str, key: str) -> Any:
        if scope == "stall":
            self.stalled += 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().get(scope, key)


async def test_call_timeout_gives_timeout_and_cancels_upstream_work(fed: Federation) -> None:
    adapter = StallingAdapter()
    up = await fed.upstream(adapter=adapter)
    bridge, _, _ = await fed.bridge([("central", [up.endpoint()], up.public, ["*"])], timeout_ms=300)
    with pytest.raises(GatewayError) as info:
        await bridge.get("stall", "k")
    assert info.value.code == "TIMEOUT"
    await eventually(lambda: adapter.cancelled == 1, what="the upstream to cancel the abandoned request")
    assert await bridge.get("s", "k") is None  # the link is fine


async def test_chain_edge_region_central(fed: Federation, tmp_path: Path) -> None:
    region_key = write_key(tmp_path / "keys", "region")
    central_peers = [Peer("region", region_key)]
    central = await fed.upstream("central2", peers=central_peers)
    region_bridge = BridgeAdapter(
        bridge_settings(region_key, [("central", [central.endpoint()], central.public, ["*"])]),
        engine_id="region",
        backoff=fast_backoff,
    )
    fed.bridges.append(region_bridge)
    region = await fed.upstream("region", adapter=region_bridge)  # starts the bridge, serves it
    edge, log, _ = await fed.bridge([("region", [region.endpoint()], region.public, ["*"])])
    assert central.adapter is not None
    written = await edge.set("s", "k", {"v": 1})
    assert (await central.adapter.get("s", "k")) is not None
    direct = await central.adapter.set("s", "k2", 2)
    await log.wait_for(lambda changes: changes and changes[-1].revision == direct.revision)
    assert [(c.key, c.revision, c.origin) for c in log.changes] == [
        ("k", written.revision, EDGE),
        ("k2", direct.revision, "central2"),
    ]
    entry = await edge.get("s", "k")
    assert entry is not None and entry.value == {"v": 1} and entry.revision == written.revision


async def test_a_silent_peer_is_dropped_by_the_idle_timeout_and_a_live_one_kept(fed: Federation) -> None:
    up = await fed.upstream(server_options={"heartbeat_interval": 0.05, "idle_timeout": 0.4})
    assert up.key is not None and up.service is not None
    server_key = up.key.key.public_key()
    live = await connect(
        "127.0.0.1", up.port, private_key=fed.edge_key.key, client_id="live", server_key=server_key
    )
    silent = await connect(
        "127.0.0.1", up.port, private_key=fed.edge_key.key, client_id="silent", server_key=server_key
    )
    assert silent.transport is not None
    silent.transport.pause_reading()  # a peer behind a dead network path: no pong ever comes back
    service = up.service
    await eventually(lambda: service.statistics()["link_connections"] == 1, what="the silent peer dropped")
    assert live.is_open  # it answered every ping
    assert await live.request(GetArgs("s", "k")) is None
    await live.aclose()
    silent.abort()


class Listener:
    """Records what a raw watch stream delivers."""

    def __init__(self) -> None:
        self.events: list[int] = []
        self.backlog_end: tuple[int, str] | None = None
        self.progress: list[int] = []

    def on_event(self, event: WatchEvent) -> None:
        self.events.append(event.revision)

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        self.backlog_end = (revision, epoch)

    def on_progress(self, revision: int) -> None:
        self.progress.append(revision)


async def test_progress_marks_advance_a_watch_on_a_quiet_scope(fed: Federation) -> None:
    up = await fed.upstream(server_options={"progress_interval": 0.05})
    assert up.key is not None and up.adapter is not None
    client = await connect(
        "127.0.0.1", up.port, private_key=fed.edge_key.key, client_id="w", server_key=up.key.key.public_key()
    )
    quiet = Listener()
    client.watch(WatchArgs(("quiet-*",)), quiet)
    await eventually(lambda: quiet.backlog_end is not None)
    last = 0
    for i in range(5):
        last = (await up.adapter.set("busy", str(i), i)).revision
    await eventually(lambda: bool(quiet.progress) and quiet.progress[-1] == last, what="a progress mark")
    assert quiet.events == []  # nothing matched, but the resume point moved
    assert quiet.progress == sorted(set(quiet.progress))
    await client.aclose()


class InterleavingKv(KvAdapter):
    """A kv store whose scope reads yield to the loop first, so writes land between them
    (as they would between the reads of several Redis hashes)."""

    def __init__(self) -> None:
        super().__init__(KvSettings(store_method="in_memory"), engine_id="central")

    async def items(self, scope: str) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().items(scope)


async def test_snapshot_is_the_state_at_one_revision_despite_concurrent_writes(fed: Federation) -> None:
    adapter = InterleavingKv()
    up = await fed.upstream(adapter=adapter)
    assert up.key is not None
    log = ChangeLog()
    adapter.subscribe(log)
    client = await connect(
        "127.0.0.1", up.port, private_key=fed.edge_key.key, client_id="s", server_key=up.key.key.public_key()
    )
    for scope in "abcde":
        for key in range(10):
            await adapter.set(scope, str(key), 0)
    stop = asyncio.Event()

    async def churn() -> None:
        n = 0
        while not stop.is_set():
            scope, key = "abcde"[n % 5], str(n % 13)
            if n % 7 == 0:
                await adapter.delete(scope, key)
            else:
                await adapter.set(scope, key, n)
            n += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(churn())
    try:
        snaps = [await client.request(SnapshotArgs(("*",))) for _ in range(5)]
    finally:
        stop.set()
        await writer
    for snap in snaps:
        expected: dict[tuple[str, str], tuple[Any, int]] = {}
        for change in log.changes:
            if change.revision > snap["revision"]:
                break
            if change.kind is ChangeKind.DELETED:
                expected.pop((change.scope, change.key), None)
            else:
                expected[(change.scope, change.key)] = (change.new_value, change.revision)
        got = {(scope, key): (value, rev) for scope, key, value, rev in snap["items"]}
        assert got == expected
    assert len({snap["revision"] for snap in snaps}) > 1  # writes really happened in between
    await client.aclose()
