"""The one exception tree of iii-gateway, with the wire error code each one carries.

Every error that can reach a caller (a worker, a link peer, an admin CLI) is a
``GatewayError`` with a stable ``code``. Edges (the worker protocol, the link server, the
CLI) translate them to their wire shape with :meth:`GatewayError.to_wire`; nothing else
ever leaks to a peer. Library exceptions (OSError, redis, msgpack) are mapped to this tree
at the place they are raised, with ``__cause__`` kept for logs.

::

    GatewayError                       code
    ├── InputError                     deserialization_error   bad input to a builtin function
    ├── ValueTooLarge                  VALUE_TOO_LARGE         a value over max_value_bytes
    ├── ConfigError                    CONFIG_ERROR            names the file and the key
    ├── StorageError                   STORAGE_ERROR           the local store failed
    │   └── CorruptDataError           CORRUPT_DATA            a record or file failed its check
    ├── AdapterError                   ADAPTER_ERROR           a backend failed an operation
    │   ├── AdapterUnavailable         UPSTREAM_UNAVAILABLE    backend unreachable
    │   └── AdapterTimeout             TIMEOUT                 backend did not answer in time
    ├── InvocationError                function_not_found | invocation_failed | invocation_stopped | timeout
    ├── ProtocolError                  PROTOCOL_ERROR
    │   ├── LocalProtocolError                                 we misused a protocol object (a bug)
    │   └── RemoteProtocolError                                the peer sent something invalid
    └── LinkError                      LINK_ERROR
        ├── LinkClosed                 LINK_CLOSED             we closed it
        ├── LinkBroken                 UPSTREAM_UNAVAILABLE    the peer or network broke it
        ├── AuthError                  UNAUTHORIZED            handshake refused (reason)
        ├── ForbiddenError             FORBIDDEN               scope not allowed for this peer
        └── HistoryGone                HISTORY_GONE            watch cannot resume from revision

Codes that the reference engine uses (``deserialization_error``, ``VALUE_TOO_LARGE``,
``SET_ERROR`` ...) are spelled exactly as it spells them, so existing workers that switch
on ``InvocationError.code`` keep working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterError",
    "AdapterTimeout",
    "AdapterUnavailable",
    "AuthError",
    "ConfigError",
    "CorruptDataError",
    "ForbiddenError",
    "GatewayError",
    "HistoryGone",
    "InputError",
    "InvocationError",
    "LinkBroken",
    "LinkClosed",
    "LinkError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "StorageError",
    "ValueTooLarge",
]


class GatewayError(Exception):
    """Base of every error we raise on purpose. ``code`` is what goes on the wire."""

    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_wire(self) -> dict[str, Any]:
        """The ``{code, message}`` body used by the worker protocol and the link."""
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InputError(GatewayError):
    """The input of a builtin function did not decode (the reference's serde failure)."""

    code = "deserialization_error"


class ValueTooLarge(GatewayError):
    """A value (of ``set`` or the result of ``update``) is over ``max_value_bytes``."""

    code = "VALUE_TOO_LARGE"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"value of {size} bytes exceeds the configured max_value_bytes limit of {limit}")
        self.size = size
        self.limit = limit


class ConfigError(GatewayError):
    """A configuration problem. The message always names the file and the key."""

    code = "CONFIG_ERROR"

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ""
        if file:
            where += f"{file}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)
        self.file = file
        self.key = key


class StorageError(GatewayError):
    """The local durable store could not do what was asked (disk full, I/O error)."""

    code = "STORAGE_ERROR"


class CorruptDataError(StorageError):
    """Stored bytes failed their check. Carries where, so an operator can look."""

    code = "CORRUPT_DATA"

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" at offset {offset}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.offset = offset


class AdapterError(GatewayError):
    """A state backend failed an operation; the state module maps it to SET_ERROR etc."""

    code = "ADAPTER_ERROR"


class AdapterUnavailable(AdapterError):
    """The backend (Redis, an upstream gateway) cannot be reached right now."""

    code = "UPSTREAM_UNAVAILABLE"


class AdapterTimeout(AdapterError):
    """The backend did not answer within the configured timeout."""

    code = "TIMEOUT"


class InvocationError(GatewayError):
    """A function call failed: not found, the handler raised, its worker left, timeout."""

    code = "invocation_failed"

    def __init__(
        self, message: str, *, code: str = "invocation_failed", stacktrace: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.stacktrace = stacktrace

    def to_wire(self) -> dict[str, Any]:
        body = super().to_wire()
        if self.stacktrace:
            body["stacktrace"] = self.stacktrace
        return body


class ProtocolError(GatewayError):
    """A protocol object saw something it cannot accept. Never raised directly."""

    code = "PROTOCOL_ERROR"


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol state does not allow (our bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a message that break the protocol (its fault)."""


class LinkError(GatewayError):
    """A federation link problem."""

    code = "LINK_ERROR"


class LinkClosed(LinkError):
    """We closed the link; using it afterwards is a caller error."""

    code = "LINK_CLOSED"


class LinkBroken(LinkError):
    """The peer or the network broke the link; see ``__cause__``."""

    code = "UPSTREAM_UNAVAILABLE"


class AuthError(LinkError):
    """The handshake was refused. ``reason`` is a bounded label used in metrics."""

    code = "UNAUTHORIZED"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ForbiddenError(LinkError):
    """The authenticated peer may not do this to this scope."""

    code = "FORBIDDEN"


class HistoryGone(LinkError):
    """A watch cannot resume: the revision is compacted away or the epoch changed."""

    code = "HISTORY_GONE"
