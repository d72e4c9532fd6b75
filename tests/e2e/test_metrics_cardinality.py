"""/metrics stays bounded however many scopes and keys are written: no label carries a scope,
key, peer address or id.

Real processes from the deploy configs (``tests/e2e/fleet.py``): a central gateway on Redis and
a region gateway bridged to it, with the link listener on both. After a warm-up that uses
every kind of call once per path, the series of both gateways' ``/metrics`` are recorded; then
10,000 distinct scopes, each with its own key, are written through the region's link (a real
authenticated link client, pipelined), plus gets, updates and deletes of distinct keys and 200
more distinct scopes through an ``iii-sdk`` worker connected to the region, every one of them
relayed back from the central. The set of series afterwards may differ from the one before by
a few at most, and no label value anywhere mentions a scope or key that was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from iii.iii import III
from prometheus_client.parser import text_string_to_metric_families

from gateway.link import DeleteArgs, GetArgs, ListArgs, ListGroupsArgs, SetArgs
from gateway.link.client import LinkClient, connect
from gateway.link.requests import RequestArgs, UpdateArgs
from tests.e2e.fleet import ConfiguredGateway, Fleet
from tests.helpers.prometheus import wait_until
from tests.integration.redis_server import RedisServer, redis_available
from tests.integration.sdk_helpers import bind, call, connect_worker, expect_error, shutdown

pytestmark = pytest.mark.slow

DISTINCT = 10_000
VIA_WORKER = 200
BATCH = 500  # requests in flight at once on the link
MAX_NEW_SERIES = 5  # per gateway; a few standard series may appear (e.g. a GC generation count)

Series = frozenset[tuple[str, frozenset[tuple[str, str]]]]


def series(gw: ConfiguredGateway) -> Series:
    found = set()
    for family in text_string_to_metric_families(gw.metrics_text()):
        for sample in family.samples:
            found.add((sample.name, frozenset(sample.labels.items())))
    return frozenset(found)


def value(gw: ConfiguredGateway, name: str) -> float:
    return sum(v for n, labels, v in _samples(gw) if n == name)


def _samples(gw: ConfiguredGateway) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(gw.metrics_text()):
        for s in family.samples:
            yield s.name, s.labels, float(s.value)


async def in_batches(client: LinkClient, requests: list[RequestArgs]) -> None:
    for start in range(0, len(requests), BATCH):
        await asyncio.gather(*(client.request(r) for r in requests[start : start + BATCH]))


def calls(prefix: str, n: int) -> dict[str, list[RequestArgs]]:
    """set for each of n distinct scope/key pairs, and get/update/delete/list on some of them."""
    return {
        "set": [SetArgs(f"{prefix}-{i}", f"key-{prefix}-{i}", {"i": i}) for i in range(n)],
        "get": [GetArgs(f"{prefix}-{i}", f"key-{prefix}-{i}") for i in range(0, n, 10)],
        "update": [
            UpdateArgs(f"{prefix}-{i}", f"key-{prefix}-{i}", ({"type": "increment", "path": "i", "by": 1},))
            for i in range(0, n, 20)
        ],
        "delete": [DeleteArgs(f"{prefix}-{i}", f"key-{prefix}-{i}") for i in range(1, n, 20)],
        "list": [ListArgs(f"{prefix}-{i}") for i in range(0, n, 100)],
    }


async def run(client: LinkClient, batch: dict[str, list[RequestArgs]]) -> int:
    """Run the calls; the number of changes (events) they make."""
    await in_batches(client, batch["set"])
    await in_batches(client, batch["get"] + batch["update"] + batch["list"])
    await in_batches(client, batch["delete"])
    await client.request(ListGroupsArgs())
    return len(batch["set"]) + len(batch["update"]) + len(batch["delete"])


async def worker_writes(worker: III, prefix: str, n: int) -> int:
    for i in range(n):
        await call(worker, "state::set", {"scope": f"{prefix}-{i}", "key": f"wkey-{prefix}-{i}", "value": i})
    await call(worker, "state::get", {"scope": f"{prefix}-0", "key": f"wkey-{prefix}-0"})
    await expect_error(worker, "state::set", {"key": "missing-scope"})
    return n


async def test_series_stay_bounded_after_ten_thousand_distinct_scopes_and_keys(tmp_path: Path) -> None:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    fleet = Fleet(tmp_path, redis.url, members=("central", "region"))
    try:
        await asyncio.to_thread(fleet.start)
        central, region = fleet.central, fleet.region
        worker = await connect_worker(region.worker_url, "cardinality")
        assert region.link_port is not None
        client = await connect(
            "127.0.0.1",
            region.link_port,
            private_key=fleet.keys["edge"].key,
            client_id="edge",
            server_key=fleet.keys["region"].key.public_key(),
        )
        try:
            worker.register_function("app::watched", lambda data: None)
            bind(worker, "state", "app::watched", {"scope": "warm-0"})
            relayed_before = value(region, "iii_gateway_events_relayed_total")

            # Warm-up: every path and op once, with their own scopes.
            changes = await run(client, calls("warm", 40))
            changes += await worker_writes(worker, "wwarm", 5)
            await asyncio.to_thread(
                wait_until,
                lambda: value(region, "iii_gateway_events_relayed_total") >= relayed_before + changes,
                20,
                "the warm-up's events to be relayed",
            )
            before = {gw.name: series(gw) for gw in (central, region)}

            changes += await run(client, calls("card", DISTINCT))
            changes += await worker_writes(worker, "wcard", VIA_WORKER)
            await asyncio.to_thread(
                wait_until,
                lambda: value(region, "iii_gateway_events_relayed_total") >= relayed_before + changes,
                60,
                "every write to be relayed back to the region",
            )
            after = {gw.name: series(gw) for gw in (central, region)}
        finally:
            await client.aclose()
            await shutdown(worker)

        assert value(central, "iii_gateway_redis_revision") >= changes
        for name in ("central", "region"):
            new = after[name] - before[name]
            assert len(new) <= MAX_NEW_SERIES, f"{name}: {len(new)} new series, e.g. {sorted(new)[:10]}"
            assert len(after[name]) < 2000, f"{name} exposes {len(after[name])} series"
            for metric, labels in after[name]:
                for label, text in labels:
                    assert not any(word in text for word in ("card-", "key-", "warm-", "wcard-")), (
                        f"{name}: {metric} label {label}={text!r} carries a scope or key"
                    )
    finally:
        codes = await asyncio.to_thread(fleet.stop)
        redis.kill()
    assert set(codes.values()) == {0}
