"""Benchmark of the edge features of the Bridge: the read cache and the offline outbox.

    python -m bench.bench_edge                 # defaults: 5k gets per row, 1k queued writes
    python -m bench.bench_edge --ops 2000 --queued 500

A central gateway runs as a real process (``python -m gateway serve``, embedded kv in memory,
link on); this process is the edge. Rows:

- **get, cache hot vs through the link**: one caller reading 100 keys the edge's cache holds
  (relay live), against the same reads on a Bridge with the cache off (every get crosses the
  link). The ratio is what the cache buys a worker on the edge.
- **outbox**: writes queued while the central is unreachable (each fsynced before it is
  acknowledged), then the replay once the link is back: queued writes/s reaching the central,
  in order, one request at a time.

Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from adapters.bridge import BridgeAdapter
from bench.summary import result
from gateway.config.settings import BridgeCacheSettings, BridgeOutboxSettings, BridgeSettings, Endpoint
from tests.helpers.federation import KeyFile, Peer, bridge_settings, fast_backoff, write_key
from tests.helpers.gateway_procs import FedGateway
from tests.helpers.tcp_proxy import TcpProxy

KEYS = 100


def _settings(key: KeyFile, central: FedGateway, port: int, **changes: object) -> BridgeSettings:
    base = bridge_settings(key, [("central", [Endpoint("tcp", "127.0.0.1", port)], central.public, ["*"])])
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def _gets(bridge: BridgeAdapter, ops: int) -> dict[str, float]:
    times: list[float] = []
    started = time.perf_counter()
    for i in range(ops):
        t0 = time.perf_counter()
        await bridge.get("bench", f"k{i % KEYS}")
        times.append(time.perf_counter() - t0)
    took = time.perf_counter() - started
    return {"ops_s": ops / took, "p50_us": statistics.median(times) * 1e6}


async def bench_cache(
    central: FedGateway, key: KeyFile, ops: int
) -> tuple[dict[str, float], dict[str, float]]:
    assert central.link_port is not None
    on = BridgeAdapter(
        _settings(key, central, central.link_port, cache=BridgeCacheSettings(enabled=True)),
        engine_id="bench-edge",
    )
    off = BridgeAdapter(
        _settings(key, central, central.link_port, cache=BridgeCacheSettings(enabled=False)),
        engine_id="bench-edge-nocache",
    )
    await on.start()
    await off.start()
    try:
        for i in range(KEYS):
            await on.set("bench", f"k{i}", {"n": i})
        await _gets(on, KEYS)  # every key in the cache (our writes, their events)
        hot = await _gets(on, ops)
        link = await _gets(off, ops)
    finally:
        await on.close()
        await off.close()
    return hot, link


async def bench_outbox(central: FedGateway, key: KeyFile, root: Path, queued: int) -> dict[str, float]:
    assert central.link_port is not None
    proxy = TcpProxy(central.link_port)
    await proxy.start()
    proxy.refuse = True
    settings = _settings(
        key,
        central,
        proxy.port,
        outbox=BridgeOutboxSettings(enabled=True, path=str(root / "outbox"), max_entries=queued + 1),
        timeout_ms=1000,
    )
    bridge = BridgeAdapter(settings, engine_id="bench-outbox", backoff=fast_backoff)
    await bridge.start()
    try:
        started = time.perf_counter()
        for i in range(queued):
            await bridge.set("queued", f"k{i % KEYS}", {"n": i})
        queue_s = time.perf_counter() - started
        proxy.refuse = False
        started = time.perf_counter()
        while bridge.statistics()["outbox_entries"]:
            await asyncio.sleep(0.005)
        replay_s = time.perf_counter() - started
    finally:
        await bridge.close()
        await proxy.stop()
    return {"queue_s": queued / queue_s, "replay_s": queued / replay_s}


async def run(ops: int, queued: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = write_key(root / "keys", "bench")
        central = FedGateway(
            root / "central",
            "central",
            adapter={"name": "kv", "config": {"store_method": "in_memory"}},
            peers=[Peer("bench", key)],
        )
        central.start()
        try:
            await central.ready()
            print(f"bench_edge: {ops} gets per row, {queued} queued writes")
            hot, link = await bench_cache(central, key, ops)
            box = await bench_outbox(central, key, root, queued)
        finally:
            await central.stop()
    print(f"{'row':<28}{'ops/s':>12}{'p50 us':>10}")
    print(f"{'edge get, cache hot':<28}{hot['ops_s']:>12,.0f}{hot['p50_us']:>10.1f}")
    print(f"{'edge get, through the link':<28}{link['ops_s']:>12,.0f}{link['p50_us']:>10.1f}")
    print(f"cache speed-up: {hot['ops_s'] / link['ops_s']:.1f}x")
    queue_rate, replay_rate = box["queue_s"], box["replay_s"]
    print(f"outbox: queued {queue_rate:,.0f} writes/s (fsync each), replayed {replay_rate:,.0f} writes/s")
    result(
        "edge",
        "get cache hot",
        hot["ops_s"],
        "ops/s",
        anchor="get through the link",
        anchor_value=link["ops_s"],
    )
    result("edge", "outbox queue", box["queue_s"], "writes/s")
    result("edge", "outbox replay", box["replay_s"], "writes/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--queued", type=int, default=1000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.ops, args.queued))


if __name__ == "__main__":
    main()
