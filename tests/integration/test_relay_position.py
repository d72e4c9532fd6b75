"""A restarted edge resumes its relay from the persisted position instead of live-from-now.

A real upstream (kv behind the link listener) and a Bridge with a position directory: what is
written upstream while the edge is down reaches the restarted edge's sinks, each revision once,
repeated writes to one key included, even when the central restarted meanwhile (its history
is read back from its log); a damaged position file is ignored, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from adapters.bridge.position import RelayPosition
from adapters.kv.store import KvAdapter
from gateway.config.settings import KvSettings
from tests.helpers.federation import (
    ChangeLog,
    InProcessUpstream,
    KeyFile,
    Peer,
    bridge_settings,
    eventually,
    fast_backoff,
    write_key,
)


class Edge:
    def __init__(self, tmp: Path) -> None:
        self.key = write_key(tmp / "keys", "edge")
        self.data = tmp / "edge-data"
        self.central = InProcessUpstream(tmp / "central", [Peer("edge", self.key)])
        self.bridge: BridgeAdapter | None = None

    async def start(self) -> tuple[BridgeAdapter, ChangeLog]:
        route = ("central", [self.central.endpoint()], self.central.public, ["*"])
        self.bridge = BridgeAdapter(
            bridge_settings(self.key, [route]),
            engine_id="edge",
            backoff=fast_backoff,
            position_dir=str(self.data),
        )
        log = ChangeLog()
        self.bridge.subscribe(log)
        await self.bridge.start()
        return self.bridge, log

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    built = Edge(tmp_path)
    await built.central.start()
    yield built
    await built.stop()
    await built.central.stop()


async def test_restarted_edge_gets_what_was_written_while_it_was_down(edge: Edge) -> None:
    store = edge.central.adapter
    assert store is not None
    _, log = await edge.start()
    before = [(await store.set("s", "k", i)).revision for i in range(3)]
    await log.wait_count(3)
    await edge.stop()  # clean stop: the exact position is written
    saved = json.loads((edge.data / "relay-central.json").read_text())
    assert saved == {"epoch": store.info().epoch, "revision": before[-1]}

    during = [(await store.set("s", "k", 10 + i)).revision for i in range(4)]  # one key, many writes
    during.append((await store.delete("s", "k")).revision)
    _, log = await edge.start()
    changes = await log.wait_count(5)
    assert [(c.revision, c.new_value) for c in changes] == list(
        zip(during, [10, 11, 12, 13, None], strict=True)
    )
    after = (await store.set("s", "k2", 1)).revision
    changes = await log.wait_count(6)
    assert [c.revision for c in changes] == [*during, after]  # nothing repeated, nothing skipped


async def test_a_damaged_position_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "relay-central.json"
    path.write_text('{"epoch": "e1", "revis')
    assert RelayPosition(path).load() is None
    path.write_text(json.dumps({"epoch": "", "revision": 3}))
    assert RelayPosition(path).load() is None
    position = RelayPosition(path)
    position.note("e2", 7)
    position.close()
    assert RelayPosition(path).load() == ("e2", 7)
    assert not path.with_name(path.name + ".tmp").exists()


async def test_resume_across_a_central_restart_replays_repeated_writes_from_its_log(tmp_path: Path) -> None:
    def durable_central(key: KeyFile | None = None) -> InProcessUpstream:
        store = KvAdapter(
            KvSettings(store_method="file_based", file_path=str(tmp_path / "store"), fsync="always"),
            engine_id="central",
        )
        return InProcessUpstream(tmp_path / "central", [Peer("edge", edge_key)], adapter=store, key=key)

    edge_key = write_key(tmp_path / "keys", "edge")
    central = durable_central()
    await central.start()
    port = central.port
    route = ("central", [central.endpoint()], central.public, ["*"])

    async def start_edge() -> tuple[BridgeAdapter, ChangeLog]:
        bridge = BridgeAdapter(
            bridge_settings(edge_key, [route]),
            engine_id="edge",
            backoff=fast_backoff,
            position_dir=str(tmp_path / "e"),
        )
        log = ChangeLog()
        bridge.subscribe(log)
        await bridge.start()
        return bridge, log

    bridge, log = await start_edge()
    try:
        assert central.adapter is not None
        first = (await central.adapter.set("s", "k", 0)).revision
        await log.wait_count(1)
        await bridge.close()
        repeated = [(await central.adapter.set("s", "k", i)).revision for i in range(1, 5)]
        await central.stop()  # the central restarts: its in-memory history starts empty
        central = durable_central(central.key)
        await central.start(port=port)
        bridge, log = await start_edge()
        changes = await log.wait_count(4)
        assert [(c.revision, c.new_value) for c in changes] == list(zip(repeated, [1, 2, 3, 4], strict=True))
        assert first < repeated[0] and bridge.upstreams[0].resyncs_total == 0
    finally:
        await bridge.close()
        await central.stop()


async def test_after_a_crash_the_changes_since_the_last_write_repeat_once_in_order(edge: Edge) -> None:
    store = edge.central.adapter
    assert store is not None
    _, log = await edge.start()
    path = edge.data / "relay-central.json"
    written = (await store.set("s", "k", 0)).revision
    await log.wait_count(1)
    await eventually(
        lambda: path.exists() and json.loads(path.read_text())["revision"] == written, what="the timed write"
    )
    crashed_at = path.read_bytes()  # what a crash right now would leave on disk
    later = [(await store.set("s", "k", i)).revision for i in range(1, 4)]
    await log.wait_count(4)
    await edge.stop()
    path.write_bytes(crashed_at)  # the file lags the deliveries, as after a SIGKILL
    _, log = await edge.start()
    newest = (await store.set("s", "k", 9)).revision
    changes = await log.wait_count(4)
    assert [c.revision for c in changes] == [*later, newest]  # repeated once, in order, none skipped
