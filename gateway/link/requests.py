"""The typed ``args`` of each link request op, with strict codecs.

A :class:`~gateway.link.messages.Request` carries ``op`` and a raw ``args`` map; this module
turns the pair into one frozen dataclass per op (``parse_args``), so the server's handler gets
typed fields and authorization (:mod:`gateway.link.acl`) can match on the class. It is separate
from the frame types because a bad ``args`` map is a *request* error, not a *link* error: the
server answers it with ``deserialization_error`` (the reference engine's code for bad input to a
state function) or ``UNKNOWN_OP`` and the link stays up for the other requests in flight.

Write ops carry two optional fields for the Bridge: ``origin`` (the engine that first made the
write, so chained edge -> region -> central keeps the original author for trigger dedupe) and
``idem`` (an idempotency key, so an outbox replay after a reconnect is applied once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NoReturn

from gateway.errors import InputError, RemoteProtocolError
from gateway.link.messages import check_json

__all__ = [
    "MAX_PATTERNS",
    "OPS",
    "UNKNOWN_OP",
    "DeleteArgs",
    "GetArgs",
    "InfoArgs",
    "ItemsArgs",
    "ListArgs",
    "ListGroupsArgs",
    "PingArgs",
    "RequestArgs",
    "SetArgs",
    "SnapshotArgs",
    "UpdateArgs",
    "WatchArgs",
    "parse_args",
]

UNKNOWN_OP: Final = "UNKNOWN_OP"
MAX_PATTERNS: Final = 1024
MAX_UPDATE_OPS: Final = 10_000


def _bad(op: str, field: str, expected: str, value: Any) -> NoReturn:
    raise InputError(f"{op}.{field}: expected {expected}, got {type(value).__name__}")


def _str(args: Mapping[str, Any], op: str, field: str) -> str:
    value = args.get(field)
    if type(value) is not str:
        _bad(op, field, "a string", value)
    return value


def _opt_str(args: Mapping[str, Any], op: str, field: str) -> str | None:
    value = args.get(field)
    if value is not None and type(value) is not str:
        _bad(op, field, "a string or nil", value)
    return value


def _json(args: Mapping[str, Any], op: str, field: str) -> Any:
    if field not in args:
        raise InputError(f"{op}: missing field {field!r}")
    value = args[field]
    try:
        check_json(value, f"{op}.{field}")
    except RemoteProtocolError as exc:
        raise InputError(exc.message) from None
    return value


def _patterns(args: Mapping[str, Any], op: str) -> tuple[str, ...]:
    value = args.get("patterns")
    if (
        type(value) is not list
        or not 0 < len(value) <= MAX_PATTERNS
        or any(type(p) is not str for p in value)
    ):
        _bad(op, "patterns", f"a list of 1 to {MAX_PATTERNS} strings", value)
    return tuple(value)


def _write_extras(args: SetArgs | DeleteArgs | UpdateArgs, wire: dict[str, Any]) -> dict[str, Any]:
    if args.origin is not None:
        wire["origin"] = args.origin
    if args.idem is not None:
        wire["idem"] = args.idem
    return wire


@dataclass(frozen=True, slots=True)
class GetArgs:
    OP: ClassVar[str] = "get"
    scope: str
    key: str

    def to_wire(self) -> dict[str, Any]:
        return {"scope": self.scope, "key": self.key}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> GetArgs:
        return cls(_str(args, cls.OP, "scope"), _str(args, cls.OP, "key"))


@dataclass(frozen=True, slots=True)
class SetArgs:
    OP: ClassVar[str] = "set"
    scope: str
    key: str
    value: Any
    origin: str | None = None
    idem: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _write_extras(self, {"scope": self.scope, "key": self.key, "value": self.value})

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> SetArgs:
        op = cls.OP
        return cls(
            _str(args, op, "scope"),
            _str(args, op, "key"),
            _json(args, op, "value"),
            _opt_str(args, op, "origin"),
            _opt_str(args, op, "idem"),
        )


@dataclass(frozen=True, slots=True)
class DeleteArgs:
    OP: ClassVar[str] = "delete"
    scope: str
    key: str
    origin: str | None = None
    idem: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _write_extras(self, {"scope": self.scope, "key": self.key})

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> DeleteArgs:
        op = cls.OP
        return cls(
            _str(args, op, "scope"),
            _str(args, op, "key"),
            _opt_str(args, op, "origin"),
            _opt_str(args, op, "idem"),
        )


@dataclass(frozen=True, slots=True)
class UpdateArgs:
    """``ops`` are the update-op maps as the state module accepts them (typed or seed form);
    their meaning is checked by the state module, here only that each is a JSON object."""

    OP: ClassVar[str] = "update"
    scope: str
    key: str
    ops: tuple[dict[str, Any], ...]
    origin: str | None = None
    idem: str | None = None
    # The caller's max_value_bytes: the upstream refuses (VALUE_TOO_LARGE) and writes nothing
    # when the result is larger, as a local update would.
    max_value_bytes: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = _write_extras(self, {"scope": self.scope, "key": self.key, "ops": list(self.ops)})
        if self.max_value_bytes is not None:
            wire["max_value_bytes"] = self.max_value_bytes
        return wire

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> UpdateArgs:
        op = cls.OP
        ops = _json(args, op, "ops")
        if type(ops) is not list or len(ops) > MAX_UPDATE_OPS or any(type(o) is not dict for o in ops):
            _bad(op, "ops", f"a list of at most {MAX_UPDATE_OPS} maps", ops)
        limit = args.get("max_value_bytes")
        if limit is not None and (type(limit) is not int or limit < 0):
            _bad(op, "max_value_bytes", "a non-negative integer or nil", limit)
        return cls(
            _str(args, op, "scope"),
            _str(args, op, "key"),
            tuple(ops),
            _opt_str(args, op, "origin"),
            _opt_str(args, op, "idem"),
            limit,
        )


@dataclass(frozen=True, slots=True)
class ListArgs:
    OP: ClassVar[str] = "list"
    scope: str

    def to_wire(self) -> dict[str, Any]:
        return {"scope": self.scope}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> ListArgs:
        return cls(_str(args, cls.OP, "scope"))


@dataclass(frozen=True, slots=True)
class ItemsArgs:
    """Keys with their values and revisions (what ``list`` lacks, for cache fill and resync)."""

    OP: ClassVar[str] = "items"
    scope: str

    def to_wire(self) -> dict[str, Any]:
        return {"scope": self.scope}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> ItemsArgs:
        return cls(_str(args, cls.OP, "scope"))


@dataclass(frozen=True, slots=True)
class ListGroupsArgs:
    """Allowed to any peer; the server must drop scopes the peer may not read from the result."""

    OP: ClassVar[str] = "list_groups"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> ListGroupsArgs:
        return cls()


@dataclass(frozen=True, slots=True)
class WatchArgs:
    """Stream the changes of scopes matching ``patterns`` after ``from_revision``.

    ``from_revision=None`` means "live only, from now". The backlog (changes after
    ``from_revision`` still in the upstream's history) comes first, then ``BacklogEnd``.
    ``epoch`` is the store epoch ``from_revision`` belongs to: when it is not the upstream's
    current epoch the revision means nothing there, and the watch ends with ``HISTORY_GONE``.
    """

    OP: ClassVar[str] = "watch"
    patterns: tuple[str, ...]
    from_revision: int | None = None
    epoch: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"patterns": list(self.patterns), "from_revision": self.from_revision}
        if self.epoch is not None:
            wire["epoch"] = self.epoch
        return wire

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> WatchArgs:
        rev = args.get("from_revision")
        if rev is not None and (type(rev) is not int or rev < 0):
            _bad(cls.OP, "from_revision", "a non-negative integer or nil", rev)
        return cls(_patterns(args, cls.OP), rev, _opt_str(args, cls.OP, "epoch"))


@dataclass(frozen=True, slots=True)
class SnapshotArgs:
    """Every key of the scopes matching ``patterns``, read at one revision (for resync).

    With ``after``, only the keys whose revision is newer than ``after`` (what changed since a
    downstream's last relayed revision; the rest it already has).
    """

    OP: ClassVar[str] = "snapshot"
    patterns: tuple[str, ...]
    after: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"patterns": list(self.patterns)}
        if self.after is not None:
            wire["after"] = self.after
        return wire

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> SnapshotArgs:
        after = args.get("after")
        if after is not None and (type(after) is not int or after < 0):
            _bad(cls.OP, "after", "a non-negative integer or nil", after)
        return cls(_patterns(args, cls.OP), after)


@dataclass(frozen=True, slots=True)
class PingArgs:
    """A round trip through the request path (the ``Ping`` frame only proves the socket lives)."""

    OP: ClassVar[str] = "ping"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> PingArgs:
        return cls()


@dataclass(frozen=True, slots=True)
class InfoArgs:
    """The upstream store's epoch and revision."""

    OP: ClassVar[str] = "info"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, args: Mapping[str, Any]) -> InfoArgs:
        return cls()


RequestArgs = (
    GetArgs
    | SetArgs
    | DeleteArgs
    | UpdateArgs
    | ListArgs
    | ItemsArgs
    | ListGroupsArgs
    | WatchArgs
    | SnapshotArgs
    | PingArgs
    | InfoArgs
)

_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], RequestArgs]]] = {
    cls.OP: cls.from_wire
    for cls in (
        GetArgs,
        SetArgs,
        DeleteArgs,
        UpdateArgs,
        ListArgs,
        ItemsArgs,
        ListGroupsArgs,
        WatchArgs,
        SnapshotArgs,
        PingArgs,
        InfoArgs,
    )
}
OPS: Final = frozenset(_PARSERS)


def parse_args(op: str, args: Mapping[str, Any]) -> RequestArgs:
    """The typed args of ``op``.

    Raises :class:`InputError` (code ``deserialization_error``) when a field is missing or has
    the wrong type, or with code ``UNKNOWN_OP`` when ``op`` is not a link op.
    """
    parser = _PARSERS.get(op)
    if parser is None:
        raise InputError(f"unknown op {op!r}", code=UNKNOWN_OP)
    return parser(args)
