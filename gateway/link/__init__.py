"""The federation link: an authenticated msgpack protocol between gateways (sans-IO core).

Layers, bottom up, none of which does I/O (key files aside):

- :mod:`~gateway.link.frames`: length-prefixed msgpack frames, size limits;
- :mod:`~gateway.link.messages`: one frozen dataclass per frame type, strict codecs;
- :mod:`~gateway.link.requests`: the typed ``args`` of each request op;
- :mod:`~gateway.link.auth`: Ed25519 keys, the mutual handshake, replay cache, rate limiter;
- :mod:`~gateway.link.acl`: scope permissions per peer, the authorized-peers file;
- :mod:`~gateway.link.states`, :mod:`~gateway.link.events` and
  :mod:`~gateway.link.connection`: the ``LinkConnection`` state machine a transport drives;
- :mod:`~gateway.link.backoff`: reconnect delays.

The asyncio transport, server, client and the Bridge adapter are built on these names.
"""

from gateway.link.acl import (
    Action,
    AuthorizedPeer,
    PeerDirectory,
    Permissions,
    glob_match,
    load_authorized_peers,
    parse_authorized_peers,
    pattern_covers,
)
from gateway.link.auth import (
    AuthFailure,
    AuthRateLimiter,
    ClientHandshake,
    ReplayCache,
    ServerHandshake,
    format_public_key,
    generate_private_key,
    load_private_key,
    parse_public_key,
    public_key_bytes,
    save_private_key,
)
from gateway.link.backoff import Backoff
from gateway.link.connection import LinkConnection
from gateway.link.events import (
    NEED_DATA,
    BacklogEndReceived,
    CancelReceived,
    ConnectionClosed,
    ErrorReceived,
    EventReceived,
    HandshakeComplete,
    HandshakeFailed,
    LinkEvent,
    NeedData,
    PingReceived,
    PongReceived,
    ProgressReceived,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
)
from gateway.link.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_TOO_LARGE,
    MALFORMED_FRAME,
    PRE_AUTH_MAX_FRAME_SIZE,
    FrameDecoder,
    encode_frame,
)
from gateway.link.messages import WatchEvent, error_from_wire
from gateway.link.requests import (
    OPS,
    UNKNOWN_OP,
    DeleteArgs,
    GetArgs,
    InfoArgs,
    ItemsArgs,
    ListArgs,
    ListGroupsArgs,
    PingArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
    WatchArgs,
)
from gateway.link.states import (
    CANCELLED,
    CONNECTION_LOST,
    GOING_AWAY,
    IDLE_TIMEOUT,
    NORMAL,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    VERSION_MISMATCH,
    Role,
    State,
)

__all__ = [
    "CANCELLED",
    "CONNECTION_LOST",
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_TOO_LARGE",
    "GOING_AWAY",
    "IDLE_TIMEOUT",
    "MALFORMED_FRAME",
    "NEED_DATA",
    "NORMAL",
    "OPS",
    "PRE_AUTH_MAX_FRAME_SIZE",
    "TOO_MANY_REQUESTS",
    "UNAUTHORIZED",
    "UNKNOWN_OP",
    "VERSION_MISMATCH",
    "Action",
    "AuthFailure",
    "AuthRateLimiter",
    "AuthorizedPeer",
    "BacklogEndReceived",
    "Backoff",
    "CancelReceived",
    "ClientHandshake",
    "ConnectionClosed",
    "DeleteArgs",
    "ErrorReceived",
    "EventReceived",
    "FrameDecoder",
    "GetArgs",
    "HandshakeComplete",
    "HandshakeFailed",
    "InfoArgs",
    "ItemsArgs",
    "LinkConnection",
    "LinkEvent",
    "ListArgs",
    "ListGroupsArgs",
    "NeedData",
    "PeerDirectory",
    "Permissions",
    "PingArgs",
    "PingReceived",
    "PongReceived",
    "ProgressReceived",
    "ReplayCache",
    "RequestArgs",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "Role",
    "ServerHandshake",
    "SetArgs",
    "SnapshotArgs",
    "State",
    "UpdateArgs",
    "WatchArgs",
    "WatchEvent",
    "encode_frame",
    "error_from_wire",
    "format_public_key",
    "generate_private_key",
    "glob_match",
    "load_authorized_peers",
    "load_private_key",
    "parse_authorized_peers",
    "parse_public_key",
    "pattern_covers",
    "public_key_bytes",
    "save_private_key",
]
