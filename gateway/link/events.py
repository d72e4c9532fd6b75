"""What a :class:`~gateway.link.connection.LinkConnection` reports to its driver.

Frozen dataclasses, one per thing that can happen, returned by ``next_event()``; the sentinel
:data:`NEED_DATA` means "feed me more bytes". They are separate from the wire messages: an
event is already checked against the connection's state (a ``ResponseReceived`` is matched to
a request we sent, an ``EventReceived`` to a live watch, a ``RequestReceived`` is typed and
authorized), so the driver never re-validates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import GatewayError
from gateway.link.acl import Permissions
from gateway.link.auth import AuthFailure, format_public_key
from gateway.link.messages import WatchEvent, error_from_wire
from gateway.link.requests import RequestArgs

__all__ = [
    "NEED_DATA",
    "BacklogEndReceived",
    "CancelReceived",
    "ConnectionClosed",
    "ErrorReceived",
    "EventReceived",
    "HandshakeComplete",
    "HandshakeFailed",
    "LinkEvent",
    "NeedData",
    "PingReceived",
    "PongReceived",
    "ProgressReceived",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA` (an enum member, so ``is`` narrows it for mypy)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both sides are authenticated; the link is OPEN.

    ``peer_name`` is the authorized-peers entry (server side only); ``permissions`` are what
    the peer may do (server side, enforced) or what the upstream says we may do (client side,
    informative; None when the upstream left them out).
    """

    peer_id: str
    peer_key: bytes
    permissions: Permissions | None
    session: bytes
    version: int
    peer_name: str | None = None

    @property
    def peer_key_text(self) -> str:
        return format_public_key(self.peer_key)


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The handshake was refused, by us (``remote=False``) or by the peer. CLOSED follows."""

    reason: AuthFailure
    message: str
    remote: bool


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server: a typed, authorized request. Answer it once with send_response/send_error."""

    request_id: int
    args: RequestArgs

    @property
    def op(self) -> str:
        return self.args.OP


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """Server: a request the connection already answered with an error (bad args, unknown op,
    FORBIDDEN, too many open requests). For metrics; nothing to send. ``op`` is one of the
    link ops or ``"unknown"``, so it is safe as a metric label."""

    request_id: int
    op: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """Server: the client abandons open request/watch ``request_id``; still answer it once
    (``CANCELLED`` if it had not finished)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client: the result of our request (for a watch: its stream ended normally)."""

    request_id: int
    op: str
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """Client: our request failed (for a watch: its stream ended with this error)."""

    request_id: int
    op: str
    code: str
    message: str

    def to_exception(self) -> GatewayError:
        return error_from_wire(self.code, self.message)


@dataclass(frozen=True, slots=True)
class EventReceived:
    """Client: one change on a live watch (``event.sub_id`` is the watch request's id)."""

    event: WatchEvent


@dataclass(frozen=True, slots=True)
class BacklogEndReceived:
    """Client: watch ``sub_id`` has replayed its backlog up to ``revision``; live from here."""

    sub_id: int
    revision: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ProgressReceived:
    """Client: watch ``sub_id`` is caught up to ``revision`` (a resume bookmark)."""

    sub_id: int
    revision: int


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged; the Pong is already queued in ``data_to_send()``."""

    nonce: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The answer to one of our pings; ``rtt`` in seconds when it matches one we sent."""

    nonce: int
    rtt: float | None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The link is CLOSED. ``remote``: the peer closed it (or the stream ended), else we did.

    Codes: ``NORMAL``, ``GOING_AWAY``, ``IDLE_TIMEOUT``, ``UNAUTHORIZED``, ``VERSION_MISMATCH``,
    ``CONNECTION_LOST`` (the byte stream ended without a Close), or a peer's own code.
    """

    code: str
    reason: str
    remote: bool


LinkEvent = (
    HandshakeComplete
    | HandshakeFailed
    | RequestReceived
    | RequestRejected
    | CancelReceived
    | ResponseReceived
    | ErrorReceived
    | EventReceived
    | BacklogEndReceived
    | ProgressReceived
    | PingReceived
    | PongReceived
    | ConnectionClosed
)
