"""The frames of the federation link as frozen dataclasses, with strict wire codecs.

Every frame is a msgpack map with a ``"type"`` tag. ``to_wire()`` gives the map, the classmethod
``from_wire(map)`` checks every field's type and size and raises :class:`RemoteProtocolError`
(code ``MALFORMED_FRAME``, the message names the frame type and the field) on anything else, so
code past :func:`decode_message` never sees a wrongly-typed field. Outgoing messages are built by
our own typed code and are not re-validated (mypy does that job, and the hot path stays cheap).
Unknown extra keys are tolerated, so a newer peer can add optional fields; the handshake hashes
the raw maps, so even ignored fields are authenticated.

Handshake (see :mod:`gateway.link.auth`): ``Hello`` -> ``Challenge`` -> ``Auth`` -> ``AuthOk``.

Traffic after it is asymmetric: the client (the downstream gateway) sends ``Request`` and
``Cancel``; the server answers each request exactly once with ``Response`` or ``ErrorResponse``.
A ``watch`` request is a stream: its id is the subscription id carried by ``WatchEvent``,
``BacklogEnd`` and ``Progress``, and its one ``Response``/``ErrorResponse`` ends the stream
(``HISTORY_GONE``, ``FORBIDDEN``, ``CANCELLED`` ...). ``Cancel(id)`` asks the server to abandon a
request or end a watch; the server still answers it (with ``CANCELLED`` if it had not finished).
This replaces a separate ``unwatch`` op: one mechanism, and the final answer tells the client
exactly when no more events can arrive. ``Ping``/``Pong`` are heartbeats from either side, and
``Close(code, reason)`` ends the link.

Request ops and their ``args`` are typed too (:func:`parse_args`); result shapes, by op:
``get`` -> ``{"value", "revision"}`` or nil; ``set``/``delete``/``update`` -> ``{"existed",
"old_value", "new_value", "revision", "errors"}``; ``list`` -> values; ``items`` ->
``[[key, value, revision], ...]``; ``list_groups`` -> scopes; ``info`` -> ``{"epoch",
"revision"}``; ``ping`` -> ``{}``; ``snapshot`` -> ``{"epoch", "revision", "items": [[scope, key,
value, revision], ...]}``; ``watch`` -> ``{"revision"}`` when the stream ends normally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from gateway.errors import (
    AuthError,
    ForbiddenError,
    GatewayError,
    HistoryGone,
    InputError,
    RemoteProtocolError,
)
from gateway.link.frames import MALFORMED_FRAME, SharedFrame
from gateway.link.wire import (
    MAX_U64,
    bad_field,
    bytes_field,
    check_json,
    get_field,
    json_field,
    opt_str_field,
    str_field,
    uint_field,
)
from gateway.state.adapter import Change, ChangeKind

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "PROTOCOL_VERSIONS",
    "SESSION_SIZE",
    "SIGNATURE_SIZE",
    "Auth",
    "AuthOk",
    "BacklogEnd",
    "Cancel",
    "Challenge",
    "Close",
    "ErrorResponse",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "Progress",
    "Request",
    "Response",
    "WatchEvent",
    "check_json",
    "decode_message",
    "error_from_wire",
]

PROTOCOL_VERSIONS: Final = (1,)
KEY_SIZE: Final = 32  # raw Ed25519 public key
NONCE_SIZE: Final = 32
SESSION_SIZE: Final = 16
SIGNATURE_SIZE: Final = 64
CERT_HASH_SIZE: Final = 32  # sha256 of the server's TLS certificate (DER)
MAX_ID_LEN: Final = 256  # client_id / server_id
MAX_VERSIONS: Final = 16
MIN_FRAME_SIZE: Final = 1024  # smallest max frame size a peer may advertise
_EVENT_TYPES: Final = frozenset(kind.value for kind in ChangeKind)


def _opt_frame_size(frame: Mapping[str, Any], t: str) -> int | None:
    value = frame.get("mf")
    if value is not None and (type(value) is not int or not MIN_FRAME_SIZE <= value < 2**32):
        bad_field(t, "mf", f"a frame size of at least {MIN_FRAME_SIZE} bytes, or nil", value)
    return value


# -- handshake ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server: who I am, a fresh nonce, the time, the TLS cert I saw (if any)."""

    TYPE: ClassVar[str] = "hello"
    versions: tuple[int, ...]
    client_id: str
    client_pub: bytes
    nonce: bytes
    timestamp_ms: int
    cert_hash: bytes | None = None
    max_frame_size: int | None = None  # the largest frame the client accepts after the handshake

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "v": list(self.versions),
            "client_id": self.client_id,
            "client_pub": self.client_pub,
            "nc": self.nonce,
            "t": self.timestamp_ms,
            "ch": self.cert_hash,
            "mf": self.max_frame_size,
        }

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Hello:
        t = cls.TYPE
        versions = get_field(frame, t, "v")
        if type(versions) is not list or not 0 < len(versions) <= MAX_VERSIONS:
            bad_field(t, "v", f"a list of 1 to {MAX_VERSIONS} versions", versions)
        for v in versions:
            if type(v) is not int or not 0 < v <= 0xFFFF:
                bad_field(t, "v", "a list of small positive integers", v)
        cert_hash = frame.get("ch")
        if cert_hash is not None and (type(cert_hash) is not bytes or len(cert_hash) != CERT_HASH_SIZE):
            bad_field(t, "ch", f"{CERT_HASH_SIZE} bytes or nil", cert_hash)
        return cls(
            versions=tuple(versions),
            client_id=str_field(frame, t, "client_id", MAX_ID_LEN),
            client_pub=bytes_field(frame, t, "client_pub", KEY_SIZE),
            nonce=bytes_field(frame, t, "nc", NONCE_SIZE),
            timestamp_ms=uint_field(frame, t, "t"),
            cert_hash=cert_hash,
            max_frame_size=_opt_frame_size(frame, t),
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """Server -> client: the chosen version, who I am, my nonce and time, a session id."""

    TYPE: ClassVar[str] = "challenge"
    version: int
    server_id: str
    server_pub: bytes
    nonce: bytes
    timestamp_ms: int
    session: bytes
    max_frame_size: int | None = None  # the largest frame the server accepts after the handshake

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "v": self.version,
            "server_id": self.server_id,
            "server_pub": self.server_pub,
            "ns": self.nonce,
            "t": self.timestamp_ms,
            "session": self.session,
            "mf": self.max_frame_size,
        }

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Challenge:
        t = cls.TYPE
        return cls(
            version=uint_field(frame, t, "v"),
            server_id=str_field(frame, t, "server_id", MAX_ID_LEN),
            server_pub=bytes_field(frame, t, "server_pub", KEY_SIZE),
            nonce=bytes_field(frame, t, "ns", NONCE_SIZE),
            timestamp_ms=uint_field(frame, t, "t"),
            session=bytes_field(frame, t, "session", SESSION_SIZE),
            max_frame_size=_opt_frame_size(frame, t),
        )


@dataclass(frozen=True, slots=True)
class Auth:
    """Client -> server: my signature over the handshake transcript."""

    TYPE: ClassVar[str] = "auth"
    signature: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sig": self.signature}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Auth:
        return cls(signature=bytes_field(frame, cls.TYPE, "sig", SIGNATURE_SIZE))


@dataclass(frozen=True, slots=True)
class AuthOk:
    """Server -> client: my signature over the transcript, and what you may do.

    The permissions are informative (the server enforces them); they are left out when the
    frame would exceed the pre-auth frame limit, so a client must not enforce them itself.
    """

    TYPE: ClassVar[str] = "auth_ok"
    signature: bytes
    permissions: dict[str, list[str]] | None  # nil when they would not fit a pre-auth frame

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sig": self.signature, "perms": self.permissions}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> AuthOk:
        t = cls.TYPE
        perms = frame.get("perms")
        if perms is None:
            return cls(signature=bytes_field(frame, t, "sig", SIGNATURE_SIZE), permissions=None)
        if type(perms) is not dict:
            bad_field(t, "perms", "a map or nil", perms)
        for action, patterns in perms.items():
            if type(patterns) is not list or any(type(p) is not str for p in patterns):
                bad_field(t, f"perms.{action}", "a list of strings", patterns)
        return cls(signature=bytes_field(frame, t, "sig", SIGNATURE_SIZE), permissions=perms)


# -- requests and answers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """Client -> server: run ``op`` with ``args`` (checked per op by :func:`parse_args`)."""

    TYPE: ClassVar[str] = "req"
    id: int
    op: str
    args: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "op": self.op, "args": self.args}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Request:
        t = cls.TYPE
        args = frame.get("args", {})
        if type(args) is not dict:
            bad_field(t, "args", "a map", args)
        return cls(id=uint_field(frame, t, "id"), op=str_field(frame, t, "op", 64), args=args)


@dataclass(frozen=True, slots=True)
class Response:
    """Server -> client: the result of request ``id`` (for a watch: the stream ended)."""

    TYPE: ClassVar[str] = "res"
    id: int
    result: Any

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "result": self.result}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Response:
        t = cls.TYPE
        return cls(id=uint_field(frame, t, "id"), result=json_field(frame, t, "result"))


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Server -> client: request ``id`` failed with a wire error ``code``."""

    TYPE: ClassVar[str] = "err"
    id: int
    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "code": self.code, "message": self.message}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> ErrorResponse:
        t = cls.TYPE
        return cls(
            id=uint_field(frame, t, "id"),
            code=str_field(frame, t, "code", 64),
            message=str_field(frame, t, "message"),
        )

    def to_exception(self) -> GatewayError:
        return error_from_wire(self.code, self.message)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Client -> server: abandon request ``id`` or end watch ``id``; it is still answered once."""

    TYPE: ClassVar[str] = "cancel"
    id: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Cancel:
        return cls(id=uint_field(frame, cls.TYPE, "id"))


# -- watch streams ------------------------------------------------------------------------


def _opt_timestamp(frame: Mapping[str, Any], t: str) -> float | None:
    value = frame.get("ts")
    if value is None:
        return None
    if type(value) is not float or not math.isfinite(value):
        bad_field(t, "ts", "unix seconds (a float) or nil", value)
    return value


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """Server -> client: one committed change on watch ``sub_id`` (the watch request's id)."""

    TYPE: ClassVar[str] = "event"
    sub_id: int
    scope: str
    key: str
    event_type: str  # a ChangeKind value: state:created | state:updated | state:deleted
    old_value: Any
    new_value: Any
    revision: int
    origin: str
    epoch: str | None = None
    # Unix seconds when the upstream published the change, for the relay-lag metric (nil for
    # replayed changes, whose publish time is not kept). Clocks of two machines may differ.
    published_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "sub": self.sub_id,
            "scope": self.scope,
            "key": self.key,
            "event_type": self.event_type,
            "old_value": self.old_value,
            "new_value": self.new_value,
            "revision": self.revision,
            "origin": self.origin,
            "epoch": self.epoch,
            "ts": self.published_at,
        }

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> WatchEvent:
        # The hot frame of a relay: every field checked inline first; anything off goes to
        # the field-by-field path below, which raises the precise error.
        get = frame.get
        sub, scope, key, event_type = get("sub"), get("scope"), get("key"), get("event_type")
        revision, origin, epoch, ts = get("revision"), get("origin"), get("epoch"), get("ts")
        if (
            type(sub) is int
            and 0 <= sub <= MAX_U64
            and type(scope) is str
            and type(key) is str
            and type(event_type) is str
            and event_type in _EVENT_TYPES
            and type(revision) is int
            and 0 <= revision <= MAX_U64
            and type(origin) is str
            and (epoch is None or type(epoch) is str)
            and (ts is None or (type(ts) is float and math.isfinite(ts)))
            and "old_value" in frame
            and "new_value" in frame
        ):
            old_value, new_value = frame["old_value"], frame["new_value"]
            check_json(old_value, "event.old_value")
            check_json(new_value, "event.new_value")
            return cls(sub, scope, key, event_type, old_value, new_value, revision, origin, epoch, ts)
        return cls._from_wire_checked(frame)

    @classmethod
    def _from_wire_checked(cls, frame: Mapping[str, Any]) -> WatchEvent:
        t = cls.TYPE
        event_type = str_field(frame, t, "event_type", 64)
        if event_type not in _EVENT_TYPES:
            raise RemoteProtocolError(f"{t}.event_type: unknown {event_type!r}", code=MALFORMED_FRAME)
        return cls(
            sub_id=uint_field(frame, t, "sub"),
            scope=str_field(frame, t, "scope"),
            key=str_field(frame, t, "key"),
            event_type=event_type,
            old_value=json_field(frame, t, "old_value"),
            new_value=json_field(frame, t, "new_value"),
            revision=uint_field(frame, t, "revision"),
            origin=str_field(frame, t, "origin"),
            epoch=opt_str_field(frame, t, "epoch"),
            published_at=_opt_timestamp(frame, t),
        )

    @classmethod
    def from_change(
        cls, sub_id: int, change: Change, epoch: str | None = None, published_at: float | None = None
    ) -> WatchEvent:
        return cls(
            sub_id=sub_id,
            scope=change.scope,
            key=change.key,
            event_type=change.kind.value,
            old_value=change.old_value,
            new_value=change.new_value,
            revision=change.revision,
            origin=change.origin,
            epoch=epoch,
            published_at=published_at,
        )

    @classmethod
    def shared_frame(
        cls, change: Change, epoch: str | None = None, published_at: float | None = None
    ) -> SharedFrame:
        """The frame of ``change`` encoded once for every watch it goes to (only ``sub`` differs).

        Raises :class:`~gateway.errors.LocalProtocolError` when a value cannot be encoded.
        """
        body = {
            "type": cls.TYPE,
            "scope": change.scope,
            "key": change.key,
            "event_type": change.kind.value,
            "old_value": change.old_value,
            "new_value": change.new_value,
            "revision": change.revision,
            "origin": change.origin,
            "epoch": epoch,
            "ts": published_at,
        }
        return SharedFrame(body, "sub")

    def to_change(self) -> Change:
        return Change(
            scope=self.scope,
            key=self.key,
            kind=ChangeKind(self.event_type),
            old_value=self.old_value,
            new_value=self.new_value,
            revision=self.revision,
            origin=self.origin,
        )


@dataclass(frozen=True, slots=True)
class BacklogEnd:
    """Server -> client: the replay of watch ``sub_id`` is done up to ``revision``; live from here."""

    TYPE: ClassVar[str] = "backlog_end"
    sub_id: int
    revision: int
    epoch: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sub": self.sub_id, "revision": self.revision, "epoch": self.epoch}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> BacklogEnd:
        t = cls.TYPE
        return cls(
            sub_id=uint_field(frame, t, "sub"),
            revision=uint_field(frame, t, "revision"),
            epoch=str_field(frame, t, "epoch"),
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """Server -> client: watch ``sub_id`` has seen everything up to ``revision`` (a bookmark)."""

    TYPE: ClassVar[str] = "progress"
    sub_id: int
    revision: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sub": self.sub_id, "revision": self.revision}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Progress:
        t = cls.TYPE
        return cls(sub_id=uint_field(frame, t, "sub"), revision=uint_field(frame, t, "revision"))


# -- link control -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side: are you there? Answered by a ``Pong`` with the same nonce."""

    TYPE: ClassVar[str] = "ping"
    nonce: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "nonce": self.nonce}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Ping:
        return cls(nonce=uint_field(frame, cls.TYPE, "nonce"))


@dataclass(frozen=True, slots=True)
class Pong:
    """Either side: the answer to ``Ping(nonce)``."""

    TYPE: ClassVar[str] = "pong"
    nonce: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "nonce": self.nonce}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Pong:
        return cls(nonce=uint_field(frame, cls.TYPE, "nonce"))


@dataclass(frozen=True, slots=True)
class Close:
    """Either side: I am closing the link (``code`` is a wire code, ``reason`` human text)."""

    TYPE: ClassVar[str] = "close"
    code: str
    reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "code": self.code, "reason": self.reason}

    @classmethod
    def from_wire(cls, frame: Mapping[str, Any]) -> Close:
        t = cls.TYPE
        return cls(code=str_field(frame, t, "code", 64), reason=str_field(frame, t, "reason", 1024))


Message = (
    Hello
    | Challenge
    | Auth
    | AuthOk
    | Request
    | Response
    | ErrorResponse
    | Cancel
    | WatchEvent
    | BacklogEnd
    | Progress
    | Ping
    | Pong
    | Close
)

_DECODERS: Final[dict[str, Callable[[Mapping[str, Any]], Message]]] = {
    cls.TYPE: cls.from_wire
    for cls in (
        Hello,
        Challenge,
        Auth,
        AuthOk,
        Request,
        Response,
        ErrorResponse,
        Cancel,
        WatchEvent,
        BacklogEnd,
        Progress,
        Ping,
        Pong,
        Close,
    )
}


def decode_message(frame: Mapping[str, Any]) -> Message:
    """The message a decoded frame holds; :class:`RemoteProtocolError` if it is not one."""
    tag = frame.get("type")
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise RemoteProtocolError(f"unknown frame type {tag!r:.80}", code=MALFORMED_FRAME)
    return decoder(frame)


_ERRORS_BY_CODE: Final[dict[str, Callable[[str], GatewayError]]] = {
    ForbiddenError.code: ForbiddenError,
    HistoryGone.code: HistoryGone,
    AuthError.code: lambda message: AuthError(message, reason="denied"),
    InputError.code: InputError,
}


def error_from_wire(code: str, message: str) -> GatewayError:
    """The exception an ``ErrorResponse`` stands for, keeping the peer's code verbatim.

    Known link codes map to their classes (so ``except HistoryGone`` works in the Bridge);
    anything else (reference codes like ``SET_ERROR``) is a plain :class:`GatewayError`
    carrying the code, so it reaches the worker exactly as the upstream spelled it.
    """
    factory = _ERRORS_BY_CODE.get(code)
    if factory is not None:
        return factory(message)
    return GatewayError(message, code=code)
