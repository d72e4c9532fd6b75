"""The worker protocol's messages, one frozen dataclass per wire ``type``.

These are the JSON objects ``iii-sdk`` workers and the engine exchange over the worker
WebSocket (reference: ``iii-worker-protocol.md`` section 2). A message object is always valid:
:mod:`gateway.protocol.codec` builds them only from checked input, and optional fields the
peer left out stay ``None`` (encoded by omission, as the SDKs do).

``InvocationResult.result`` distinguishes "no result" (the wire omits ``result``; the reference
engine does this for a ``None`` return) from a JSON ``null`` result, with the :data:`ABSENT`
sentinel. The protocol core is pure, so it has its own sentinel instead of importing the
function registry's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "ABSENT",
    "Action",
    "ErrorFrame",
    "Ignored",
    "InvocationResult",
    "InvokeFunction",
    "Message",
    "Ping",
    "Pong",
    "Reattach",
    "RegisterFunction",
    "RegisterTrigger",
    "RegisterTriggerType",
    "TriggerRegistrationResult",
    "UnregisterFunction",
    "UnregisterTrigger",
    "UnregisterTriggerType",
    "WorkerRegistered",
]


class _Absent:
    """Sentinel type: a field the peer did not send (as opposed to JSON ``null``)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent()


@dataclass(frozen=True, slots=True)
class Action:
    """How the caller wants an ``invokefunction`` handled: ``void`` (no reply) or ``enqueue``."""

    type: Literal["void", "enqueue"]
    queue: str | None = None


# -- worker -> engine ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterFunction:
    """A worker announces a function it hosts. The engine sends no acknowledgement."""

    id: str
    description: str | None = None
    request_format: Any = None
    response_format: Any = None
    metadata: Any = None
    invocation: Any = None  # HTTP-invoked functions (not supported: registered, calls fail)
    type: Literal["registerfunction"] = "registerfunction"


@dataclass(frozen=True, slots=True)
class UnregisterFunction:
    id: str
    type: Literal["unregisterfunction"] = "unregisterfunction"


@dataclass(frozen=True, slots=True)
class RegisterTrigger:
    """Bind a trigger (type + config) to a function. Both directions in the reference."""

    id: str
    trigger_type: str
    function_id: str
    config: Any = None
    metadata: Any = None
    namespace: str | None = None
    trigger_namespace: str | None = None
    type: Literal["registertrigger"] = "registertrigger"


@dataclass(frozen=True, slots=True)
class UnregisterTrigger:
    id: str
    trigger_type: str | None = None  # old peers leave it out
    type: Literal["unregistertrigger"] = "unregistertrigger"


@dataclass(frozen=True, slots=True)
class RegisterTriggerType:
    """A worker offers to provide a trigger type (decoded so it can be refused politely)."""

    id: str
    description: str | None = None
    type: Literal["registertriggertype"] = "registertriggertype"


@dataclass(frozen=True, slots=True)
class UnregisterTriggerType:
    id: str
    type: Literal["unregistertriggertype"] = "unregistertriggertype"


@dataclass(frozen=True, slots=True)
class Reattach:
    """First frame after a reconnect: the connection this worker had before."""

    previous_worker_id: str
    reattach_token: str | None = None
    type: Literal["reattach"] = "reattach"


@dataclass(frozen=True, slots=True)
class TriggerRegistrationResult:
    """Ack (no ``error``) or nack of a trigger binding."""

    id: str
    trigger_type: str | None = None
    function_id: str | None = None
    error: dict[str, Any] | None = None
    type: Literal["triggerregistrationresult"] = "triggerregistrationresult"


# -- both directions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvokeFunction:
    """Call a function. ``invocation_id`` is present iff the caller wants an answer."""

    function_id: str
    data: Any = None
    invocation_id: str | None = None
    action: Action | None = None
    metadata: Any = None
    traceparent: str | None = None
    baggage: str | None = None
    namespace: str | None = None
    type: Literal["invokefunction"] = "invokefunction"

    @property
    def is_void(self) -> bool:
        return self.action is not None and self.action.type == "void"


@dataclass(frozen=True, slots=True)
class InvocationResult:
    """The answer to an ``invokefunction``: ``result`` (maybe :data:`ABSENT`) or ``error``."""

    invocation_id: str
    function_id: str | None = None
    result: Any = ABSENT
    error: Any = None  # the reference ErrorBody {code, message, stacktrace?}; peers may send others
    traceparent: str | None = None
    type: Literal["invocationresult"] = "invocationresult"


@dataclass(frozen=True, slots=True)
class Ping:
    type: Literal["ping"] = "ping"


@dataclass(frozen=True, slots=True)
class Pong:
    type: Literal["pong"] = "pong"


# -- engine -> worker --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRegistered:
    """Sent first on every connection: the worker's id and its token for the next reattach."""

    worker_id: str
    reattach_token: str
    type: Literal["workerregistered"] = "workerregistered"


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """A connection-level error (bad frame, refused connection). The SDKs log and ignore it."""

    code: str
    message: str
    type: Literal["error"] = "error"


# -- decisions that are not messages -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame the engine drops on purpose (unknown type, telemetry bytes, a stray result).

    ``reason`` is a bounded label for metrics; ``detail`` is for logs only.
    """

    reason: str
    detail: str = ""


Message = (
    RegisterFunction
    | UnregisterFunction
    | RegisterTrigger
    | UnregisterTrigger
    | RegisterTriggerType
    | UnregisterTriggerType
    | Reattach
    | TriggerRegistrationResult
    | InvokeFunction
    | InvocationResult
    | Ping
    | Pong
    | WorkerRegistered
    | ErrorFrame
)
