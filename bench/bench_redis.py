"""Benchmark of the Redis adapter next to its anchors, on the same Redis, in the same run.

    python -m bench.bench_redis                      # private redis-server, 20k ops, 50 callers
    python -m bench.bench_redis --ops 50000 --concurrency 50 --url redis://127.0.0.1:6400/0

Rows, each with ``--concurrency`` callers and ``--ops`` operations:

* ``redis-benchmark``: ``-t set,get -c C -n N -d <value size>`` (C, no Python at all);
* ``redis-py``: a bare ``redis.asyncio`` client doing HSET/HGET on ``state:bench`` (the
  reference layout, without scripts, revisions or events): the Python client ceiling; and the
  adapter's own set script through that bare client (``set script``): what the atomic
  write-with-event costs before any of the adapter's Python;
* ``adapter``: ``RedisAdapter.set/get/update`` (a Lua script per write with INCR + XADD, a
  script per read, read + CAS script per update), with its event tailer running, plus how fast
  the tailer delivered the events of the set row.

Without ``--url`` a private redis-server (no persistence) is started on a free port. The
adapter's keys go under a throwaway prefix and scope, and are deleted afterwards.
Numbers and ratios, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from adapters.redis import RedisAdapter
from adapters.redis import scripts as lua
from adapters.redis.scripts import KeyLayout
from bench.summary import result
from bench.timing import concurrent
from gateway import jsonutil
from gateway.config.settings import RedisSettings
from gateway.state.adapter import Change
from gateway.state.ops import increment_op
from tests.integration.redis_server import RedisServer

PREFIX = "bench-iii-gateway:"
SCOPE = "bench"


def _value(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i}", "active": i % 2 == 0, "score": i * 0.5}


VALUE_SIZE = len(jsonutil.dumps(_value(12345)))


def _redis_benchmark(url: str, ops: int, callers: int) -> dict[str, dict[str, float]]:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {}
    parts = urlsplit(url)
    argv = [exe, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        argv += ["-a", parts.password, "--no-auth-warning"]
    argv += ["-t", "set,get", "-c", str(callers), "-n", str(ops), "-d", str(VALUE_SIZE), "-r", "100000"]
    out = subprocess.run([*argv, "--csv"], check=True, capture_output=True, text=True).stdout
    rows: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(out)):
        rows[row["test"].lower()] = {
            "ops_s": float(row["rps"]),
            "p50_us": float(row["p50_latency_ms"]) * 1000,
            "p99_us": float(row["p99_latency_ms"]) * 1000,
        }
    return rows


async def _bare_redis_py(url: str, ops: int, callers: int) -> dict[str, dict[str, float]]:
    client = aioredis.Redis.from_url(url, max_connections=callers, protocol=2)
    texts = [jsonutil.dumps(_value(i)) for i in range(ops)]
    # The adapter's set script run bare (same keys, epoch and event), to split Redis-side cost
    # from the adapter's Python.
    layout = KeyLayout(PREFIX.encode())
    keys = layout.write_keys(SCOPE)
    await client.set(layout.epoch, "bench-epoch")
    await client.script_load(lua.SET.source)

    def set_script(i: int) -> Awaitable[object]:
        args = ("bench-epoch", SCOPE, f"k{i}", texts[i], "bench", 100_000)
        return client.evalsha(lua.SET.sha, len(keys), *keys, *args)

    try:
        rows = {
            "set": await concurrent(ops, callers, lambda i: client.hset("state:" + SCOPE, f"k{i}", texts[i])),
            "get": await concurrent(ops, callers, lambda i: client.hget("state:" + SCOPE, f"k{i}")),
            "set script": await concurrent(ops, callers, set_script),
        }
    finally:
        await client.aclose()
        await _cleanup(url)
    return rows


async def _adapter(url: str, ops: int, callers: int) -> dict[str, dict[str, float]]:
    settings = RedisSettings(redis_url=url, pool_size=callers, key_prefix=PREFIX)
    adapter = RedisAdapter(settings, engine_id="bench")
    adapter.reconcile_interval = 0
    delivered = 0

    def sink(change: Change) -> None:
        nonlocal delivered
        delivered += 1

    adapter.subscribe(sink)
    await adapter.start()
    values = [_value(i) for i in range(ops)]
    last = 0

    async def set_op(i: int) -> None:
        nonlocal last
        last = max(last, (await adapter.set(SCOPE, f"k{i}", values[i])).revision)

    try:
        started = time.perf_counter()
        rows = {"set": await concurrent(ops, callers, set_op)}
        await adapter.wait_delivered(last, timeout=120)
        events_s = delivered / (time.perf_counter() - started)
        rows["get"] = await concurrent(ops, callers, lambda i: adapter.get(SCOPE, f"k{i}"))
        incs = [increment_op("score", 1)]
        rows["update"] = await concurrent(ops, callers, lambda i: adapter.update(SCOPE, f"k{i}", incs))
        rows["update 1 key"] = await concurrent(
            ops // 4, callers, lambda i: adapter.update(SCOPE, "hot", incs)
        )
        rows["events"] = {"ops_s": events_s, "p50_us": float("nan"), "p99_us": float("nan")}
        stats = adapter.statistics()
        print(f"adapter: cas retries {stats['redis_cas_retries_total']:.0f}, events delivered {delivered}")
    finally:
        await _cleanup(url)
        await adapter.close()
    return rows


async def _cleanup(url: str) -> None:
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        keys = [k async for k in client.scan_iter(match=PREFIX + "*", count=1000)]
        await client.delete("state:" + SCOPE, *keys)
    finally:
        await client.aclose()


@contextlib.contextmanager
def _private_redis() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server.url
        finally:
            server.kill()


def _print(rows: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"{'client':<16} {'op':<13} {'ops/s':>9} {'p50 us':>9} {'p99 us':>9}")
    for client, table in rows.items():
        for op, r in table.items():
            print(f"{client:<16} {op:<13} {r['ops_s']:>9.0f} {r['p50_us']:>9.0f} {r['p99_us']:>9.0f}")
    ours = rows.get("adapter", {})
    print()
    for anchor in ("redis-py", "redis-benchmark"):
        for op in ("set", "get"):
            if op in ours and op in rows.get(anchor, {}):
                ratio = ours[op]["ops_s"] / rows[anchor][op]["ops_s"]
                print(f"adapter {op} / {anchor} {op}: {ratio:.2f}x")
    if "set" in ours and "set script" in rows.get("redis-py", {}):
        ratio = ours["set"]["ops_s"] / rows["redis-py"]["set script"]["ops_s"]
        print(f"adapter set / redis-py set script: {ratio:.2f}x")
    if "update" in ours and "set" in ours:
        print(f"adapter update / adapter set: {ours['update']['ops_s'] / ours['set']['ops_s']:.2f}x")


async def _run(url: str, ops: int, callers: int) -> dict[str, dict[str, dict[str, float]]]:
    rows: dict[str, dict[str, dict[str, float]]] = {}
    rows["redis-benchmark"] = await asyncio.to_thread(_redis_benchmark, url, ops, callers)
    rows["redis-py"] = await _bare_redis_py(url, ops, callers)
    rows["adapter"] = await _adapter(url, ops, callers)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=None, help="an existing Redis (default: start a private one)")
    parser.add_argument("--ops", type=int, default=20_000, help="operations per row")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent callers (tasks)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner: Callable[..., Any] = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            args.loop = "asyncio"
        else:
            runner = uvloop.run
    print(
        f"redis adapter bench: {args.ops} ops per row, {args.concurrency} callers, {args.loop}, "
        f"value {VALUE_SIZE} B, python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    )
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(_private_redis())
        rows = runner(_run(url, args.ops, args.concurrency))
    _print(rows)
    _results(rows)


def _results(rows: dict[str, dict[str, dict[str, float]]]) -> None:
    """The key figures as RESULT lines, each against redis-benchmark (or the bare script)."""
    anchor = rows.get("redis-benchmark", {})
    bare = rows.get("redis-py", {})
    for client, ops in (("adapter", ("set", "get", "update", "update 1 key")), ("redis-py", ("set", "get"))):
        for op in ops:
            if op not in rows.get(client, {}):
                continue
            base = anchor.get(op)
            result(
                "redis",
                f"{client} {op}",
                rows[client][op]["ops_s"],
                "ops/s",
                anchor=f"redis-benchmark {op}" if base else None,
                anchor_value=base["ops_s"] if base else None,
            )
    ours = rows.get("adapter", {})
    if "set" in ours and "set script" in bare:
        result(
            "redis",
            "adapter set (vs its script)",
            ours["set"]["ops_s"],
            "ops/s",
            anchor="redis-py set script",
            anchor_value=bare["set script"]["ops_s"],
        )
    if "events" in ours:
        result("redis", "adapter events delivered", ours["events"]["ops_s"], "events/s")


if __name__ == "__main__":
    main()
