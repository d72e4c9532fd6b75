"""Several gateway processes on one Redis: shared state, shared change events, Redis outages.

Real ``redis-server`` (own port, own dir), real ``python -m gateway serve`` processes configured
with the redis adapter, real ``iii-sdk`` workers.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.redis_server import RedisServer
from tests.integration.sdk_helpers import (
    GatewayProcess,
    Inbox,
    bind,
    call,
    connect_worker,
    expect_error,
    roundtrip,
    shutdown,
)

pytestmark = pytest.mark.slow


class RedisGateway(GatewayProcess):
    """A gateway process whose state lives in the given Redis."""

    def __init__(self, data_dir: Path, redis_url: str, **kw: Any) -> None:
        super().__init__(data_dir, **kw)
        self.config = data_dir / "gateway.yaml"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
            f"        config: {{redis_url: '{redis_url}',\n"
            "                  command_timeout_ms: 1000, connect_timeout_ms: 1000}\n"
        )

    def command(self) -> list[str]:
        base = super().command()
        cut = base.index("--store")  # the redis config replaces the kv flags
        return [*base[:cut], "--data-dir", str(self.data_dir), "-c", str(self.config)]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def pair(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[RedisGateway, RedisGateway]]:
    a = RedisGateway(tmp_path / "a", redis.url)
    b = RedisGateway(tmp_path / "b", redis.url)
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


async def test_write_on_one_gateway_fires_trigger_on_the_other_once_in_order(
    pair: tuple[RedisGateway, RedisGateway], redis: RedisServer
) -> None:
    a, b = pair
    watcher = await connect_worker(a.worker_url, "watcher")
    writer = await connect_worker(b.worker_url, "writer")
    inbox = Inbox()
    try:
        watcher.register_function("test::on_change", inbox.recorder({}))
        bind(watcher, "state", "test::on_change", {"scope": "shared"})
        await roundtrip(watcher)
        revisions = []
        for i in range(30):
            res = await call(writer, "state::set", {"scope": "shared", "key": "k", "value": i})
            revisions.append(res["revision"])
        seen = [await inbox.get() for _ in range(30)]
        events = [data for data, _ in seen]
        assert [e["new_value"] for e in events] == list(range(30))
        assert [e["revision"] for e in events] == revisions
        assert all(e["scope"] == "shared" and e["key"] == "k" for e in events)
        assert events[0]["event_type"] == "state:created"
        assert {e["event_type"] for e in events[1:]} == {"state:updated"}
        # the writing gateway's id is the origin; nothing more arrives (exactly once)
        await call(writer, "state::set", {"scope": "other", "key": "fence", "value": 1})
        assert len({e["origin"] for e in events}) == 1
        assert inbox.empty()
        # reference layout: plain HGET sees the JSON text
        assert json.loads(redis.command("HGET", "state:shared", "k")) == 29  # type: ignore[arg-type]
    finally:
        await shutdown(watcher, writer)


async def test_concurrent_increments_through_two_gateways_sum_exactly(
    pair: tuple[RedisGateway, RedisGateway],
) -> None:
    a, b = pair
    workers = [await connect_worker(gw.worker_url, f"w{i}") for i, gw in enumerate((a, b, a, b))]
    op = {"scope": "counters", "key": "c", "ops": [{"type": "increment", "path": "n", "by": 1}]}
    try:
        await asyncio.gather(*(call(w, "state::update", op) for w in workers for _ in range(25)))
        assert await call(workers[0], "state::get", {"scope": "counters", "key": "c"}) == {"n": 100}
    finally:
        await shutdown(*workers)


async def test_redis_outage_fails_calls_cleanly_and_recovers(
    pair: tuple[RedisGateway, RedisGateway], redis: RedisServer
) -> None:
    a, _ = pair
    worker = await connect_worker(a.worker_url, "w", invocation_timeout_ms=8000)
    try:
        await call(worker, "state::set", {"scope": "s", "key": "before", "value": 1})
        redis.kill()
        err = await expect_error(worker, "state::set", {"scope": "s", "key": "during", "value": 2})
        assert err.code in ("UPSTREAM_UNAVAILABLE", "TIMEOUT"), err
        assert await asyncio.to_thread(http_status, a.http_url + "/readyz") == 503
        assert await asyncio.to_thread(http_status, a.http_url + "/healthz") == 200
        redis.start()
        # recovers by itself: poll readiness (an event we cannot await directly), bounded
        for _ in range(200):
            if await asyncio.to_thread(http_status, a.http_url + "/readyz") == 200:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(http_status, a.http_url + "/readyz") == 200
        assert await call(worker, "state::get", {"scope": "s", "key": "before"}) == 1  # AOF kept it
        await call(worker, "state::set", {"scope": "s", "key": "after", "value": 3})
        assert await call(worker, "state::get", {"scope": "s", "key": "after"}) == 3
    finally:
        await shutdown(worker)
