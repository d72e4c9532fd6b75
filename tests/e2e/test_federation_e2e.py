"""Federation end to end: gateway processes linked by real configs, real iii-sdk workers on them.

Topologies: edge -> central (kv), edge -> central (Redis), edge -> region -> central. Workers
call ``state::*`` on the edge exactly as they would on a single engine; ``state`` triggers on
the edge fire once per write, wherever the write was made; the central fires its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.link.client import connect
from gateway.link.requests import GetArgs
from tests.helpers.federation import Peer, write_key
from tests.helpers.gateway_procs import FedGateway, bridge_adapter, redis_adapter
from tests.integration.redis_server import RedisServer, redis_available
from tests.integration.sdk_helpers import Inbox, bind, call, connect_worker, expect_error, roundtrip, shutdown

pytestmark = pytest.mark.slow


@pytest.fixture
async def procs() -> AsyncIterator[list[FedGateway]]:
    started: list[FedGateway] = []
    yield started
    for gw in reversed(started):
        await gw.stop()


async def start(procs: list[FedGateway], gw: FedGateway) -> FedGateway:
    procs.append(gw)
    await gw.start_ready()
    return gw


async def state_trigger(url: str, name: str, scope: str) -> tuple[Any, Inbox]:
    """A worker with a ``state`` trigger on ``scope`` that records every event it gets."""
    worker = await connect_worker(url, name)
    inbox = Inbox()
    worker.register_function(f"{name}::on_change", inbox.recorder({"ok": True}))
    bind(worker, "state", f"{name}::on_change", {"scope": scope})
    await roundtrip(worker)
    return worker, inbox


async def events(inbox: Inbox, count: int) -> list[dict[str, Any]]:
    return [(await inbox.get())[0] for _ in range(count)]


async def test_edge_to_central_kv(tmp_path: Path, procs: list[FedGateway]) -> None:
    keys = tmp_path / "keys"
    edge_key = write_key(keys, "edge")
    central = await start(procs, FedGateway(tmp_path / "central", "central", peers=[Peer("edge", edge_key)]))
    assert central.link_port is not None
    edge = FedGateway(
        tmp_path / "edge",
        "edge",
        key=edge_key,
        adapter=bridge_adapter(edge_key, [("central", [central.link_port], central.public)]),
    )
    await start(procs, edge)
    edge_worker, edge_seen = await state_trigger(edge.worker_url, "edgew", "orders")
    central_worker, central_seen = await state_trigger(central.worker_url, "centralw", "orders")
    try:
        created = await call(edge_worker, "state::set", {"scope": "orders", "key": "1", "value": {"n": 1}})
        assert created["old_value"] is None and created["new_value"] == {"n": 1}
        assert await call(edge_worker, "state::get", {"scope": "orders", "key": "1"}) == {"n": 1}
        assert await call(central_worker, "state::get", {"scope": "orders", "key": "1"}) == {"n": 1}
        (at_edge,) = await events(edge_seen, 1)
        (at_central,) = await events(central_seen, 1)
        for event in (at_edge, at_central):
            assert event["event_type"] == "state:created" and event["origin"] == "edge"
        assert at_edge["revision"] == at_central["revision"] == created["revision"]

        await call(central_worker, "state::set", {"scope": "orders", "key": "2", "value": "from central"})
        (relayed,) = await events(edge_seen, 1)
        assert (relayed["key"], relayed["origin"]) == ("2", "central")
        removed = await call(edge_worker, "state::delete", {"scope": "orders", "key": "1"})
        assert removed == {"n": 1}
        (deleted,) = await events(edge_seen, 1)
        assert deleted["event_type"] == "state:deleted" and deleted["old_value"] == {"n": 1}
        assert await call(edge_worker, "state::list_groups", {}) == {"groups": ["orders"]}
        assert edge_seen.empty()  # each write fired the edge trigger exactly once
        assert await edge.metric("iii_gateway_events_relayed_total", upstream="central") == 3

        await central.stop()  # the upstream goes away: the edge answers at once, not ready
        error = await expect_error(edge_worker, "state::get", {"scope": "orders", "key": "2"})
        assert error.code == "UPSTREAM_UNAVAILABLE"
        central.start()
        await central.ready()
        await edge.ready()  # reconnected
        assert await call(edge_worker, "state::get", {"scope": "orders", "key": "2"}) == "from central"
    finally:
        await shutdown(edge_worker, central_worker)


async def test_edge_to_central_redis(tmp_path: Path, procs: list[FedGateway]) -> None:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        edge_key = write_key(tmp_path / "keys", "edge")
        central = FedGateway(
            tmp_path / "central", "central", adapter=redis_adapter(server.url), peers=[Peer("edge", edge_key)]
        )
        await start(procs, central)
        assert central.link_port is not None
        edge = FedGateway(
            tmp_path / "edge",
            "edge",
            key=edge_key,
            adapter=bridge_adapter(edge_key, [("central", [central.link_port], central.public)]),
        )
        await start(procs, edge)
        worker, seen = await state_trigger(edge.worker_url, "w", "s")
        try:
            first = await call(worker, "state::set", {"scope": "s", "key": "k", "value": None})
            assert first["new_value"] is None
            ops = [{"type": "increment", "path": "c", "by": 2}]
            updated = await call(worker, "state::update", {"scope": "s", "key": "n", "ops": ops})
            assert updated["new_value"] == {"c": 2}
            (a, b) = await events(seen, 2)
            assert (a["revision"], a["new_value"]) == (first["revision"], None)
            assert b["new_value"] == {"c": 2}
            assert server.command("HGET", "state:s", "n") == b'{"c":2}'  # the reference layout
        finally:
            await shutdown(worker)
    finally:
        for gw in reversed(procs):
            await gw.stop()
        procs.clear()
        server.kill()


async def test_edge_region_central_chain(tmp_path: Path, procs: list[FedGateway]) -> None:
    keys = tmp_path / "keys"
    region_key = write_key(keys, "region")
    edge_key = write_key(keys, "edge")
    central = await start(
        procs, FedGateway(tmp_path / "central", "central", peers=[Peer("region", region_key)])
    )
    assert central.link_port is not None
    region = FedGateway(
        tmp_path / "region",
        "region",
        key=region_key,
        adapter=bridge_adapter(region_key, [("central", [central.link_port], central.public)]),
        peers=[Peer("edge", edge_key)],
    )
    await start(procs, region)
    assert region.link_port is not None
    edge = FedGateway(
        tmp_path / "edge",
        "edge",
        key=edge_key,
        adapter=bridge_adapter(edge_key, [("region", [region.link_port], region.public)]),
    )
    await start(procs, edge)
    edge_worker, edge_seen = await state_trigger(edge.worker_url, "e", "s")
    region_worker, region_seen = await state_trigger(region.worker_url, "r", "s")
    central_worker = await connect_worker(central.worker_url, "c")
    try:
        written = await call(edge_worker, "state::set", {"scope": "s", "key": "k", "value": 1})
        assert await call(central_worker, "state::get", {"scope": "s", "key": "k"}) == 1
        direct = await call(central_worker, "state::set", {"scope": "s", "key": "k2", "value": 2})
        at_edge = await events(edge_seen, 2)
        at_region = await events(region_seen, 2)
        for seen in (at_edge, at_region):
            assert [(e["key"], e["revision"], e["origin"]) for e in seen] == [
                ("k", written["revision"], "edge"),
                ("k2", direct["revision"], "central"),
            ]
        assert edge_seen.empty() and region_seen.empty()
    finally:
        await shutdown(edge_worker, region_worker, central_worker)


async def test_sighup_reloads_the_authorized_peers(tmp_path: Path, procs: list[FedGateway]) -> None:
    edge_key = write_key(tmp_path / "keys", "edge")
    other_key = write_key(tmp_path / "keys", "other")
    central = await start(
        procs,
        FedGateway(tmp_path / "central", "central", peers=[Peer("edge", edge_key), Peer("other", other_key)]),
    )
    assert central.link_port is not None

    async def dial(key: Any) -> Any:
        return await connect(
            "127.0.0.1", central.link_port or 0, private_key=key.key, client_id=key.path.stem,
            server_key=central.key.key.public_key(),
        )  # fmt: skip

    edge = await dial(edge_key)
    other = await dial(other_key)
    assert await edge.request(GetArgs("s", "k")) is None
    central.peers = [Peer("other", other_key)]
    central.write_config()  # rewrites peers.yaml without the edge
    central.hup()
    closed = await asyncio.wait_for(edge.closed, 10)
    assert (closed.code, closed.reason) == ("UNAUTHORIZED", "revoked")
    assert await other.request(GetArgs("s", "k")) is None
    await other.aclose()
