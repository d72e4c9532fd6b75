"""Worker protocol overhead: ``state::set`` round trips from real iii-sdk workers, side by side
with a bare JSON echo over an aiohttp WebSocket driven by the same client library (websockets).

    python -m bench.bench_worker                     # 1 and 8 clients, 7 rounds of 0.6 s per case
    python -m bench.bench_worker --rounds 11 --seconds 1 --clients 1,4,8

The gateway (``python -m gateway serve``, in-memory store) and the echo server each run in a
child process; the clients run here. Every client keeps one call in flight (round trips, not
pipelining). SDK rows:

* ``trigger_async``: each worker runs its loop of calls on its own SDK event loop, so the figure
  is the SDK's protocol path plus the gateway (what a worker's async handler sees);
* ``trigger (sync)``: the blocking API from a plain thread, which adds the SDK's hop from the
  caller's thread to its loop thread on every call.

The echo clients mirror the SDK's structure (one thread and event loop per client, the same
frame shapes, permessage-deflate offered as the SDK does). The cases are measured in
alternating short rounds and each figure is the median over the rounds, so a change in the
machine's load during the run skews every case alike. ``cost`` is the echo rate divided by the
row's rate: how many echo round trips one ``state::set`` round trip costs. DESIGN section 8
target: <= 1.5x. Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from bench.summary import result

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 0.2


# -- servers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            try:
                proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
    raise TimeoutError(f"nothing listens on {port}")


def _spawn(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    _wait_listening(port, proc)
    return proc


def _serve_echo(port: int) -> None:
    """The baseline server: an aiohttp WebSocket that answers each JSON call with a JSON result."""
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 2**20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                call = json.loads(msg.data)
                data = call["data"]
                answer = {
                    "type": "invocationresult",
                    "invocation_id": call["invocation_id"],
                    "function_id": call["function_id"],
                    "result": {"old_value": None, "new_value": data["value"]},
                }
                await ws.send_str(json.dumps(answer, separators=(",", ":"), sort_keys=True))
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- clients ---------------------------------------------------------------------------------


def _payload(client: int, n: int) -> dict[str, Any]:
    return {"scope": "bench", "key": f"client-{client}", "value": {"n": n, "who": "bench-worker"}}


def _run_threads(count: int, body: Callable[[int, threading.Barrier], int]) -> float:
    """Run ``body(i, barrier)`` in ``count`` threads; ops/s over the measured window."""
    barrier = threading.Barrier(count + 1)
    results = [0] * count

    def run(i: int) -> None:
        results[i] = body(i, barrier)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()  # everyone warmed up and ready
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(results) / (time.perf_counter() - started)


def echo_rate(url: str, clients: int, seconds: float) -> float:
    import websockets

    def body(i: int, barrier: threading.Barrier) -> int:
        async def go() -> int:
            async with websockets.connect(url, max_size=64 * 2**20) as ws:

                async def once(n: int) -> None:
                    frame = {
                        "type": "invokefunction",
                        "function_id": "state::set",
                        "data": _payload(i, n),
                        "invocation_id": str(uuid.uuid4()),
                    }
                    await ws.send(json.dumps(frame))
                    json.loads(await ws.recv())

                end = time.perf_counter() + WARMUP
                n = 0
                while time.perf_counter() < end:
                    await once(n)
                    n += 1
                await asyncio.to_thread(barrier.wait)
                end = time.perf_counter() + seconds
                done = 0
                while time.perf_counter() < end:
                    await once(done)
                    done += 1
                return done

        return asyncio.run(go())

    return _run_threads(clients, body)


def _connect_sdk(url: str, name: str) -> Any:
    from iii import InitOptions, register_worker

    return register_worker(url, InitOptions(worker_name=name, otel={"enabled": False}))


def sdk_async_rate(workers: list[Any], seconds: float) -> float:
    def body(i: int, barrier: threading.Barrier) -> int:
        iii = workers[i]

        async def go() -> int:
            async def once(n: int) -> None:
                await iii.trigger_async({"function_id": "state::set", "payload": _payload(i, n)})

            end = time.perf_counter() + WARMUP
            n = 0
            while time.perf_counter() < end:
                await once(n)
                n += 1
            await asyncio.to_thread(barrier.wait)
            end = time.perf_counter() + seconds
            done = 0
            while time.perf_counter() < end:
                await once(done)
                done += 1
            return done

        coro: Coroutine[Any, Any, int] = go()
        return asyncio.run_coroutine_threadsafe(coro, iii._loop).result()  # the SDK's own loop

    return _run_threads(len(workers), body)


def sdk_sync_rate(workers: list[Any], seconds: float) -> float:
    def body(i: int, barrier: threading.Barrier) -> int:
        iii = workers[i]
        end = time.perf_counter() + WARMUP
        n = 0
        while time.perf_counter() < end:
            iii.trigger({"function_id": "state::set", "payload": _payload(i, n)})
            n += 1
        barrier.wait()
        end = time.perf_counter() + seconds
        done = 0
        while time.perf_counter() < end:
            iii.trigger({"function_id": "state::set", "payload": _payload(i, done)})
            done += 1
        return done

    return _run_threads(len(workers), body)


# -- report ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=0.6, help="measured time per case and round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (the median is reported)")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        _serve_echo(args.echo_server)
        return 0
    counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        log = Path(tmp) / "servers.log"
        gw_port, http_port, echo_port = _free_port(), _free_port(), _free_port()
        gateway = _spawn(
            ["-m", "gateway", "serve", "--host", "127.0.0.1", "--worker-port", str(gw_port),
             "--http-port", str(http_port), "--store", "in_memory", "--log-level", "warning"],
            gw_port,
            log,
        )  # fmt: skip
        echo = _spawn(["-m", "bench.bench_worker", "--echo-server", str(echo_port)], echo_port, log)
        rows: list[tuple[str, int, float, float]] = []
        workers: list[Any] = []
        echo_url = f"ws://127.0.0.1:{echo_port}"
        try:
            for count in counts:
                while len(workers) < count:
                    workers.append(_connect_sdk(f"ws://127.0.0.1:{gw_port}", f"bench-{len(workers)}"))
                active = workers[:count]
                cases: dict[str, Callable[[], float]] = {
                    "bare JSON echo (aiohttp + websockets)": partial(
                        echo_rate, echo_url, count, args.seconds
                    ),
                    "iii-sdk state::set, trigger_async": partial(sdk_async_rate, active, args.seconds),
                    "iii-sdk state::set, trigger (sync)": partial(sdk_sync_rate, active, args.seconds),
                }
                samples: dict[str, list[float]] = {name: [] for name in cases}
                for _ in range(args.rounds):
                    for name, measure in cases.items():
                        samples[name].append(measure())
                medians = {name: statistics.median(values) for name, values in samples.items()}
                echo_ops = medians["bare JSON echo (aiohttp + websockets)"]
                rows += [(name, count, ops, echo_ops) for name, ops in medians.items()]
        finally:
            for w in workers:
                w.shutdown()
            for proc in (gateway, echo):
                proc.terminate()
                proc.wait(10)

    print(
        f"worker protocol round trips, loopback, gateway store in_memory; "
        f"median of {args.rounds} alternating rounds of {args.seconds:g} s"
    )
    print(f"{'case':<40} {'clients':>7} {'ops/s':>9} {'us/op':>8} {'cost':>7}")
    for name, count, ops, echo_ops in rows:
        per_op = 1e6 * count / ops if ops else float("inf")
        cost = echo_ops / ops if ops else float("inf")
        print(f"{name:<40} {count:>7} {ops:>9.0f} {per_op:>8.1f} {cost:>6.2f}x")
    for name, count, ops, echo_ops in rows:
        if not name.startswith("bare"):
            result(
                "worker",
                f"{name.removeprefix('iii-sdk ')}, {count} client(s)",
                ops,
                "ops/s",
                anchor=f"bare JSON echo, {count} client(s)",
                anchor_value=echo_ops,
                target_ratio=1 / 1.5,  # DESIGN section 8: a round trip costs <= 1.5 echo round trips
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
