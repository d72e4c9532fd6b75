"""Benchmark of the federation link and the Bridge, against Redis on the same machine, same run.

    python -m bench.bench_link                  # defaults: 20k ops per row, 1,000 watching links
    python -m bench.bench_link --ops 5000 --edges 200

A central gateway runs as a real process (``python -m gateway serve``, embedded kv in memory,
link on); this process is the edge. Rows, each next to its anchor measured in the same run:

- **Bridge set/get, 50 callers**: a ``BridgeAdapter`` (relay on, as deployed) with 50 concurrent
  unpipelined callers, vs ``redis-benchmark -c 50`` on a redis-server started here.
- **Link set/get**: the same callers on one bare ``LinkClient`` (no Bridge, so no read cache:
  every get crosses the link). The added latency of one hop is its single-caller get p50 minus
  the local kv store's (the Bridge's own get may be served from its cache).
- **Link pipelined**: 4 links x 256 requests in flight (``get``), vs ``redis-benchmark -P 16``.
- **Relay**: a writer process floods the central; events/s arriving at the edge's change sinks
  (what feeds local triggers). Then the writer paces 1,000 writes/s with its send time in the
  value: commit-to-sink latency p50/p99 (the write's own hop included, so it is an upper bound).
- **Fan-out**: ``--edges`` links each watching ``*`` on the central; one write; the time until
  every link has the event (measured at the last arrival in this process).

``--codec`` instead measures the sans-IO link alone, in this process, in CPU time (so a busy
shared machine moves it far less than the socket rows): microseconds per message for each end
of a get, a set and a watch event (the event sent to 100 watches of one change).

Numbers, not pass/fail. DESIGN section 8 targets: pipelined >= 100k ops/s; Bridge 50 callers
>= 0.5x redis-benchmark -c 50 and <= 250 us added p50 per hop; relay >= 50k events/s and p99
<= 5 ms at 1k events/s; 1,000 links, one event to all <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.bridge import BridgeAdapter
from adapters.kv.store import KvAdapter
from bench.summary import result
from gateway.config.settings import Endpoint, KvSettings
from gateway.link import GetArgs, SetArgs, WatchArgs, load_private_key, parse_public_key
from gateway.link.client import LinkClient, connect
from gateway.link.events import RequestReceived
from gateway.link.messages import WatchEvent
from gateway.state.adapter import Change, ChangeKind
from tests.helpers.federation import KeyFile, Peer, bridge_settings, write_key
from tests.helpers.gateway_procs import FedGateway
from tests.helpers.link_pair import LinkPair, drain
from tests.integration.redis_server import RedisServer

CALLERS = 50
VALUE = {"id": 1, "name": "user-1", "active": True, "score": 0.5}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _redis_benchmark(port: int, ops: int, *, callers: int, pipeline: int = 1) -> dict[str, float]:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {}
    argv = [exe, "-p", str(port), "-t", "set,get", "-c", str(callers), "-n", str(ops), "-P", str(pipeline)]
    argv += ["-d", str(len(json.dumps(VALUE))), "-r", "100000", "--csv"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = {row["test"].lower(): row for row in csv.DictReader(io.StringIO(out))}
    return {
        "set": float(rows["set"]["rps"]),
        "get": float(rows["get"]["rps"]),
        "get_p50_us": float(rows["get"]["p50_latency_ms"]) * 1000,
    }


async def _callers(n: int, callers: int, op: Any) -> dict[str, float]:
    lat: list[float] = []
    per = n // callers

    async def caller(c: int) -> None:
        for i in range(per):
            t = time.perf_counter()
            await op(c * per + i)
            lat.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    total = time.perf_counter() - started
    return {"ops_s": per * callers / total, "p50_us": _pct(lat, 0.5) * 1e6, "p99_us": _pct(lat, 0.99) * 1e6}


async def _client(port: int, key: KeyFile, central: FedGateway, name: str) -> LinkClient:
    return await connect(
        "127.0.0.1",
        port,
        private_key=key.key,
        client_id=name,
        server_key=parse_public_key(central.public),
        timeout=30,
    )


async def bench_bridge(central: FedGateway, key: KeyFile, ops: int) -> dict[str, dict[str, float]]:
    assert central.link_port is not None
    settings = bridge_settings(
        key, [("central", [Endpoint("tcp", "127.0.0.1", central.link_port)], central.public, ["*"])]
    )
    bridge = BridgeAdapter(settings, engine_id="bench-edge")
    events = 0

    def sink(change: Change) -> None:
        nonlocal events
        events += 1

    bridge.subscribe(sink)
    await bridge.start()
    local = KvAdapter(KvSettings(store_method="in_memory"), engine_id="local")
    await local.start()
    rows: dict[str, dict[str, float]] = {}
    try:
        rows["bridge set x50"] = await _callers(
            ops, CALLERS, lambda i: bridge.set("bench", str(i % 1000), VALUE)
        )
        rows["bridge get x50"] = await _callers(ops, CALLERS, lambda i: bridge.get("bench", str(i % 1000)))
        rows["bridge get x1"] = await _callers(
            min(ops, 5000), 1, lambda i: bridge.get("bench", str(i % 1000))
        )
        link = await _client(central.link_port, key, central, "bench-link")
        try:
            rows["link set x50"] = await _callers(
                ops, CALLERS, lambda i: link.request(SetArgs("bench", str(i % 1000), VALUE))
            )
            rows["link get x50"] = await _callers(
                ops, CALLERS, lambda i: link.request(GetArgs("bench", str(i % 1000)))
            )
            rows["link get x1"] = await _callers(
                min(ops, 5000), 1, lambda i: link.request(GetArgs("bench", str(i % 1000)))
            )
        finally:
            await link.aclose()
        await local.set("bench", "k", VALUE)
        rows["local kv get x1"] = await _callers(min(ops, 5000), 1, lambda i: local.get("bench", "k"))
    finally:
        await bridge.close()
        await local.close()
    return rows


async def bench_pipelined(central: FedGateway, key: KeyFile, ops: int) -> dict[str, float]:
    assert central.link_port is not None
    clients = [await _client(central.link_port, key, central, f"pipe-{i}") for i in range(4)]
    args = GetArgs("bench", "1")
    depth = 256
    rounds = max(1, ops // (depth * len(clients)))

    async def run(client: LinkClient) -> None:
        for _ in range(rounds):
            await asyncio.gather(*[client.request(args) for _ in range(depth)])

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    total = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    return {"ops_s": rounds * depth * len(clients) / total}


def _writer_process(
    port: int, key: Path, central_key: str, mode: str, count: int, rate: float
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench.bench_link", "--writer", mode, "--port", str(port)]
    argv += ["--key", str(key), "--central-key", central_key, "--count", str(count), "--rate", str(rate)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


async def _writer_main(args: argparse.Namespace) -> None:
    """Child mode: write ``count`` sets to the central, flat out or paced at ``rate``/s."""
    client = await connect(
        "127.0.0.1",
        args.port,
        private_key=load_private_key(args.key),
        client_id="bench-writer",
        server_key=parse_public_key(args.central_key),
    )
    if args.writer == "flood":
        depth = 128
        for start in range(0, args.count, depth):
            n = min(depth, args.count - start)
            await asyncio.gather(
                *[client.request(SetArgs("relay", str(start + i), start + i)) for i in range(n)]
            )
    else:
        interval = 1.0 / args.rate
        t0 = time.perf_counter()
        for i in range(args.count):
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.request(SetArgs("paced", str(i), {"t": time.time()}))
    await client.aclose()


async def bench_relay(central: FedGateway, key: KeyFile, count: int) -> dict[str, float]:
    assert central.link_port is not None
    settings = bridge_settings(
        key, [("central", [Endpoint("tcp", "127.0.0.1", central.link_port)], central.public, ["*"])]
    )
    bridge = BridgeAdapter(settings, engine_id="bench-relay")
    arrivals: list[float] = []
    latencies: list[float] = []
    done = asyncio.Event()
    expect = {"relay": count, "paced": 0}

    def sink(change: Change) -> None:
        if change.scope == "relay":
            arrivals.append(time.perf_counter())
            if len(arrivals) >= expect["relay"]:
                done.set()
        elif change.scope == "paced":
            latencies.append(time.time() - change.new_value["t"])
            if len(latencies) >= expect["paced"]:
                done.set()

    bridge.subscribe(sink)
    await bridge.start()
    try:
        writer = _writer_process(central.link_port, key.path, central.public, "flood", count, 0)
        await asyncio.wait_for(done.wait(), 300)
        await asyncio.to_thread(writer.wait)
        span = arrivals[-1] - arrivals[0]
        events_s = (len(arrivals) - 1) / span if span > 0 else float("nan")
        paced = min(3000, count)
        expect["paced"] = paced
        done.clear()
        writer = _writer_process(central.link_port, key.path, central.public, "paced", paced, 1000)
        await asyncio.wait_for(done.wait(), 300)
        await asyncio.to_thread(writer.wait)
    finally:
        await bridge.close()
    return {
        "events_s": events_s,
        "p50_ms": _pct(latencies, 0.5) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
    }


class _Arrival:
    def __init__(self, times: list[float]) -> None:
        self.times = times

    def on_event(self, event: WatchEvent) -> None:
        self.times.append(time.perf_counter())

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        pass

    def on_progress(self, revision: int) -> None:
        pass


async def bench_fanout(central: FedGateway, key: KeyFile, edges: int, rounds: int = 5) -> dict[str, float]:
    assert central.link_port is not None
    port = central.link_port
    clients: list[LinkClient] = []
    for start in range(0, edges, 100):
        clients += await asyncio.gather(
            *(_client(port, key, central, f"edge-{i}") for i in range(start, min(edges, start + 100)))
        )
    times: list[float] = []
    for client in clients:
        client.watch(WatchArgs(("fan",)), _Arrival(times))
    writer = await _client(port, key, central, "fan-writer")
    await writer.request(GetArgs("fan", "warm-up"))
    spans: list[float] = []
    for r in range(rounds):
        times.clear()
        sent = time.perf_counter()
        await writer.request(SetArgs("fan", str(r), r))
        async with asyncio.timeout(60):
            while len(times) < edges:
                await asyncio.sleep(0.001)
        spans.append(max(times) - sent)
    for client in [*clients, writer]:
        await client.aclose()
    return {"median_ms": statistics.median(spans) * 1000, "max_ms": max(spans) * 1000}


async def run(ops: int, edges: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = write_key(root / "keys", "bench")
        central = FedGateway(
            root / "central",
            "central",
            adapter={"name": "kv", "config": {"store_method": "in_memory"}},
            peers=[Peer("bench", key)],
        )
        redis = RedisServer(root / "redis")
        redis.start()
        central.start()
        try:
            await central.ready()
            print(f"bench_link: {ops} ops per row, {CALLERS} callers, {edges} watching links")
            anchor = await asyncio.to_thread(_redis_benchmark, redis.port, ops, callers=CALLERS)
            anchor_p16 = await asyncio.to_thread(
                _redis_benchmark, redis.port, ops * 5, callers=CALLERS, pipeline=16
            )
            rows = await bench_bridge(central, key, ops)
            piped = await bench_pipelined(central, key, ops * 5)
            relay = await bench_relay(central, key, ops * 2)
            fan = await bench_fanout(central, key, edges)
        finally:
            await central.stop()
            redis.kill()

    print(f"{'row':<24}{'ops/s':>12}{'p50 us':>10}{'p99 us':>10}")
    for name, row in rows.items():
        print(f"{name:<24}{row['ops_s']:>12,.0f}{row['p50_us']:>10.0f}{row['p99_us']:>10.0f}")
    if anchor:
        print(f"{'redis-benchmark -c50 set':<24}{anchor['set']:>12,.0f}")
        print(f"{'redis-benchmark -c50 get':<24}{anchor['get']:>12,.0f}{anchor['get_p50_us']:>10.0f}")
        print(f"{'redis-benchmark -P16 get':<24}{anchor_p16['get']:>12,.0f}")
    print(f"{'link pipelined get':<24}{piped['ops_s']:>12,.0f}")
    hop = rows["link get x1"]["p50_us"] - rows["local kv get x1"]["p50_us"]
    print(f"added p50 per hop: {hop:.0f} us")
    print(f"relay: {relay['events_s']:,.0f} events/s; at 1k/s commit->sink p50 {relay['p50_ms']:.2f} ms, "
          f"p99 {relay['p99_ms']:.2f} ms")  # fmt: skip
    print(f"fan-out to {edges} links: median {fan['median_ms']:.1f} ms, max {fan['max_ms']:.1f} ms")

    for op in ("set", "get"):
        result(
            "link",
            f"bridge {op} x{CALLERS}",
            rows[f"bridge {op} x50"]["ops_s"],
            "ops/s",
            anchor=f"redis-benchmark -c{CALLERS} {op}" if anchor else None,
            anchor_value=anchor.get(op),
            target_ratio=0.5,
        )
        result(
            "link",
            f"link {op} x{CALLERS}",
            rows[f"link {op} x50"]["ops_s"],
            "ops/s",
            anchor=f"redis-benchmark -c{CALLERS} {op}" if anchor else None,
            anchor_value=anchor.get(op),
            target_ratio=0.5,
        )
    result("link", "added p50 per hop", hop, "us", target_max=250)
    result(
        "link",
        "link pipelined get",
        piped["ops_s"],
        "ops/s",
        anchor="redis-benchmark -P16 get" if anchor_p16 else None,
        anchor_value=anchor_p16.get("get"),
    )
    result(
        "link",
        "link pipelined get vs target",
        piped["ops_s"],
        "ops/s",
        anchor="target 100k",
        anchor_value=100_000,
        target_ratio=1.0,
    )
    result(
        "link",
        "relay events",
        relay["events_s"],
        "events/s",
        anchor="target 50k",
        anchor_value=50_000,
        target_ratio=1.0,
    )
    result("link", "relay p99 at 1k/s", relay["p99_ms"], "ms", target_max=5)
    result("link", f"fan-out to {edges} links", fan["median_ms"], "ms", target_max=50)


def _codec_requests(rows: dict[str, float], op: str, make: Any, result_value: Any, n: int) -> None:
    pair = LinkPair(server_kwargs={"max_open_requests": n + 1})
    pair.handshake()
    client, server = pair.client, pair.server
    t0 = time.process_time()
    for i in range(n):
        client.send_request(make(i))
    data = client.data_to_send()
    t1 = time.process_time()
    server.receive_data(data)
    for event in drain(server):
        assert isinstance(event, RequestReceived)
        server.send_response(event.request_id, result_value)
    data = server.data_to_send()
    t2 = time.process_time()
    client.receive_data(data)
    drain(client)
    t3 = time.process_time()
    for name, spent in (
        ("client send", t1 - t0),
        ("server receive+answer", t2 - t1),
        ("client receive", t3 - t2),
    ):
        key = f"{op} {name}"
        rows[key] = min(rows.get(key, float("inf")), spent / n * 1e6)


def _codec_events(rows: dict[str, float], n: int, watches: int = 100) -> None:
    pair = LinkPair()
    pair.handshake()
    client, server = pair.client, pair.server
    subs = [client.send_request(WatchArgs(("*",))) for _ in range(watches)]
    server.receive_data(client.data_to_send())
    drain(server)
    change = Change("bench", "k", ChangeKind.UPDATED, VALUE, VALUE, 1, "bench")
    changes = max(1, n // watches)
    t0 = time.process_time()
    for _ in range(changes):
        shared = WatchEvent.shared_frame(change, published_at=1.0)
        for sub in subs:
            server.send_shared_event(sub, shared)
    data = server.data_to_send()
    t1 = time.process_time()
    client.receive_data(data)
    drain(client)
    t2 = time.process_time()
    for name, spent in (("event server send, per watch", t1 - t0), ("event client receive", t2 - t1)):
        rows[name] = min(rows.get(name, float("inf")), spent / (changes * watches) * 1e6)


def run_codec(n: int, repeats: int = 5) -> None:
    """CPU microseconds per message of the sans-IO link (best of ``repeats``)."""
    written = {"existed": True, "old_value": VALUE, "new_value": VALUE, "revision": 2, "errors": []}
    rows: dict[str, float] = {}
    for _ in range(repeats):
        _codec_requests(rows, "get", lambda i: GetArgs("bench", str(i)), {"value": VALUE, "revision": 1}, n)
        _codec_requests(rows, "set", lambda i: SetArgs("bench", str(i), VALUE), written, n)
        _codec_events(rows, n)
    print(f"bench_link --codec: {n} messages per row, CPU us per message, best of {repeats}")
    for name, us in rows.items():
        print(f"{name:<32}{us:>8.2f}")
    for name, us in rows.items():
        result("link codec", name, us, "us")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--codec", action="store_true", help="the sans-IO link alone, CPU time")
    parser.add_argument("--writer", choices=("flood", "paced"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--central-key", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.codec:
        run_codec(args.ops)
        return
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    if args.writer:
        runner(_writer_main(args))
    else:
        runner(run(args.ops, args.edges))


if __name__ == "__main__":
    main()
