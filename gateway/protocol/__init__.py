"""The iii worker protocol (JSON over WebSocket), as a pure core: messages, codec, session.

Nothing here does I/O or imports asyncio/aiohttp; :mod:`gateway.web.worker_ws` drives it.
"""

from gateway.protocol.codec import FrameError, decode, encode
from gateway.protocol.messages import (
    ABSENT,
    Action,
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
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
)
from gateway.protocol.session import (
    HELLO_FUNCTION_ID,
    Event,
    NamespaceDeclared,
    Outgoing,
    SessionState,
    WorkerSession,
)

__all__ = [
    "ABSENT",
    "HELLO_FUNCTION_ID",
    "Action",
    "ErrorFrame",
    "Event",
    "FrameError",
    "Ignored",
    "InvocationResult",
    "InvokeFunction",
    "Message",
    "NamespaceDeclared",
    "Outgoing",
    "Ping",
    "Pong",
    "Reattach",
    "RegisterFunction",
    "RegisterTrigger",
    "RegisterTriggerType",
    "SessionState",
    "TriggerRegistrationResult",
    "UnregisterFunction",
    "UnregisterTrigger",
    "UnregisterTriggerType",
    "WorkerRegistered",
    "WorkerSession",
    "decode",
    "encode",
]
