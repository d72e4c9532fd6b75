"""Redis going away: clear errors within the timeout, no lost acknowledged write, self-healing."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from adapters.redis import RedisAdapter
from gateway.errors import AdapterError, AdapterTimeout, AdapterUnavailable
from gateway.state.adapter import Change, WriteResult
from gateway.state.ops import increment_op
from tests.integration.conftest import AdapterFactory
from tests.integration.redis_server import RedisServer, free_port

T = TypeVar("T")

# Short timeouts keep the outage phases quick; the bound below is what "does not hang" means.
FAST = {"command_timeout_ms": 1000, "connect_timeout_ms": 300}
HANG_BOUND = 5.0


class Seen:
    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self.revisions: list[int] = []
        adapter.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        self.revisions.append(change.revision)

    async def until(self, revision: int) -> list[int]:
        await self.adapter.wait_delivered(revision, timeout=15)
        return self.revisions


async def bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(HANG_BOUND):
        return await call


async def test_start_fails_clearly_when_nothing_listens(redis_adapter_factory: AdapterFactory) -> None:
    port = free_port()
    with pytest.raises(AdapterUnavailable) as info:
        await bounded(redis_adapter_factory(f"redis://:hunter2@127.0.0.1:{port}/0", **FAST))
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "hunter2" not in message


async def test_outage_fails_fast_and_recovers_by_itself(
    redis_server_aof: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    server = redis_server_aof
    a = await redis_adapter_factory(server, engine_id="gw-a", **FAST)
    seen = Seen(a)
    await a.set("s", "k", 1)
    assert a.ready()
    await server.akill()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: a.get("s", "k"),
        lambda: a.set("s", "k", 2),
        lambda: a.update("s", "k", [increment_op("n", 1)]),
        lambda: a.delete("s", "k"),
        lambda: a.list("s"),
        lambda: a.list_groups(),
    ]
    for call in calls:
        with pytest.raises((AdapterUnavailable, AdapterTimeout)) as info:
            await bounded(call())
        assert f"127.0.0.1:{server.port}" in str(info.value)
    assert not a.ready()
    assert a.statistics()["redis_connected"] == 0
    await server.astart()
    # Nothing is asked of `a` now: a second gateway writes, and `a`'s tailer must find its way
    # back to Redis on its own and deliver the event.
    b = await redis_adapter_factory(server, engine_id="gw-b", **FAST)
    rev = (await b.set("s", "k", 3)).revision
    assert await seen.until(rev) == [1, 2]
    assert a.ready()
    assert a.statistics()["redis_reconnects_total"] >= 1
    got = await a.get("s", "k")
    assert got is not None and got.value == 3


async def test_hung_redis_times_out(redis_server: RedisServer, redis_adapter_factory: AdapterFactory) -> None:
    a = await redis_adapter_factory(redis_server, command_timeout_ms=300)
    await a.set("s", "k", 1)
    redis_server.pause()
    try:
        with pytest.raises(AdapterTimeout, match=r"did not answer get within 0\.3s"):
            await bounded(a.get("s", "k"))
        with pytest.raises(AdapterTimeout, match="may have been applied"):
            await bounded(a.set("s", "k", 2))
        assert not a.ready()
    finally:
        redis_server.resume()
    got = await a.get("s", "k")
    assert got is not None and got.value in (1, 2)  # the timed-out set may have run after SIGCONT
    assert a.ready()


async def test_close_with_redis_down_is_prompt(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await redis_adapter_factory(redis_server, **FAST)
    seen = Seen(a)
    await seen.until((await a.set("s", "k", 1)).revision)
    await redis_server.akill()
    with caplog.at_level(logging.WARNING, logger="adapters.redis.adapter"):
        await bounded(a.close())
        await bounded(a.close())
    assert not a.ready()
    with pytest.raises(AdapterUnavailable, match="closed"):
        await a.get("s", "k")


async def test_kill_and_restart_under_load_loses_no_acknowledged_write(
    redis_server_aof: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    server = redis_server_aof
    gateways = [await redis_adapter_factory(server, engine_id=f"gw-{n}", **FAST) for n in range(2)]
    seen = [Seen(g) for g in gateways]
    acked: dict[str, int] = {}  # key -> last acknowledged sequence number
    attempted: dict[str, int] = {}
    incs = Counter[str]()  # counter updates: acknowledged / attempted
    revisions: list[int] = []
    failures: list[BaseException] = []
    progress = asyncio.Event()
    stop = asyncio.Event()

    def note(result: WriteResult) -> None:
        revisions.append(result.revision)
        progress.set()

    async def set_writer(gateway: RedisAdapter, key: str) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            attempted[key] = seq
            try:
                note(await bounded(gateway.set("load", key, seq)))
                acked[key] = seq
            except (AdapterError, TimeoutError) as exc:
                failures.append(exc)
                progress.set()

    async def incrementer(gateway: RedisAdapter) -> None:
        while not stop.is_set():
            incs["attempted"] += 1
            try:
                note(await bounded(gateway.update("load", "counter", [increment_op("n", 1)])))
                incs["acked"] += 1
            except (AdapterError, TimeoutError) as exc:
                failures.append(exc)
                progress.set()

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not condition():
                progress.clear()
                await progress.wait()

    tasks = [
        asyncio.create_task(set_writer(g, f"{g.engine_id}-k{i}")) for g in gateways for i in range(3)
    ] + [asyncio.create_task(incrementer(g)) for g in gateways]
    try:
        await until(lambda: len(revisions) >= 200)
        await server.akill()
        await until(lambda: len(failures) >= 16)  # every writer is failing now
        assert not any(g.ready() for g in gateways)
        before_restart = len(revisions)
        await server.astart()
        await until(lambda: len(revisions) >= before_restart + 200)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    # Failures during the outage were the adapter's clear errors, never a hang or a crash.
    assert failures and all(isinstance(f, AdapterUnavailable | AdapterTimeout) for f in failures), {
        type(f).__name__ for f in failures
    }
    # No acknowledged write was lost (an unacknowledged one may or may not have landed).
    for key, seq in acked.items():
        stored = await gateways[0].get("load", key)
        assert stored is not None and seq <= stored.value <= attempted[key], (key, seq, stored)
    counter = await gateways[0].get("load", "counter")
    assert counter is not None and incs["acked"] <= counter.value["n"] <= incs["attempted"]
    # Each gateway saw the same events, without gap or duplicate, including every acked one.
    raw_final = server.command("GET", "iii-gateway:revision")
    assert isinstance(raw_final, bytes)
    final = int(raw_final)
    for s in seen:
        assert await s.until(final) == list(range(1, final + 1))
    assert set(revisions) <= set(range(1, final + 1)) and len(set(revisions)) == len(revisions)
    assert all(g.ready() for g in gateways)
    assert all(g.statistics()["redis_reconnects_total"] >= 1 for g in gateways)
