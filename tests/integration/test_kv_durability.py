"""Durability of the file_based kv store: restarts, torn tails, corruption, kill -9, compaction.

Real files in tmp_path, a real child process for the crash test, and a hypothesis state machine
that checks the store against a plain dict model across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.kv.files import list_segments
from adapters.kv.records import HEADER_SIZE
from adapters.kv.store import KvAdapter
from gateway.config.settings import KvSettings
from gateway.errors import CorruptDataError
from gateway.state.ops import UpdateOp, append_op, apply_ops, increment_op, merge_op, remove_op, set_op

ROOT = Path(__file__).resolve().parents[2]


def kv_settings(path: Path, **overrides: Any) -> KvSettings:
    base: dict[str, Any] = {"store_method": "file_based", "file_path": str(path), "fsync": "always"}
    return KvSettings(**{**base, **overrides})


async def open_store(settings: KvSettings) -> KvAdapter:
    adapter = KvAdapter(settings, engine_id="durability")
    await adapter.start()
    return adapter


async def dump(adapter: KvAdapter) -> dict[str, list[tuple[str, Any, int]]]:
    """Everything observable: scopes, key order, values and per-key revisions."""
    return {
        scope: [(key, entry.value, entry.revision) for key, entry in await adapter.items(scope)]
        for scope in await adapter.list_groups()
    }


async def write_workload(adapter: KvAdapter, n: int = 60) -> None:
    for i in range(n):
        await adapter.set(f"scope{i % 4}", f"key{i % 17}", {"i": i, "text": "é" * (i % 5)})
        if i % 7 == 0:
            await adapter.delete(f"scope{i % 4}", f"key{(i + 3) % 17}")
        if i % 5 == 0:
            await adapter.update("counters", "c", [increment_op("n", 1)])
    await adapter.set("", "", None)
    await adapter.set("A", "a", [])
    await adapter.set("a", "A", {"nul": "\x00"})


def last_segment(path: Path) -> Path:
    return list_segments(path)[-1][1]


def record_offsets(data: bytes) -> list[int]:
    """Start offsets of the records in a segment (walking the length fields)."""
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER_SIZE + int.from_bytes(data[offset + 4 : offset + 8], "little")
    return offsets


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_clean_restart_loses_nothing(tmp_path: Path, policy: str) -> None:
    settings = kv_settings(tmp_path, fsync=policy, save_interval_ms=60_000)
    adapter = await open_store(settings)
    await write_workload(adapter)
    before, info = await dump(adapter), adapter.info()
    await adapter.close()
    again = await open_store(settings)
    assert await dump(again) == before
    assert again.info().revision == info.revision and again.info().epoch == info.epoch
    result = await again.set("after", "k", 1)
    assert result.revision == info.revision + 1
    await again.close()


async def _torn_tail_case(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], int]:
    settings = kv_settings(tmp_path)
    adapter = await open_store(settings)
    await write_workload(adapter, 20)
    kept, kept_revision = await dump(adapter), adapter.info().revision
    await adapter.set("victim", "k", {"lost": True})  # the record we damage
    await adapter.close()
    segment = last_segment(tmp_path)
    data = segment.read_bytes()
    start = record_offsets(data)[-1]
    if damage == "cut":
        segment.write_bytes(data[: start + (len(data) - start) // 2])
    else:
        flipped = bytearray(data)
        flipped[len(data) - 3] ^= 0xFF  # inside the last record's body
        segment.write_bytes(bytes(flipped))
    with caplog.at_level(logging.WARNING, logger="adapters.kv.store"):
        again = await open_store(settings)
    assert "torn tail" in caplog.text
    assert again.statistics()["kv_torn_tail_truncations_total"] == 1
    assert segment.stat().st_size == start
    assert await dump(again) == kept and again.info().revision == kept_revision
    await again.set("after", "k", 2)  # appends cleanly after the cut
    await again.close()
    return kept, kept_revision


@pytest.mark.parametrize("damage", ["cut", "flip"])
async def test_torn_last_record_is_truncated_and_reported(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, revision = await _torn_tail_case(tmp_path, damage, caplog)
    third = await open_store(kv_settings(tmp_path))
    assert third.statistics()["kv_torn_tail_truncations_total"] == 0
    entry = await third.get("after", "k")
    assert entry is not None and entry.revision == revision + 1
    assert await third.get("victim", "k") is None
    await third.close()


async def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    settings = kv_settings(tmp_path)
    adapter = await open_store(settings)
    await write_workload(adapter, 10)
    before = await dump(adapter)
    await adapter.close()
    segment = last_segment(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as fh:
        fh.write(b"\x00" * 100)  # a crash can leave preallocated zeros after the data
    again = await open_store(settings)
    assert await dump(again) == before and segment.stat().st_size == size
    await again.close()


@pytest.mark.parametrize("where", ["middle_of_last_segment", "length_field", "earlier_segment"])
async def test_corruption_before_the_tail_fails_start(tmp_path: Path, where: str) -> None:
    settings = kv_settings(tmp_path)
    adapter = KvAdapter(settings, engine_id="durability")
    if where == "earlier_segment":
        adapter.segment_max_bytes = 512
    await adapter.start()
    await write_workload(adapter, 40)
    await adapter.close()
    segments = list_segments(tmp_path)
    segment = segments[0][1] if where == "earlier_segment" else segments[-1][1]
    assert where != "earlier_segment" or len(segments) > 1
    data = bytearray(segment.read_bytes())
    offsets = record_offsets(bytes(data))
    if where == "earlier_segment":
        victim = offsets[-1]  # the tail of a segment that is not the last one
        data[victim + HEADER_SIZE + 2] ^= 0x01
    elif where == "length_field":
        victim = offsets[len(offsets) // 2]
        data[victim + 4] ^= 0x80  # the record now claims to be longer
    else:
        victim = offsets[len(offsets) // 2]
        data[victim + HEADER_SIZE + 2] ^= 0x01
    segment.write_bytes(bytes(data))
    again = KvAdapter(settings, engine_id="durability")
    with pytest.raises(CorruptDataError) as info:
        await again.start()
    assert info.value.path == str(segment) and info.value.offset == victim
    assert str(segment) in str(info.value) and f"offset {victim}" in str(info.value)
    assert not again.ready()
    # the failed start released the directory lock: a fixed store opens in this process
    segment.write_bytes(bytes(data[:victim]))
    if where != "earlier_segment":
        fixed = await open_store(settings)
        await fixed.close()


async def test_corrupt_snapshot_fails_start(tmp_path: Path) -> None:
    settings = kv_settings(tmp_path)
    adapter = await open_store(settings)
    await write_workload(adapter, 30)
    await adapter.snapshot()
    await adapter.close()
    (snapshot,) = tmp_path.glob("snap-*.snap")
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0x04
    snapshot.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as info:
        await open_store(settings)
    assert info.value.path == str(snapshot)


async def test_snapshot_then_restart_equals_state(tmp_path: Path) -> None:
    settings = kv_settings(tmp_path, fsync="interval", save_interval_ms=10)
    adapter = await open_store(settings)
    await write_workload(adapter, 50)
    snap_revision = await adapter.snapshot()
    assert snap_revision == adapter.info().revision
    await adapter.set("scope1", "key3", "after snapshot")
    await adapter.delete("scope2", "key2")
    before, revision = await dump(adapter), adapter.info().revision
    await adapter.close()
    again = await open_store(settings)
    assert await dump(again) == before and again.info().revision == revision
    assert again.statistics()["kv_last_snapshot_revision"] >= snap_revision
    await again.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from adapters.kv.store import KvAdapter
    from gateway.config.settings import KvSettings
    from gateway.state.ops import increment_op

    async def main(path):
        store = KvAdapter(KvSettings(store_method="file_based", file_path=path, fsync="always"),
                          engine_id="child")
        await store.start()
        print("ready", flush=True)

        async def setter():
            i = 0
            while True:
                r = await store.set("keys", f"k{i}", {"i": i})
                print(f"set k{i} {i} {r.revision}", flush=True)
                i += 1

        async def counter(name):
            while True:
                r = await store.update("counters", name, [increment_op("n", 1)])
                print(f"inc {name} {r.new_value['n']} {r.revision}", flush=True)

        await asyncio.gather(setter(), *(counter(f"c{j}") for j in range(8)))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
async def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    store_dir = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked_sets: dict[str, int] = {}
    acked_counts: dict[str, int] = {}
    max_revision = 0
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        lines = 0
        while lines < 600:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, "child exited early"
            kind, name, value, revision = line.split()
            if kind == "set":
                acked_sets[name] = int(value)
            else:
                acked_counts[name] = max(acked_counts.get(name, 0), int(value))
            max_revision = max(max_revision, int(revision))
            lines += 1
        proc.send_signal(signal.SIGKILL)  # mid-stream: writes are in flight right now
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    store = await open_store(kv_settings(store_dir))
    for key, i in acked_sets.items():
        entry = await store.get("keys", key)
        assert entry is not None and entry.value == {"i": i}, key
    for name, count in acked_counts.items():
        entry = await store.get("counters", name)
        # an unacknowledged increment may have reached the disk; none acknowledged may be lost
        assert entry is not None and entry.value["n"] >= count, name
    assert store.info().revision >= max_revision
    revisions = [e.revision for s in await store.list_groups() for _, e in await store.items(s)]
    assert len(set(revisions)) == len(revisions) and max(revisions) <= store.info().revision
    keys = [k for k, _ in await store.items("keys")]
    assert keys == [f"k{i}" for i in range(len(keys))]  # a prefix, in order, no holes
    await store.close()


# ------------------------------------------------------------------ model-based


scopes = st.sampled_from(["", "a", "A", "b/..", "é"])
keys = st.sampled_from(["", "k", "K", "x\x00", "日本"])
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
ops = st.lists(
    st.one_of(
        st.builds(increment_op, st.sampled_from(["n", ""]), st.integers(-5, 5)),
        st.builds(set_op, st.sampled_from(["n", "v", ""]), json_value),
        st.builds(merge_op, st.dictionaries(st.sampled_from(["m", "n"]), json_leaf, max_size=2)),
        st.builds(append_op, json_leaf, st.sampled_from([None, "l"])),
        st.builds(remove_op, st.sampled_from(["n", "m"])),
    ),
    max_size=3,
)


class KvModel(RuleBasedStateMachine):
    """The store against an ordered dict model, with restarts and snapshots in between."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="kv-model-")
        self.loop = asyncio.new_event_loop()
        self.settings = kv_settings(Path(self.tmp.name), fsync="never", compact_after_bytes=2048)
        self.store = self.run(open_store(self.settings))
        self.model: dict[str, dict[str, tuple[Any, int]]] = {}
        self.revision = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.tmp.cleanup()

    @rule(scope=scopes, key=keys, value=json_value)
    def set(self, scope: str, key: str, value: Any) -> None:
        result = self.run(self.store.set(scope, key, value))
        self.revision += 1
        assert result.revision == self.revision
        self.model.setdefault(scope, {})[key] = (value, self.revision)

    @rule(scope=scopes, key=keys)
    def delete(self, scope: str, key: str) -> None:
        result = self.run(self.store.delete(scope, key))
        self.revision += 1
        old = self.model.get(scope, {}).pop(key, None)
        assert result.existed == (old is not None)
        if scope in self.model and not self.model[scope]:
            del self.model[scope]

    @rule(scope=scopes, key=keys, update_ops=ops)
    def update(self, scope: str, key: str, update_ops: list[UpdateOp]) -> None:
        old = self.model.get(scope, {}).get(key)
        expected = apply_ops(None if old is None else old[0], old is not None, update_ops)
        result = self.run(self.store.update(scope, key, update_ops))
        self.revision += 1
        assert result.new_value == expected.value and result.errors == expected.errors
        self.model.setdefault(scope, {})[key] = (expected.value, self.revision)

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(open_store(self.settings))

    @precondition(lambda self: self.revision > 0)
    @rule()
    def snapshot(self) -> None:
        assert self.run(self.store.snapshot()) == self.revision

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.store.info().revision == self.revision
        assert self.run(self.store.list_groups()) == sorted(self.model)
        for scope, entries in self.model.items():
            got = self.run(self.store.items(scope))
            assert [(k, e.value, e.revision) for k, e in got] == [(k, v, r) for k, (v, r) in entries.items()]
            assert self.run(self.store.list(scope)) == [v for v, _ in entries.values()]


TestKvModel = KvModel.TestCase
TestKvModel.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def test_log_that_ends_before_the_snapshot_continues_in_a_new_segment(tmp_path: Path) -> None:
    """A snapshot newer than the last surviving log record (the log's tail was lost after it)."""
    settings_a, settings_b = kv_settings(tmp_path / "a"), kv_settings(tmp_path / "b")
    adapter = await open_store(settings_a)
    adapter.close_compact_min_bytes = 1 << 60  # keep the log at close
    for i in range(10):
        await adapter.set("s", f"k{i}", i)
    await adapter.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    other = await open_store(settings_b)
    assert await other.snapshot() == 10
    expected = await dump(other)
    await other.close()
    (snapshot,) = (tmp_path / "b").glob("snap-*.snap")
    shutil.copy(snapshot, tmp_path / "a" / snapshot.name)
    segment = last_segment(tmp_path / "a")
    data = segment.read_bytes()
    segment.write_bytes(data[: record_offsets(data)[5]])  # the log now ends at revision 5
    again = await open_store(settings_a)
    assert await dump(again) == expected and again.info().revision == 10
    assert (await again.set("s", "new", 1)).revision == 11
    await again.close()
    third = await open_store(settings_a)
    assert third.info().revision == 11 and [k for k, _ in await third.items("s")][-1] == "new"
    await third.close()
