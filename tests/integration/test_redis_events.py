"""Change events across gateways sharing one Redis: once each, in order, resumable."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.redis import RedisAdapter
from gateway.errors import AdapterError
from gateway.state.adapter import Change, ChangeKind
from gateway.state.ops import increment_op
from tests.integration.conftest import AdapterFactory, RedisFactory
from tests.integration.redis_server import RedisServer


class Seen:
    """Records every change one adapter delivers."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self.changes: list[Change] = []
        self._arrived = asyncio.Event()
        adapter.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        self.changes.append(change)
        self._arrived.set()

    async def count(self, n: int) -> list[Change]:
        async with asyncio.timeout(10):
            while len(self.changes) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.changes

    @property
    def revisions(self) -> list[int]:
        return [c.revision for c in self.changes]

    async def until(self, revision: int) -> list[Change]:
        await self.adapter.wait_delivered(revision, timeout=10)
        return self.changes


def assert_contiguous(revisions: list[int]) -> None:
    """No gap and no duplicate: each revision is the previous one plus one."""
    assert revisions == list(range(revisions[0], revisions[0] + len(revisions))), revisions


async def test_each_write_reaches_every_gateway_once_in_order(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, engine_id="gw-a")
    b = await redis_adapter_factory(redis_server, engine_id="gw-b")
    seen_a, seen_b = Seen(a), Seen(b)
    results = []
    for i in range(20):
        writer = a if i % 2 == 0 else b
        results.append(await writer.set("s", f"k{i % 3}", i))
    results.append(await a.update("s", "k0", [increment_op("n", 1)]))
    results.append(await b.delete("s", "k1"))
    last = results[-1].revision
    changes_a, changes_b = await seen_a.until(last), await seen_b.until(last)
    assert [r.revision for r in results] == list(range(1, 23))
    assert seen_a.revisions == seen_b.revisions == list(range(1, 23))
    assert changes_a == changes_b
    assert [c.origin for c in changes_a[:4]] == ["gw-a", "gw-b", "gw-a", "gw-b"]
    assert changes_a[0].kind is ChangeKind.CREATED and changes_a[3].kind is ChangeKind.UPDATED
    assert changes_a[3].old_value == 0 and changes_a[3].new_value == 3
    assert changes_a[-1].kind is ChangeKind.DELETED and changes_a[-1].key == "k1"
    assert a.statistics()["redis_events_delivered_total"] == 22


async def test_concurrent_increments_through_two_gateways_sum_exactly(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, engine_id="gw-a")
    b = await redis_adapter_factory(redis_server, engine_id="gw-b")
    seen_a = Seen(a)
    per_adapter = 150
    results = await asyncio.gather(
        *(ad.update("c", "n", [increment_op("count", 1)]) for ad in (a, b) for _ in range(per_adapter))
    )
    entry = await a.get("c", "n")
    assert entry is not None and entry.value == {"count": 2 * per_adapter}
    # Every update saw a distinct predecessor: the old counts are exactly 0 .. total-1.
    olds = sorted(0 if r.old_value is None else r.old_value["count"] for r in results)
    assert olds == list(range(2 * per_adapter))
    await seen_a.until(max(r.revision for r in results))
    assert_contiguous(seen_a.revisions)
    assert [c.new_value["count"] for c in seen_a.changes] == list(range(1, 2 * per_adapter + 1))


async def test_cas_give_up_never_loses_or_invents_an_increment(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, engine_id="gw-a")
    b = await redis_adapter_factory(redis_server, engine_id="gw-b")
    a.cas_max_retries = b.cas_max_retries = 0  # any conflict is a failure now
    outcomes = await asyncio.gather(
        *(ad.update("c", "n", [increment_op("count", 1)]) for ad in (a, b) for _ in range(100)),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(f, AdapterError) and "gave up" in str(f) for f in failures)
    entry = await a.get("c", "n")
    assert entry is not None and entry.value == {"count": len(outcomes) - len(failures)}
    stats = a.statistics()["redis_cas_exhausted_total"] + b.statistics()["redis_cas_exhausted_total"]
    assert stats == len(failures)


async def test_restarted_gateway_resumes_without_gap_or_duplicate(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    writer = await redis_adapter_factory(redis_server, engine_id="writer")
    first = await redis_adapter_factory(redis_server, engine_id="watcher")
    seen_first = Seen(first)
    for i in range(5):
        last = (await writer.set("s", "k", i)).revision
    await seen_first.until(last)
    await first.close()  # saves its position, with an expiry so abandoned ids do not pile up
    assert redis_server.command("GET", "iii-gateway:cursor:watcher") == f"{first.info().epoch}:5".encode()
    ttl = redis_server.command("TTL", "iii-gateway:cursor:watcher")
    assert isinstance(ttl, int) and 0 < ttl <= first.cursor_ttl
    for i in range(5, 12):  # written while the watcher is down
        last = (await writer.set("s", "k", i)).revision
    second = await redis_adapter_factory(redis_server, engine_id="watcher", start=False)
    seen_second = Seen(second)
    await second.start()
    for i in range(12, 15):
        last = (await writer.set("s", "k", i)).revision
    await seen_second.until(last)
    assert seen_first.revisions == [1, 2, 3, 4, 5]
    assert seen_second.revisions == list(range(6, 16))
    assert [c.new_value for c in seen_second.changes] == list(range(5, 15))
    # A new engine id starts at the present: no replay of history it never promised.
    fresh = await redis_adapter_factory(redis_server, engine_id="fresh")
    seen_fresh = Seen(fresh)
    rev = (await writer.delete("s", "k")).revision
    await seen_fresh.until(rev)
    assert seen_fresh.revisions == [rev]


async def test_trimmed_stream_is_reported_as_a_counted_gap(
    redis_factory: RedisFactory, redis_adapter_factory: AdapterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Small stream nodes so MAXLEN ~ trims close to the bound.
    server = redis_factory(extra_args=["--stream-node-max-entries", "4"])
    writer = await redis_adapter_factory(server, engine_id="writer", stream_max_len=8)
    watcher = await redis_adapter_factory(server, engine_id="watcher")
    await watcher.close()  # position 0 saved
    for i in range(60):
        last = (await writer.set("s", f"k{i}", i)).revision
    length = server.command("XLEN", "iii-gateway:events")
    assert isinstance(length, int) and length < 20
    again = await redis_adapter_factory(server, engine_id="watcher", start=False)
    seen = Seen(again)
    with caplog.at_level(logging.ERROR, logger="adapters.redis.events"):
        await again.start()
        await seen.until(last)
    missed = seen.revisions[0] - 1
    assert missed > 0 and again.statistics()["redis_events_missed_total"] == missed
    assert_contiguous(seen.revisions)
    assert seen.revisions[-1] == last
    assert any("trimmed" in r.getMessage() for r in caplog.records)


async def test_flushed_store_gets_a_new_epoch_and_history(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, engine_id="gw-a")
    seen = Seen(a)
    old_epoch = a.info().epoch
    await seen.until((await a.set("s", "k", 1)).revision)
    redis_server.command("FLUSHALL")
    result = await a.set("s", "k", 2)  # refused under the old epoch, retried under the new one
    assert (result.existed, result.revision) == (False, 1)
    assert a.info().epoch != old_epoch
    assert redis_server.command("GET", "iii-gateway:epoch") == a.info().epoch.encode()
    changes = await seen.count(2)  # the tailer notices the new epoch on its next round
    assert [(c.revision, c.new_value) for c in changes] == [(1, 1), (1, 2)]
    assert a.statistics()["redis_epoch_changes_total"] == 1


async def test_a_failing_sink_does_not_stop_delivery(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server)

    def broken(change: Change) -> None:
        raise RuntimeError("sink bug")

    a.subscribe(broken)
    seen = Seen(a)
    await a.set("s", "k", 1)
    rev = (await a.set("s", "k", 2)).revision
    await seen.until(rev)
    assert seen.revisions == [1, 2]
    assert a.statistics()["redis_event_sink_errors_total"] == 2


async def test_foreign_stream_entry_is_skipped_and_never_splits_a_write(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server)
    seen = Seen(a)
    await a.set("s", "k", 1)
    # Something else appends to our stream, taking the next id.
    redis_server.command("XADD", "iii-gateway:events", "2-0", "foo", "bar")
    with pytest.raises(AdapterError, match="XADD"):
        await a.set("s", "k", 2)  # its revision (2) cannot be appended: nothing is written
    entry = await a.get("s", "k")
    assert entry is not None and (entry.value, entry.revision) == (1, 1)
    rev = (await a.set("s", "k", 3)).revision
    await seen.until(rev)
    assert (rev, seen.revisions) == (3, [1, 3])
    stats = a.statistics()
    assert (stats["redis_bad_events_total"], stats["redis_events_missed_total"]) == (1, 0)
