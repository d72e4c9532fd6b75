"""The link's states, their legal transitions, and which frames each side accepts: as data.

Kept apart from :mod:`gateway.link.connection` (the h11 ``_state`` split) so the rules can be
read in one screen and tested as tables. ``TRANSITIONS`` lists, for each :class:`State`, the
states it may move to; ``LinkConnection`` refuses any other move as a bug. ``ACCEPTS`` lists,
per role and :class:`Phase` (a state refined by the handshake step), the frame types the peer
may send; any other frame is a protocol error (``NOT_AUTHENTICATED`` for post-auth frames
during the handshake, ``UNEXPECTED_FRAME`` otherwise).

The wire codes a link uses beyond those of :mod:`gateway.errors` live here too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from gateway.errors import AuthError
from gateway.link.messages import (
    Auth,
    AuthOk,
    BacklogEnd,
    Cancel,
    Challenge,
    Close,
    ErrorResponse,
    Hello,
    Ping,
    Pong,
    Progress,
    Request,
    Response,
    WatchEvent,
)
from gateway.link.tables import (
    DUPLICATE_REQUEST_ID,
    TOO_MANY_REQUESTS,
    UNKNOWN_REQUEST_ID,
    UNKNOWN_SUBSCRIPTION,
)

__all__ = [
    "ACCEPTS",
    "CANCELLED",
    "CLIENT_STREAM",
    "CONNECTION_LOST",
    "DUPLICATE_REQUEST_ID",
    "GOING_AWAY",
    "IDLE_TIMEOUT",
    "NORMAL",
    "NOT_AUTHENTICATED",
    "POST_AUTH",
    "SERVER_STREAM",
    "TOO_MANY_REQUESTS",
    "TRANSITIONS",
    "UNAUTHORIZED",
    "UNEXPECTED_FRAME",
    "UNKNOWN_REQUEST_ID",
    "UNKNOWN_SUBSCRIPTION",
    "VERSION_MISMATCH",
    "Phase",
    "Role",
    "State",
]

# Close codes.
NORMAL: Final = "NORMAL"
GOING_AWAY: Final = "GOING_AWAY"
IDLE_TIMEOUT: Final = "IDLE_TIMEOUT"
UNAUTHORIZED: Final = AuthError.code
VERSION_MISMATCH: Final = "VERSION_MISMATCH"
CONNECTION_LOST: Final = "CONNECTION_LOST"
# Protocol error codes (a Close with one of these precedes ERROR).
UNEXPECTED_FRAME: Final = "UNEXPECTED_FRAME"
NOT_AUTHENTICATED: Final = "NOT_AUTHENTICATED"
# Request error codes.
CANCELLED: Final = "CANCELLED"


class Role(enum.Enum):
    CLIENT = "client"  #: the downstream: sends HELLO and requests
    SERVER = "server"  #: the upstream: authenticates, answers, streams events


class State(enum.Enum):
    CONNECTING = "CONNECTING"  #: constructed; call start()
    HANDSHAKE = "HANDSHAKE"  #: HELLO .. AUTH_OK in progress
    OPEN = "OPEN"  #: authenticated; requests and events flow
    CLOSING = "CLOSING"  #: we sent Close and wait for the peer's
    CLOSED = "CLOSED"  #: done cleanly (or refused); close the transport
    ERROR = "ERROR"  #: the peer broke the protocol; close the transport


TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.CONNECTING: frozenset({State.HANDSHAKE, State.CLOSED, State.ERROR}),
    State.HANDSHAKE: frozenset({State.OPEN, State.CLOSED, State.ERROR}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED, State.ERROR}),
    State.CLOSING: frozenset({State.CLOSED, State.ERROR}),
    State.CLOSED: frozenset(),
    State.ERROR: frozenset(),
}


class Phase(enum.Enum):
    """State plus the handshake step: what ACCEPTS is keyed by (internal detail)."""

    START = State.CONNECTING
    AWAIT_HELLO = (State.HANDSHAKE, "hello")
    AWAIT_CHALLENGE = (State.HANDSHAKE, "challenge")
    AWAIT_AUTH = (State.HANDSHAKE, "auth")
    AWAIT_AUTH_OK = (State.HANDSHAKE, "auth_ok")
    OPEN = State.OPEN
    CLOSING = State.CLOSING
    CLOSED = State.CLOSED
    ERROR = State.ERROR

    @property
    def state(self) -> State:
        value = self.value
        state: State = value[0] if isinstance(value, tuple) else value
        return state


CLIENT_STREAM: Final = frozenset(
    {Response, ErrorResponse, WatchEvent, BacklogEnd, Progress, Ping, Pong, Close}
)
SERVER_STREAM: Final = frozenset({Request, Cancel, Ping, Pong, Close})
POST_AUTH: Final = (CLIENT_STREAM | SERVER_STREAM) - {Close}

#: The frame types each role accepts in each phase (all others are protocol errors).
ACCEPTS: Final[Mapping[tuple[Role, Phase], frozenset[type]]] = {
    (Role.CLIENT, Phase.AWAIT_CHALLENGE): frozenset({Challenge, Close}),
    (Role.CLIENT, Phase.AWAIT_AUTH_OK): frozenset({AuthOk, Close}),
    (Role.CLIENT, Phase.OPEN): CLIENT_STREAM,
    (Role.CLIENT, Phase.CLOSING): CLIENT_STREAM,
    (Role.SERVER, Phase.AWAIT_HELLO): frozenset({Hello, Close}),
    (Role.SERVER, Phase.AWAIT_AUTH): frozenset({Auth, Close}),
    (Role.SERVER, Phase.OPEN): SERVER_STREAM,
    (Role.SERVER, Phase.CLOSING): SERVER_STREAM,
}
