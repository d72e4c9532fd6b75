"""KvAdapter behaviour beyond the shared contract: lifecycle, epoch, history, stats, files."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.kv.loghistory import LOG_ORIGIN
from adapters.kv.store import KvAdapter
from gateway.config.settings import KvSettings
from gateway.errors import InputError, StorageError
from gateway.metrics import Metrics
from gateway.state.adapter import Change, ChangeKind
from gateway.state.ops import increment_op


def file_settings(path: Path, **overrides: Any) -> KvSettings:
    base: dict[str, Any] = {"store_method": "file_based", "file_path": str(path), "fsync": "always"}
    return KvSettings(**{**base, **overrides})


async def opened(settings: KvSettings, metrics: Metrics | None = None) -> KvAdapter:
    adapter = KvAdapter(settings, engine_id="unit", metrics=metrics)
    await adapter.start()
    return adapter


async def test_operations_need_an_open_store(tmp_path: Path) -> None:
    adapter = KvAdapter(KvSettings(store_method="in_memory"), engine_id="unit")
    assert not adapter.ready()
    with pytest.raises(StorageError):
        await adapter.get("s", "k")
    await adapter.start()
    with pytest.raises(StorageError):
        await adapter.start()
    await adapter.set("s", "k", 1)
    await adapter.close()
    with pytest.raises(StorageError):
        await adapter.set("s", "k", 2)
    with pytest.raises(StorageError):
        await adapter.list("s")


async def test_in_memory_epoch_is_new_each_start() -> None:
    first = await opened(KvSettings(store_method="in_memory"))
    second = await opened(KvSettings(store_method="in_memory"))
    assert first.info().epoch != second.info().epoch
    await first.close()
    await second.close()


async def test_non_json_value_writes_nothing(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path))
    with pytest.raises(InputError):
        await adapter.set("s", "k", {"bad": {1, 2}})
    assert adapter.info().revision == 0 and await adapter.get("s", "k") is None
    with pytest.raises(InputError):
        await adapter.set(7, "k", 1)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        await adapter.delete("s", b"k")  # type: ignore[arg-type]
    assert adapter.info().revision == 0 and await adapter.list_groups() == []
    await adapter.close()
    again = await opened(file_settings(tmp_path))  # the log is still readable
    assert again.info().revision == 0
    await again.close()


async def test_big_integers_beyond_64_bits_survive_restart(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path))
    value = {"huge": 2**100, "neg": -(2**80), "list": [2**64, 2**64 - 1]}
    await adapter.set("s", "k", value)
    await adapter.close()
    again = await opened(file_settings(tmp_path))
    entry = await again.get("s", "k")
    assert entry is not None and entry.value == value
    await again.close()


async def test_store_directory_is_locked(tmp_path: Path) -> None:
    first = await opened(file_settings(tmp_path))
    second = KvAdapter(file_settings(tmp_path), engine_id="other")
    with pytest.raises(StorageError, match="in use by another process"):
        await second.start()
    await first.close()
    third = await opened(file_settings(tmp_path))
    assert third.ready()
    await third.close()


async def test_failing_sink_does_not_undo_the_write(caplog: pytest.LogCaptureFixture) -> None:
    adapter = await opened(KvSettings(store_method="in_memory"))
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("sink bug")

    adapter.subscribe(broken)
    adapter.subscribe(seen.append)
    with caplog.at_level(logging.ERROR):
        result = await adapter.set("s", "k", 1)
    assert [c.revision for c in seen] == [result.revision]
    assert (await adapter.get("s", "k")) is not None
    assert "change sink" in caplog.text
    await adapter.close()


async def test_changes_since_serves_the_ring_and_says_when_it_cannot() -> None:
    adapter = await opened(KvSettings(store_method="in_memory", history_size=3))
    assert adapter.changes_since(0) == []
    for i in range(5):
        await adapter.set("s", f"k{i}", i)
    await adapter.delete("s", "k0")  # revision 6
    changes = adapter.changes_since(4)
    assert changes is not None
    assert [(c.revision, c.kind) for c in changes] == [(5, ChangeKind.CREATED), (6, ChangeKind.DELETED)]
    assert changes[1].old_value == 0 and changes[0].new_value == 4
    assert adapter.changes_since(6) == []
    assert adapter.changes_since(3) is not None and len(adapter.changes_since(3) or []) == 3
    assert adapter.changes_since(2) is None  # evicted
    assert adapter.changes_since(7) is None  # the future
    await adapter.close()


async def test_changes_since_after_restart_reads_the_log_until_compaction(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path))
    await adapter.set("s", "a", 1)
    await adapter.set("s", "a", 2)
    await adapter.delete("s", "a")
    await adapter.set("s", "a", 3)
    await adapter.close()
    again = await opened(file_settings(tmp_path))
    assert again.changes_since(2) is not None
    await again.set("s", "c", 9)  # revision 5, in this process's ring
    changes = again.changes_since(0)  # revisions 1..4 come from the log on disk
    assert changes is not None
    assert [(c.revision, c.kind, c.old_value, c.new_value) for c in changes] == [
        (1, ChangeKind.UPDATED, None, 1),  # the first record of a key: kind and old value unknown
        (2, ChangeKind.UPDATED, 1, 2),
        (3, ChangeKind.DELETED, 2, None),
        (4, ChangeKind.CREATED, None, 3),
        (5, ChangeKind.CREATED, None, 9),
    ]
    assert [c.origin for c in changes] == [LOG_ORIGIN] * 4 + ["unit"]
    assert [c.revision for c in again.changes_since(3) or []] == [4, 5]
    await again.snapshot()  # compaction removes the segments: that history is gone
    assert again.changes_since(0) is None
    assert [c.revision for c in again.changes_since(4) or []] == [5]
    await again.close()


async def test_statistics_and_metrics(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    adapter = await opened(file_settings(tmp_path), metrics)
    for i in range(10):
        await adapter.update("s", "n", [increment_op("c", i)])
    await adapter.set("t", "x", None)
    stats = adapter.statistics()
    assert stats["kv_keys"] == 2 and stats["kv_scopes"] == 2 and stats["kv_revision"] == 11
    assert stats["kv_fsyncs_total"] >= 1 and stats["kv_log_bytes"] > 0 and stats["kv_log_segments"] == 1
    assert stats["kv_torn_tail_truncations_total"] == 0
    assert await adapter.snapshot() == 11
    assert adapter.statistics()["kv_last_snapshot_revision"] == 11
    registry = metrics.registry
    assert (registry.get_sample_value("iii_gateway_log_fsync_seconds_count") or 0) >= 1
    assert registry.get_sample_value("iii_gateway_snapshots_total", {"outcome": "ok"}) == 1
    assert registry.get_sample_value("iii_gateway_log_bytes_written_total") == stats["kv_log_bytes"]
    await adapter.close()


async def test_epoch_survives_clean_close(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path, fsync="never"))
    await adapter.set("s", "k", 1)
    epoch = adapter.info().epoch
    await adapter.close()
    again = await opened(file_settings(tmp_path, fsync="never"))
    assert again.info().epoch == epoch and again.info().revision == 1
    await again.close()


@pytest.mark.parametrize(("policy", "same_epoch"), [("always", True), ("interval", False), ("never", False)])
async def test_epoch_after_an_unclean_stop(tmp_path: Path, policy: str, same_epoch: bool) -> None:
    live = tmp_path / "live"
    adapter = await opened(file_settings(live, fsync=policy))
    await adapter.set("s", "k", 1)
    await adapter.snapshot()  # everything on disk, the store still open (STORE says not clean)
    crashed = tmp_path / "crashed"
    shutil.copytree(live, crashed)
    await adapter.close()
    recovered = await opened(file_settings(crashed, fsync=policy))
    assert (recovered.info().epoch == adapter.info().epoch) is same_epoch
    assert recovered.info().revision == 1 and await recovered.list("s") == [1]
    await recovered.close()


async def test_auto_compaction_and_segment_rolls(tmp_path: Path) -> None:
    # fsync=always: every write waits for the flusher, which is where compaction is triggered
    settings = file_settings(tmp_path, fsync="always", compact_after_bytes=4096)
    adapter = KvAdapter(settings, engine_id="unit")
    adapter.segment_max_bytes = 1024
    await adapter.start()
    for i in range(400):
        await adapter.set(f"s{i % 3}", f"k{i % 50}", {"i": i})
        if i % 40 == 0:
            await adapter.delete("s0", "k0")
    expected = {s: await adapter.items(s) for s in await adapter.list_groups()}
    revision = adapter.info().revision
    await adapter.close()
    snapshots = sorted(tmp_path.glob("snap-*.snap"))
    assert len(snapshots) == 1  # older ones are removed
    assert not (tmp_path / f"wal-{1:020d}.log").exists()  # covered segments are removed
    again = await opened(settings)
    assert again.info().revision == revision
    assert {s: await again.items(s) for s in await again.list_groups()} == expected
    assert again.statistics()["kv_last_snapshot_revision"] > 0
    await again.close()


async def test_close_compacts_when_the_log_is_mostly_overwrites(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path, fsync="never"))
    for i in range(3000):
        await adapter.set("s", "hot", {"i": i, "pad": "x" * 20})
    await adapter.close()
    assert [p.name for p in tmp_path.glob("wal-*")] == []
    assert len(list(tmp_path.glob("snap-*"))) == 1
    again = await opened(file_settings(tmp_path, fsync="never"))
    entry = await again.get("s", "hot")
    assert entry is not None and entry.value["i"] == 2999 and entry.revision == 3000
    await again.set("s", "after", 1)
    assert again.info().revision == 3001
    await again.close()
    third = await opened(file_settings(tmp_path, fsync="never"))
    assert [k for k, _ in await third.items("s")] == ["hot", "after"]
    await third.close()


async def test_close_keeps_a_log_of_distinct_keys(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path, fsync="never"))
    for i in range(200):
        await adapter.set("s", f"k{i}", i)
    await adapter.close()
    assert list(tmp_path.glob("snap-*")) == []  # records == keys: a snapshot would not pay


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a condition the flusher makes true (bounded; never a fixed sleep)."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("policy", ["interval", "never"])
async def test_interval_and_never_write_without_fsync_until_due(tmp_path: Path, policy: str) -> None:
    adapter = await opened(file_settings(tmp_path, fsync=policy, save_interval_ms=600_000))
    for i in range(20):
        await adapter.set("s", f"k{i}", i)
        await asyncio.sleep(0)  # let the flusher take batches as a server's loop would
    await wait_for(lambda: adapter.statistics()["kv_write_buffer_bytes"] == 0)
    stats = adapter.statistics()
    assert stats["kv_log_bytes"] > 0 and stats["kv_fsyncs_total"] == 0
    await adapter.close()
    assert adapter.statistics()["kv_fsyncs_total"] == 1  # close syncs everything once


async def test_interval_fsyncs_once_the_interval_has_passed(tmp_path: Path) -> None:
    adapter = await opened(file_settings(tmp_path, fsync="interval", save_interval_ms=20))
    await adapter.set("s", "k", 1)
    assert adapter.statistics()["kv_fsyncs_total"] == 0  # acknowledged before any fsync
    await wait_for(lambda: adapter.statistics()["kv_fsyncs_total"] >= 1)
    await adapter.close()
