"""The sans-IO state machine of one worker connection.

:class:`WorkerSession` is fed the frames a worker sends (``receive_frame``) and returns what
they mean (a list of events for the driver); it builds every frame the engine sends
(``initiate``, ``begin_call``, ``reply``, ``error_frames``) and keeps the table of calls the
engine made to the worker that are still waiting for an answer. It does no I/O, creates no
tasks and reads no clock, so it is unit-tested and fuzzed without sockets; the aiohttp driver
(:mod:`gateway.web.worker_ws`) owns the socket and the tasks.

Theory of operation
-------------------

States, and the events that move between them (the table is ``_TRANSITIONS``)::

    NEW --initiate--> CONNECTING --hello--> REGISTERED
    CONNECTING | REGISTERED --start_close--> CLOSING --close--> CLOSED   (close from anywhere)

Rule 1. ``initiate`` returns the ``workerregistered`` frame; it is the first frame on every
connection, sent before anything is read (reference section 1.3).

Rule 2. Registrations apply at once, in the namespace known so far (the engine default).
``registerfunction`` carries no namespace; a worker names its namespace only in its hello (a
call of ``engine::workers::register``), which the SDK sends after replaying its registrations
on every reconnect. When the hello names another namespace, the session emits
:class:`NamespaceDeclared` first, and the driver moves that worker's functions there. (The
reference engine holds registrations until the hello instead; applying them at once keeps
their order with the worker's own calls, so a call that follows a registration on the same
socket always sees it.)

Rule 3. Calls *to* the worker get fresh ids; ``begin_call`` records them and
``invocationresult`` frames are matched against that table only. A result for an unknown id
(late, or invented) is ignored, as the SDK does on its side. ``close`` returns the ids still
waiting, so the driver can fail them with ``invocation_stopped``.

Rule 4. A malformed frame raises :class:`~gateway.protocol.codec.FrameError` (a
``RemoteProtocolError``) and leaves the state unchanged: one bad frame does not end a
connection (the reference logs and drops it). ``error_frames`` builds the answer. After
``max_protocol_errors`` of them, ``close_reason`` is set and the driver closes the socket.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import LocalProtocolError
from gateway.protocol.codec import FrameError, decode, encode
from gateway.protocol.messages import (
    ABSENT,
    ErrorFrame,
    Ignored,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
)

__all__ = [
    "HELLO_FUNCTION_ID",
    "Event",
    "NamespaceDeclared",
    "Outgoing",
    "Registration",
    "SessionState",
    "WorkerSession",
]

#: The builtin every SDK calls (Void) right after connecting, with the worker's metadata.
HELLO_FUNCTION_ID: Final = "engine::workers::register"

Registration = RegisterFunction | UnregisterFunction | RegisterTrigger | UnregisterTrigger


class SessionState(enum.Enum):
    #: Created; ``initiate`` has not produced the ``workerregistered`` frame yet.
    NEW = "new"
    #: ``workerregistered`` sent; the worker has not said hello yet (Rule 2).
    CONNECTING = "connecting"
    #: The worker said hello (its namespace and metadata are known).
    REGISTERED = "registered"
    #: The engine is closing the socket; only answers to its calls are still useful.
    CLOSING = "closing"
    #: Gone. Nothing but ``close`` is legal.
    CLOSED = "closed"


_S = SessionState
# state -> {operation: next state}. An operation missing from a state's row is illegal there.
_TRANSITIONS: Final[dict[SessionState, dict[str, SessionState]]] = {
    _S.NEW: {"initiate": _S.CONNECTING, "close": _S.CLOSED},
    _S.CONNECTING: {
        "frame": _S.CONNECTING,
        "call": _S.CONNECTING,
        "reply": _S.CONNECTING,
        "hello": _S.REGISTERED,
        "start_close": _S.CLOSING,
        "close": _S.CLOSED,
    },
    _S.REGISTERED: {
        "frame": _S.REGISTERED,
        "call": _S.REGISTERED,
        "reply": _S.REGISTERED,
        "hello": _S.REGISTERED,
        "start_close": _S.CLOSING,
        "close": _S.CLOSED,
    },
    _S.CLOSING: {
        "frame": _S.CLOSING,
        "reply": _S.CLOSING,
        "start_close": _S.CLOSING,
        "close": _S.CLOSED,
    },
    _S.CLOSED: {"close": _S.CLOSED, "reply": _S.CLOSED},
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame the session itself wants sent (e.g. ``pong``)."""

    frame: str


@dataclass(frozen=True, slots=True)
class NamespaceDeclared:
    """The worker's hello named a namespace other than the one its registrations used so far."""

    previous: str | None
    namespace: str


Event = Message | Ignored | Outgoing | NamespaceDeclared


class WorkerSession:
    """Protocol state of one worker connection. See the module docstring for the rules."""

    #: Calls to the worker that may wait for an answer at once; more are refused.
    MAX_PENDING_CALLS = 100_000

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        reattach_token: str | None = None,
        max_message_bytes: int | None = 64 * 1024 * 1024,
        max_protocol_errors: int = 1000,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self.worker_id = worker_id or self._new_id()
        self.reattach_token = reattach_token or self._new_id()
        self.max_message_bytes = max_message_bytes
        self.max_protocol_errors = max_protocol_errors
        self.state = SessionState.NEW
        #: The worker's namespace from its hello (None: not said, the engine default applies).
        self.namespace: str | None = None
        #: The hello payload (runtime, version, name, pid, ...), for listings and logs.
        self.worker_info: dict[str, Any] = {}
        self.protocol_errors = 0
        #: Set when the driver should close the socket: ``(close code, reason)``.
        self.close_reason: tuple[int, str] | None = None
        self._pending: dict[str, str] = {}  # invocation id -> function id

    def __repr__(self) -> str:
        return f"<WorkerSession {self.worker_id} {self.state.name} pending={len(self._pending)}>"

    # -- state ----------------------------------------------------------------------------

    def _move(self, op: str) -> None:
        nxt = _TRANSITIONS[self.state].get(op)
        if nxt is None:
            raise LocalProtocolError(f"cannot {op} a worker session in state {self.state.name}")
        self.state = nxt

    @property
    def can_call(self) -> bool:
        """True while calls to the worker can be started."""
        return "call" in _TRANSITIONS[self.state]

    @property
    def pending_calls(self) -> int:
        return len(self._pending)

    # -- engine -> worker ------------------------------------------------------------------

    def initiate(self) -> str:
        """The ``workerregistered`` frame, sent first (Rule 1). No ``features``: see section 2.10."""
        self._move("initiate")
        return encode(WorkerRegistered(self.worker_id, self.reattach_token))

    def begin_call(self, function_id: str, data: Any, metadata: Any = None) -> tuple[str, str]:
        """Start a call to a function this worker hosts: ``(invocation_id, frame)``.

        Raises LocalProtocolError when the session can no longer carry calls (the driver
        reports ``invocation_stopped``), or when too many calls are already waiting.
        """
        self._move("call")
        if len(self._pending) >= self.MAX_PENDING_CALLS:
            raise LocalProtocolError(f"{len(self._pending)} calls already wait on this worker")
        invocation_id = self._new_id()
        frame = encode(InvokeFunction(function_id, data, invocation_id=invocation_id, metadata=metadata))
        self._pending[invocation_id] = function_id
        return invocation_id, frame

    def abandon_call(self, invocation_id: str) -> bool:
        """Forget a call the engine stopped waiting for (timeout, cancel). A late answer is ignored."""
        return self._pending.pop(invocation_id, None) is not None

    def reply(
        self, call: InvokeFunction, *, result: Any = ABSENT, error: dict[str, Any] | None = None
    ) -> str | None:
        """The ``invocationresult`` frame answering a worker's call, or None when none is due.

        Void calls and calls without an ``invocation_id`` get no answer. A result that is
        not JSON (NaN, a non-string key) turns into a ``serialization_error``, so the caller
        still hears back.
        """
        self._move("reply")
        if call.invocation_id is None or call.is_void or self.state is SessionState.CLOSED:
            return None
        msg = InvocationResult(call.invocation_id, call.function_id, result=result, error=error)
        try:
            return encode(msg)
        except (ValueError, TypeError, RecursionError) as exc:
            failed = {"code": "serialization_error", "message": f"result is not JSON: {exc}"[:500]}
            return encode(InvocationResult(call.invocation_id, call.function_id, error=failed))

    def error_frames(self, exc: FrameError) -> list[str]:
        """What to send back for a malformed frame (Rule 4).

        Always an ``error`` frame naming the problem; and when the frame was a call with a
        usable ``invocation_id``, also an ``invocationresult`` with ``deserialization_error`` so
        the caller does not wait for its timeout.
        """
        frames = [encode(ErrorFrame("PROTOCOL_ERROR", exc.message))]
        if exc.invocation_id is not None:
            err = {"code": "deserialization_error", "message": exc.message}
            frames.append(encode(InvocationResult(exc.invocation_id, exc.function_id, error=err)))
        return frames

    # -- worker -> engine ------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes) -> list[Event]:
        """Decode one frame and return its events, in the order the driver must apply them.

        Raises :class:`FrameError` for a malformed frame (Rule 4); nothing else.
        """
        if "frame" not in _TRANSITIONS[self.state]:
            return [Ignored("closed", "frame after close")]
        try:
            msg = decode(frame, max_bytes=self.max_message_bytes)
        except FrameError:
            self.protocol_errors += 1
            if self.protocol_errors >= self.max_protocol_errors and self.close_reason is None:
                self.close_reason = (1008, f"too many malformed messages ({self.protocol_errors})")
            raise
        if isinstance(msg, Ignored):
            return [msg]
        if self.state is SessionState.CLOSING and not isinstance(msg, InvocationResult):
            return [Ignored("closing", msg.type)]
        return self._dispatch(msg)

    def _dispatch(self, msg: Message) -> list[Event]:
        if isinstance(msg, InvocationResult):
            if self._pending.pop(msg.invocation_id, None) is None:
                return [Ignored("unknown_invocation", msg.invocation_id[:64])]
            return [msg]
        if isinstance(msg, RegisterFunction | UnregisterFunction | RegisterTrigger | UnregisterTrigger):
            return [msg]
        if isinstance(msg, InvokeFunction):
            if msg.function_id == HELLO_FUNCTION_ID:
                return [*self._hello(msg.data), msg]
            return [msg]
        if isinstance(msg, Reattach):
            return [msg]
        if isinstance(msg, Ping):
            return [Outgoing(encode(Pong()))]
        if isinstance(msg, RegisterTriggerType | UnregisterTriggerType):
            return [Ignored("trigger_type_provider", msg.id[:64])]
        # Pong, TriggerRegistrationResult (we forward no bindings to providers), and the
        # engine's own types (workerregistered, error) when a worker sends them.
        return [Ignored("unexpected", msg.type)]

    def _hello(self, data: Any) -> list[Event]:
        """The worker's metadata arrived: learn its namespace (Rule 2)."""
        events: list[Event] = []
        if isinstance(data, dict):
            self.worker_info = {k: v for k, v in data.items() if k != "_caller_worker_id"}
            ns = data.get("namespace")
            if isinstance(ns, str) and ns.strip() and ns != self.namespace:
                events.append(NamespaceDeclared(self.namespace, ns))
                self.namespace = ns
        if self.state is SessionState.CONNECTING:
            self._move("hello")
        return events

    # -- closing -----------------------------------------------------------------------------

    def start_close(self, code: int = 1001, reason: str = "going away") -> None:
        """The engine decided to close; new calls are refused from now on."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        if self.state is SessionState.NEW:
            self.state = SessionState.CLOSED
            return
        self._move("start_close")
        if self.close_reason is None:
            self.close_reason = (code, reason)

    def close(self) -> list[str]:
        """The socket is gone. Returns the ids of calls to the worker that will never be answered."""
        self._move("close")
        stopped = list(self._pending)
        self._pending.clear()
        return stopped
