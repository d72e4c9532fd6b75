"""The worker WebSocket endpoint: drives one :class:`WorkerSession` per connected worker.

:class:`WorkerHub` is what the composition root mounts on the worker port (``routes()``):
``GET /`` is the control connection every ``iii-sdk`` worker opens, ``GET /otel`` the
telemetry socket the SDK opens beside it (accepted and drained, so the SDK does not retry it).

Per connection there is one reader (the aiohttp handler task: it decodes frames through the
session and applies the events without awaiting anything but socket reads), one writer task
draining the connection's bounded outbox (:mod:`gateway.web.worker_connection`), and one
task per incoming call, owned by the hub. The reader never waits on a call: a worker's handler
may call back into the engine (nested calls), and those answers arrive through the same reader.

Functions a worker registers go into the shared :class:`FunctionRegistry` with
``owner=<worker id>``; their handler sends an E->W ``invokefunction`` and awaits the matching
``invocationresult``. When the worker goes away, its functions and triggers are removed and
every call still waiting on it fails with ``invocation_stopped``. When several live workers
register the same function id, the newest serves it and the previous ones stand by: if it
leaves, the next newest takes over (the reference engine rejects the duplicate instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.config.settings import ServerSettings
from gateway.errors import GatewayError
from gateway.functions import DEFAULT_NAMESPACE, NO_RESULT, FunctionRegistry
from gateway.jsonutil import dumps
from gateway.metrics import Metrics
from gateway.protocol import (
    ABSENT,
    HELLO_FUNCTION_ID,
    Event,
    FrameError,
    Ignored,
    InvocationResult,
    InvokeFunction,
    NamespaceDeclared,
    Outgoing,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    SessionState,
    UnregisterFunction,
    UnregisterTrigger,
    WorkerSession,
)
from gateway.triggers.registry import Trigger, TriggerRegistry
from gateway.web.worker_connection import FunctionKey, WorkerConnection, not_invokable

__all__ = ["WorkerConnection", "WorkerHub"]

log = logging.getLogger(__name__)

_ENQUEUE_ERROR = {"code": "enqueue_error", "message": "No queue provider is installed."}


class WorkerHub:
    """All worker connections of one gateway, and the aiohttp handlers that accept them."""

    def __init__(
        self,
        functions: FunctionRegistry,
        triggers: TriggerRegistry,
        settings: ServerSettings,
        metrics: Metrics,
        *,
        heartbeat: float | None = 30.0,
        outbox_size: int = 4096,
        max_inflight_per_worker: int = 10_000,
        close_timeout: float = 5.0,
    ) -> None:
        self.functions = functions
        self.triggers = triggers
        self.settings = settings
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.outbox_size = outbox_size
        self.max_inflight_per_worker = max_inflight_per_worker
        self.close_timeout = close_timeout
        self._connections: dict[str, WorkerConnection] = {}
        self._hosts: dict[FunctionKey, list[WorkerConnection]] = {}
        self._otel: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._caller: contextvars.ContextVar[WorkerConnection | None] = contextvars.ContextVar(
            "iii_worker_caller", default=None
        )
        self._closing = False
        functions.register_builtin(
            HELLO_FUNCTION_ID, self._hello_builtin, description="Record a worker's metadata"
        )

    # -- public surface ---------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """``GET /`` (worker control socket) and ``GET /otel`` (telemetry, drained)."""
        return [web.get("/", self.handle_worker), web.get("/otel", self.handle_otel)]

    def statistics(self) -> dict[str, float]:
        conns = list(self._connections.values())
        return {
            "workers_connected": float(len(conns)),
            "invocations_in_flight": float(sum(c.session.pending_calls for c in conns)),
            "worker_requests_in_flight": float(len(self._tasks)),
            "worker_outbox_frames": float(sum(len(c.outbox) for c in conns)),
        }

    def connection(self, worker_id: str) -> WorkerConnection | None:
        """The live connection with this worker id (what ``workerregistered`` told the worker)."""
        return self._connections.get(worker_id)

    def workers(self) -> list[dict[str, Any]]:
        """The connected workers and what they said about themselves (for listings and tests)."""
        return [
            {
                "worker_id": c.id,
                "namespace": c.namespace,
                "name": c.session.worker_info.get("name"),
                "runtime": c.session.worker_info.get("runtime"),
                "version": c.session.worker_info.get("version"),
                "functions": sorted(fid for _, fid in c.functions),
                "connected_at": c.connected_at,
            }
            for c in self._connections.values()
        ]

    async def close(self) -> None:
        """Close every worker with GOING_AWAY, then cancel and await every task the hub owns."""
        self._closing = True
        conns = list(self._connections.values())
        for conn in conns:
            conn.session.start_close(int(WSCloseCode.GOING_AWAY), "server shutdown")
        closers = [self._close_socket(c.ws, WSCloseCode.GOING_AWAY, "server shutdown") for c in conns]
        closers += [self._close_socket(ws, WSCloseCode.GOING_AWAY, "server shutdown") for ws in self._otel]
        if closers:
            await asyncio.gather(*closers)
        for conn in conns:
            self._cleanup(conn)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- handlers ---------------------------------------------------------------------------

    async def handle_otel(self, request: web.Request) -> web.StreamResponse:
        """The SDK's telemetry socket: binary OTLP/LOGS/MTRC frames, read and dropped."""
        if self._closing:
            raise web.HTTPServiceUnavailable(text="shutting down")
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_message_bytes)
        await ws.prepare(request)
        self._otel.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self._otel.discard(ws)
        return ws

    async def handle_worker(self, request: web.Request) -> web.StreamResponse:
        """One worker control connection, from upgrade to cleanup."""
        if self._closing:
            raise web.HTTPServiceUnavailable(text="shutting down")
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_message_bytes, heartbeat=self.heartbeat)
        await ws.prepare(request)
        session = WorkerSession(max_message_bytes=self.settings.max_message_bytes)
        conn = WorkerConnection(session, ws, outbox_size=self.outbox_size)
        self._connections[conn.id] = conn
        self.metrics.worker_connections.inc()
        conn.outbox.put_nowait(session.initiate())
        writer = asyncio.create_task(self._write_loop(conn), name=f"worker-writer-{conn.id}")
        log.debug("worker %s connected from %s", conn.id, request.remote)
        try:
            await self._read_loop(conn)
        finally:
            self._cleanup(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not ws.closed:
                code, reason = session.close_reason or (int(WSCloseCode.OK), "")
                await self._close_socket(ws, code, reason)
            log.debug("worker %s disconnected (code %s)", conn.id, ws.close_code)
        return ws

    async def _read_loop(self, conn: WorkerConnection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self._on_frame(conn, msg.data)
                if conn.session.close_reason is not None:
                    return
            elif msg.type == WSMsgType.ERROR:
                # aiohttp already closed the socket (e.g. 1009 for a message over max_msg_size).
                too_big = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                self._count("too_large" if too_big else "ws_error")
                log.info("worker %s: websocket error: %s", conn.id, ws.exception())
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _write_loop(self, conn: WorkerConnection) -> None:
        ws = conn.ws
        try:
            while (frame := await conn.outbox.get()) is not None:
                await ws.send_str(frame)
        except (ConnectionError, RuntimeError) as exc:  # the socket went away under us
            log.debug("worker %s: send failed: %s", conn.id, exc)
            conn.outbox.close()

    # -- frames and events ------------------------------------------------------------------

    def _on_frame(self, conn: WorkerConnection, data: str | bytes) -> None:
        try:
            events = conn.session.receive_frame(data)
        except FrameError as exc:
            self._count(exc.reason)
            if conn.session.protocol_errors == 1:
                log.info("worker %s sent a malformed message: %s", conn.id, exc.message)
            for frame in conn.session.error_frames(exc):
                self._send_or_close(conn, frame)
            return
        self._apply(conn, events)

    def _apply(self, conn: WorkerConnection, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, InvokeFunction):
                self._start_invocation(conn, event)
            elif isinstance(event, InvocationResult):
                conn.resolve(event)
            elif isinstance(event, RegisterFunction):
                self._register_function(conn, event)
            elif isinstance(event, UnregisterFunction):
                self._unregister_function(conn, (conn.namespace, event.id))
            elif isinstance(event, RegisterTrigger):
                self._register_trigger(conn, event)
            elif isinstance(event, UnregisterTrigger):
                self.triggers.unregister(event.id, owner=conn.id)
            elif isinstance(event, Reattach):
                self._reattach(conn, event)
            elif isinstance(event, NamespaceDeclared):
                self._move_functions(conn, event.previous or DEFAULT_NAMESPACE, event.namespace)
            elif isinstance(event, Outgoing):
                self._send_or_close(conn, event.frame)
            elif isinstance(event, Ignored):
                self._count(event.reason)

    def _send_or_close(self, conn: WorkerConnection, frame: str) -> None:
        """Queue a reply from the reader; a worker that floods us without reading is closed."""
        if not conn.outbox.put_nowait(frame) and not conn.outbox.closed:
            self._count("send_overflow")
            conn.session.start_close(int(WSCloseCode.POLICY_VIOLATION), "outbox overflow")

    def _count(self, reason: str) -> None:
        self.metrics.protocol_errors.labels("worker", reason).inc()

    # -- functions --------------------------------------------------------------------------

    def _register_function(
        self, conn: WorkerConnection, msg: RegisterFunction, *, namespace: str | None = None
    ) -> None:
        key = (namespace or conn.namespace, msg.id)
        shadow = self.functions.resolve(msg.id, key[0])
        if shadow is not None and shadow.kind == "builtin":
            log.warning("worker %s registered %s, which a builtin of the same id shadows", conn.id, msg.id)
        conn.functions[key] = msg
        hosts = self._hosts.setdefault(key, [])
        if conn in hosts:
            hosts.remove(conn)
        hosts.append(conn)
        self._install(key, conn)

    def _install(self, key: FunctionKey, conn: WorkerConnection) -> None:
        msg = conn.functions[key]
        extra = {
            k: v
            for k, v in (("request_format", msg.request_format), ("response_format", msg.response_format))
            if v
        }
        self.functions.register(
            msg.id,
            not_invokable if msg.invocation is not None else conn.handler_for(msg.id),
            namespace=key[0],
            owner=conn.id,
            description=msg.description,
            metadata=msg.metadata,
            extra=extra,
        )

    def _move_functions(self, conn: WorkerConnection, old: str, new: str) -> None:
        """The hello named the worker's namespace: re-home what it registered before it."""
        for key in [k for k in conn.functions if k[0] == old]:
            msg = conn.functions[key]
            self._unregister_function(conn, key)
            self._register_function(conn, msg, namespace=new)

    def _unregister_function(self, conn: WorkerConnection, key: FunctionKey) -> None:
        if conn.functions.pop(key, None) is None:
            return
        hosts = self._hosts.get(key, [])
        if conn in hosts:
            hosts.remove(conn)
        if self.functions.unregister(key[1], namespace=key[0], owner=conn.id) and hosts:
            self._install(key, hosts[-1])  # the previous host takes over
        if not hosts:
            self._hosts.pop(key, None)

    # -- triggers ---------------------------------------------------------------------------

    def _register_trigger(self, conn: WorkerConnection, msg: RegisterTrigger) -> None:
        trigger = Trigger(
            id=msg.id,
            type=msg.trigger_type,
            function_id=msg.function_id,
            config=msg.config,
            metadata=msg.metadata,
            namespace=msg.namespace or conn.namespace,
            owner=conn.id,
        )
        try:
            self.triggers.register(trigger)
        except GatewayError as exc:
            error = exc.to_wire()
        except Exception as exc:  # a provider bug must not end the connection
            log.exception("trigger provider failed on %s", msg.id)
            error = {"code": "trigger_registration_failed", "message": f"{type(exc).__name__}: {exc}"}
        else:
            return
        log.info(
            "worker %s: trigger %s (%s) refused: %s", conn.id, msg.id, msg.trigger_type, error["message"]
        )
        frame = {
            "type": "triggerregistrationresult",
            "id": msg.id,
            "trigger_type": msg.trigger_type,
            "function_id": msg.function_id,
            "error": {"code": error["code"], "message": error["message"]},
        }
        self._send_or_close(conn, dumps(frame))

    # -- reattach and cleanup ---------------------------------------------------------------

    def _reattach(self, conn: WorkerConnection, msg: Reattach) -> None:
        """Retire the worker's previous connection if it is still here (half-open socket)."""
        old = self._connections.get(msg.previous_worker_id)
        if old is None or old is conn:
            return
        if msg.reattach_token != old.session.reattach_token:
            self._count("bad_reattach")
            return
        log.info("worker %s reattached as %s; retiring the old connection", old.id, conn.id)
        old.session.start_close(int(WSCloseCode.GOING_AWAY), "reattached elsewhere")
        self._cleanup(old)
        self._spawn(self._close_socket(old.ws, WSCloseCode.GOING_AWAY, "reattached elsewhere"))

    def _cleanup(self, conn: WorkerConnection) -> None:
        """Forget a connection: its functions, triggers and waiting calls. Idempotent."""
        if conn.cleaned:
            return
        conn.cleaned = True
        if self._connections.get(conn.id) is conn:
            del self._connections[conn.id]
        if conn.session.state is not SessionState.CLOSED:
            conn.session.close()
        conn.outbox.close()
        for key in list(conn.functions):
            self._unregister_function(conn, key)
        self.triggers.unregister_owner(conn.id)
        stopped = conn.fail_calls()
        conn.closed.set()
        if stopped:
            log.info("worker %s left with %d calls in flight (invocation_stopped)", conn.id, stopped)

    async def _close_socket(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.close_timeout):
                await ws.close(code=code, message=reason.encode()[:120])

    # -- calls from workers -----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_invocation(self, conn: WorkerConnection, msg: InvokeFunction) -> None:
        if conn.inflight >= self.max_inflight_per_worker:
            self._count("overload")
            limit = self.max_inflight_per_worker
            err = {
                "code": "invocation_error",
                "message": f"too many concurrent calls from this worker ({limit})",
            }
            frame = conn.session.reply(msg, error=err)
            if frame is not None:
                self._send_or_close(conn, frame)
            return
        conn.inflight += 1
        self._spawn(self._invoke(conn, msg))

    async def _invoke(self, conn: WorkerConnection, msg: InvokeFunction) -> None:
        """Run one call from a worker and answer it (sync), or not (void)."""
        token = self._caller.set(conn)
        try:
            frame = await self._run(conn, msg)
            if frame is not None:
                await conn.send(frame)
        finally:
            conn.inflight -= 1
            self._caller.reset(token)

    async def _run(self, conn: WorkerConnection, msg: InvokeFunction) -> str | None:
        """The answer frame for one call (None for void calls)."""
        if msg.action is not None and msg.action.type == "enqueue":
            return conn.session.reply(msg, error=dict(_ENQUEUE_ERROR))
        try:
            result = await self.functions.invoke(
                msg.function_id, msg.data, namespace=msg.namespace or conn.namespace, metadata=msg.metadata
            )
        except GatewayError as exc:
            if msg.is_void:
                log.debug("void call of %s failed: %s", msg.function_id, exc)
            return conn.session.reply(msg, error=exc.to_wire())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug below us: answer the caller and keep the hub running
            log.exception("call of %s from worker %s failed unexpectedly", msg.function_id, conn.id)
            error = {"code": "invocation_error", "message": f"{type(exc).__name__}: {exc}"}
            return conn.session.reply(msg, error=error)
        return conn.session.reply(msg, result=ABSENT if result is NO_RESULT else result)

    async def _hello_builtin(self, payload: Any, metadata: Any) -> Any:
        """``engine::workers::register``: the session already took the namespace and metadata."""
        conn = self._caller.get()
        if conn is not None:
            log.info(
                "worker %s is %s (%s %s, namespace %s)",
                conn.id,
                conn.session.worker_info.get("name"),
                conn.session.worker_info.get("runtime"),
                conn.session.worker_info.get("version"),
                conn.namespace,
            )
        return {"success": True}
