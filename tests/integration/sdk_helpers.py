"""Shared helpers for integration tests: start gateways and connect real ``iii-sdk`` workers.

Gateways
    ``async with running_gateway(...) as gw`` starts a gateway in the test's event loop on free
    loopback ports and stops it afterwards; ``gw.worker_url``, ``gw.http_url`` and the live
    components (``gw.functions``, ``gw.triggers``, ``gw.metrics``, ``gw.hub``) are there for
    assertions. ``GatewayProcess`` runs ``python -m gateway serve`` as a subprocess (kill and
    restart on the same ports).

Workers
    The Python SDK is synchronous and runs its own event-loop thread, so from async tests every
    blocking SDK call goes through :func:`asyncio.to_thread` (``connect_worker``, ``call``,
    ``shutdown``). Worker handlers run in SDK threads: they report to a thread-safe
    :class:`Inbox` that tests await with a timeout (never a sleep).

Ordering
    A worker's frames are applied by the gateway in the order they were sent, and a call is
    answered only after it was applied, so ``await roundtrip(worker)`` after ``register_function``
    or ``register_trigger`` guarantees the gateway has the registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis  # see _PRELOADED below
from iii import InitOptions, InvocationError, register_worker
from iii.iii import III
from iii_helpers.observability import ReconnectionConfig

from gateway.app import Gateway
from gateway.config.settings import AdapterSettings, KvSettings, ServerSettings, Settings, StateSettings
from gateway.functions import FunctionRegistry
from gateway.metrics import Metrics
from gateway.triggers.cron import CronTriggerType
from gateway.triggers.http import HttpTriggerType
from gateway.triggers.registry import TriggerRegistry
from gateway.web.worker_ws import WorkerHub

# The hypothesis pytest plugin imports hypothesis lazily in its end-of-session summary, which
# makes pytest compile (assertion-rewrite) dozens of modules after SDK workers have run in this
# process; on CPython 3.11.7 that compile fails with "SystemError: AST constructor recursion
# depth mismatch" and the session summary is lost. Importing it up front avoids the late compile.
_PRELOADED = hypothesis.__name__

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 15.0

__all__ = [
    "GatewayProcess",
    "Inbox",
    "RunningGateway",
    "bind",
    "call",
    "connect_worker",
    "disconnect",
    "expect_error",
    "free_port",
    "roundtrip",
    "running_gateway",
    "shutdown",
    "worker_options",
]


# -- gateways ---------------------------------------------------------------------------------


@dataclass
class RunningGateway:
    """A gateway (the real composition root, :class:`gateway.app.Gateway`) in the test's loop."""

    app: Gateway
    worker_url: str
    http_url: str

    @property
    def functions(self) -> FunctionRegistry:
        return self.app.functions

    @property
    def triggers(self) -> TriggerRegistry:
        return self.app.triggers

    @property
    def metrics(self) -> Metrics:
        return self.app.metrics

    @property
    def hub(self) -> WorkerHub:
        return self.app.hub

    @property
    def http(self) -> HttpTriggerType:
        return self.app.http_triggers

    @property
    def cron(self) -> CronTriggerType:
        return self.app.cron

    def counter(self, name: str, **labels: str) -> float:
        """Current value of a metric sample (0 when it was never touched)."""
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


@contextlib.asynccontextmanager
async def running_gateway(
    *,
    max_value_bytes: int | None = None,
    invocation_timeout_ms: int = 30_000,
    max_message_bytes: int = 64 * 1024 * 1024,
) -> AsyncIterator[RunningGateway]:
    """Start ``gateway.app.Gateway`` on free loopback ports with the in-memory store."""
    settings = Settings(
        engine_id="test-gateway",
        server=ServerSettings(
            worker_port=0,
            http_port=0,
            invocation_timeout_ms=invocation_timeout_ms,
            max_message_bytes=max_message_bytes,
        ),
        state=StateSettings(
            adapter=AdapterSettings(kv=KvSettings(store_method="in_memory")), max_value_bytes=max_value_bytes
        ),
    )
    app = Gateway(settings)
    await app.start()
    try:
        yield RunningGateway(
            app, worker_url=f"ws://127.0.0.1:{app.worker_port}", http_url=f"http://127.0.0.1:{app.http_port}"
        )
    finally:
        await app.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``python -m gateway serve`` in a subprocess, on fixed ports so it can be restarted."""

    def __init__(
        self, data_dir: Path, *, worker_port: int | None = None, http_port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.worker_port = worker_port or free_port()
        self.http_port = http_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "gateway.log"
        self.env: dict[str, str] = {}  # extra environment (a config file's ${VAR}s)

    @property
    def worker_url(self) -> str:
        return f"ws://127.0.0.1:{self.worker_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--worker-port",
            str(self.worker_port),
            "--http-port",
            str(self.http_port),
            "--store",
            "file_based",
            "--data-dir",
            str(self.data_dir / "state"),
        ]

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start it and block until the worker port accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = _Deadline(timeout)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.worker_port), timeout=0.5):
                    return
            except OSError:
                deadline.check("gateway did not start listening")
                self.proc_wait(0.05)

    def proc_wait(self, seconds: float) -> None:
        """Wait for the process to exit, at most ``seconds`` (used as the poll interval)."""
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(seconds)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(DEFAULT_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (graceful) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEFAULT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = _monotonic() + seconds

    def check(self, what: str) -> None:
        if _monotonic() > self._end:
            raise TimeoutError(what)


def _monotonic() -> float:
    import time

    return time.monotonic()


# -- workers ----------------------------------------------------------------------------------


def worker_options(name: str, **overrides: Any) -> InitOptions:
    """SDK options for tests: fast reconnects, bounded call timeout, telemetry socket on."""
    options: dict[str, Any] = {
        "worker_name": name,
        "invocation_timeout_ms": 10_000,
        "reconnection_config": ReconnectionConfig(initial_delay_ms=50, max_delay_ms=500, jitter_factor=0.1),
    }
    options.update(overrides)
    return InitOptions(**options)


async def connect_worker(url: str, name: str = "test-worker", **overrides: Any) -> III:
    """A real SDK worker connected to ``url`` (blocks in a thread until the socket is open)."""
    return await asyncio.to_thread(register_worker, url, worker_options(name, **overrides))


async def shutdown(*workers: III) -> None:
    """Shut workers down (each SDK instance owns a thread and an event loop)."""
    errors = []
    for worker in workers:
        try:
            await asyncio.to_thread(_shutdown_and_drain, worker)
        except Exception as exc:  # shut the others down anyway
            errors.append(exc)
    if errors:
        raise errors[0]


async def disconnect(gw: RunningGateway, worker: III) -> None:
    """Shut a worker down and wait until the gateway has dropped its connection."""
    conn = gw.hub.connection(worker.worker_id) if worker.worker_id else None
    await shutdown(worker)
    if conn is not None:
        await asyncio.wait_for(conn.closed.wait(), DEFAULT_TIMEOUT)


def _shutdown_and_drain(worker: III) -> None:
    """``shutdown()``, then finish what the SDK left pending on its stopped loop.

    ``shutdown()`` stops the SDK's loop with handler tasks still pending when a call was in
    flight. Left alone, those coroutines are finalized whenever the garbage collector gets to
    them, which can be in the middle of pytest compiling a module, where CPython 3.11.7 fails
    with "AST constructor recursion depth mismatch". Cancelling them here keeps that
    deterministic. (Test-only use of the SDK's private loop.)
    """
    loop: asyncio.AbstractEventLoop = worker._loop
    thread: threading.Thread = worker._thread
    if not thread.is_alive():
        return  # already shut down (calling shutdown() again would wait forever)
    worker.shutdown()
    if thread.is_alive() or loop.is_running() or loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()

    async def finish() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    pending = loop.create_task(finish())
    for _ in range(3):  # the SDK queues loop.stop() twice; a queued stop ends a run early
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(pending)
        if pending.done():
            break
    gc.collect()


async def call(worker: III, function_id: str, payload: Any = None, **request: Any) -> Any:
    """``worker.trigger(...)`` from async code."""
    return await asyncio.to_thread(
        worker.trigger, {"function_id": function_id, "payload": payload, **request}
    )


async def expect_error(worker: III, function_id: str, payload: Any = None, **request: Any) -> InvocationError:
    """Call and return the InvocationError it must raise."""
    try:
        result = await call(worker, function_id, payload, **request)
    except InvocationError as exc:
        return exc
    raise AssertionError(f"{function_id} returned {result!r} instead of raising")


def bind(worker: III, trigger_type: str, function_id: str, config: Any, *, metadata: Any = None) -> Any:
    """``worker.register_trigger(...)``: still the SDK's way to bind state/http/cron triggers in
    0.25, where it is marked deprecated (in favour of ``observe``, which needs engine support)."""
    request: dict[str, Any] = {"type": trigger_type, "function_id": function_id, "config": config}
    if metadata is not None:
        request["metadata"] = metadata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return worker.register_trigger(request)


async def roundtrip(worker: III) -> None:
    """One answered call: every frame the worker sent before it has been applied."""
    exc = await expect_error(worker, "test::no-such-function", {})
    assert exc.code == "function_not_found", exc


class Inbox:
    """What worker handlers saw, handed from SDK threads to the test (a thread-safe queue)."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any) -> None:
        self._q.put(item)

    def recorder(self, result: Any = None) -> Callable[..., Any]:
        """A handler that records ``(data, metadata)`` and returns ``result``."""

        def handler(data: Any, metadata: Any = None) -> Any:
            self._q.put((data, metadata))
            return result

        return handler

    async def get(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return await asyncio.to_thread(self._q.get, True, timeout)

    def empty(self) -> bool:
        return self._q.empty()
