"""One worker connection as the hub sees it: its session, its outbox, the calls waiting on it.

:class:`WorkerConnection` is the engine-side handle of a connected worker. Its
:meth:`~WorkerConnection.call` is the handler installed in the function registry for every
function the worker registered: it sends an E->W ``invokefunction`` through the session and
waits for the matching ``invocationresult`` (or ``invocation_stopped`` when the worker leaves).
Frames go out through :class:`Outbox`, a bounded FIFO drained by one writer task, so frames
leave in the order they were queued and a worker that stops reading slows only the calls
addressed to it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from aiohttp import web

from gateway.errors import InvocationError, LocalProtocolError
from gateway.functions import DEFAULT_NAMESPACE, NO_RESULT
from gateway.protocol import ABSENT, InvocationResult, RegisterFunction, WorkerSession

__all__ = ["FunctionKey", "Outbox", "WorkerConnection", "error_from_wire", "not_invokable", "stopped"]

FunctionKey = tuple[str, str]  # (namespace, function id)


def stopped() -> InvocationError:
    return InvocationError("Invocation stopped", code="invocation_stopped")


def error_from_wire(error: Any) -> InvocationError:
    """A worker's error body, forwarded unchanged (code, message, stacktrace) to the caller."""
    if isinstance(error, dict):
        stack = error.get("stacktrace")
        return InvocationError(
            str(error.get("message", "")),
            code=str(error.get("code") or "invocation_failed"),
            stacktrace=stack if isinstance(stack, str) else None,
        )
    return InvocationError(str(error), code="invocation_failed")


class Outbox:
    """A bounded FIFO of frames for one socket; ``put`` waits for room, ``close`` frees waiters."""

    def __init__(self, limit: int) -> None:
        self._items: deque[str] = deque()
        self._limit = limit
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, frame: str) -> bool:
        if self.closed or len(self._items) >= self._limit:
            return False
        self._items.append(frame)
        self._nonempty.set()
        if len(self._items) >= self._limit:
            self._room.clear()
        return True

    async def put(self, frame: str) -> bool:
        """Queue a frame, waiting while full. False when the socket closed meanwhile."""
        while not self.closed and len(self._items) >= self._limit:
            await self._room.wait()
        return self.put_nowait(frame)

    async def get(self) -> str | None:
        """The next frame, or None once closed."""
        while not self._items:
            if self.closed:
                return None
            self._nonempty.clear()
            await self._nonempty.wait()
        frame = self._items.popleft()
        if len(self._items) < self._limit:
            self._room.set()
        return frame

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._room.set()
        self._nonempty.set()


class WorkerConnection:
    """One connected worker: its session, socket, outbox and the calls waiting on it."""

    def __init__(self, session: WorkerSession, ws: web.WebSocketResponse, *, outbox_size: int) -> None:
        self.session = session
        self.ws = ws
        self.id = session.worker_id
        self.outbox = Outbox(outbox_size)
        self.connected_at = time.time()
        #: Functions this worker registered, by (namespace, id), for failover re-installs.
        self.functions: dict[FunctionKey, RegisterFunction] = {}
        #: Calls from this worker being processed now (bounded by the hub).
        self.inflight = 0
        self._calls: dict[str, asyncio.Future[InvocationResult]] = {}
        self.cleaned = False
        #: Set once the connection is gone and everything it registered was removed.
        self.closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<WorkerConnection {self.id} {self.session.state.name} calls={len(self._calls)}>"

    @property
    def namespace(self) -> str:
        return self.session.namespace or DEFAULT_NAMESPACE

    async def send(self, frame: str) -> bool:
        """Queue a frame (waits while the outbox is full). False if the worker is gone."""
        return await self.outbox.put(frame)

    async def call(self, function_id: str, payload: Any, metadata: Any) -> Any:
        """Run ``function_id`` on this worker: E->W ``invokefunction``, then await its result."""
        if not self.session.can_call:
            raise stopped()
        try:
            invocation_id, frame = self.session.begin_call(function_id, payload, metadata)
        except LocalProtocolError as exc:
            raise InvocationError(str(exc), code="invocation_error") from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvocationError(f"payload is not JSON: {exc}", code="serialization_error") from None
        future: asyncio.Future[InvocationResult] = asyncio.get_running_loop().create_future()
        self._calls[invocation_id] = future
        try:
            if not await self.outbox.put(frame):
                raise stopped()
            answer = await future
        finally:
            self._calls.pop(invocation_id, None)
            self.session.abandon_call(invocation_id)
        if answer.error is not None:
            raise error_from_wire(answer.error)
        return NO_RESULT if answer.result is ABSENT else answer.result

    def resolve(self, answer: InvocationResult) -> None:
        future = self._calls.get(answer.invocation_id)
        if future is not None and not future.done():
            future.set_result(answer)

    def fail_calls(self) -> int:
        """The socket is gone: every call still waiting on this worker fails (invocation_stopped)."""
        failed = 0
        for future in self._calls.values():
            if not future.done():
                future.set_exception(stopped())
                failed += 1
        self._calls.clear()
        return failed

    def handler_for(self, function_id: str) -> Any:
        async def handler(payload: Any, metadata: Any) -> Any:
            return await self.call(function_id, payload, metadata)

        return handler


async def not_invokable(payload: Any, metadata: Any) -> Any:
    raise InvocationError(
        "Function is HTTP-invoked; this engine does not call HTTP functions", code="function_not_invokable"
    )
