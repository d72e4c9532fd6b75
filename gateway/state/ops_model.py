"""The data model of ``state::update``: one parsed op, one per-op error, one outcome.

These types are the contract between the parser (:mod:`gateway.state.ops_parse`), the pure
applier (:mod:`gateway.state.ops_apply`) and every storage adapter. Import them from
:mod:`gateway.state.ops`, which is the public surface; this module exists only to keep the
parser and the applier free of an import cycle.

An :class:`UpdateOp` is always *well formed* (its constructor checks the shape) but not
necessarily *valid*: path limits, prototype-pollution segments and merge-value limits are
per-op errors reported by ``apply_ops`` with the reference codes, not construction failures,
because the reference engine reports them per op and keeps applying the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "DOC_URL",
    "FIELD_KINDS",
    "I64_MAX",
    "I64_MIN",
    "KINDS",
    "MAX_PATH_DEPTH",
    "MAX_SEGMENT_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_KEYS",
    "PROTO_KEYS",
    "SEGMENT_KINDS",
    "U64_MAX",
    "OpError",
    "OpKind",
    "OpsOutcome",
    "UpdateOp",
    "append_op",
    "decrement_op",
    "increment_op",
    "json_type_name",
    "merge_op",
    "remove_op",
    "set_op",
    "value_depth",
]

OpKind: TypeAlias = Literal["set", "merge", "increment", "decrement", "append", "remove"]

#: Tag order as the reference declares its enum variants (used in "unknown variant" messages).
KINDS: Final[tuple[OpKind, ...]] = ("set", "merge", "increment", "decrement", "append", "remove")
#: Ops whose path is one literal first-level key (``""`` = the root).
FIELD_KINDS: Final[frozenset[str]] = frozenset({"set", "increment", "decrement", "remove"})
#: Ops whose path is a sequence of literal segments (``()`` = the root).
SEGMENT_KINDS: Final[frozenset[str]] = frozenset({"merge", "append"})

MAX_PATH_DEPTH: Final = 32
MAX_SEGMENT_BYTES: Final = 256
MAX_VALUE_DEPTH: Final = 16
MAX_VALUE_KEYS: Final = 1024
#: JavaScript prototype-pollution sinks, in bytewise order (the order the reference reports them).
PROTO_KEYS: Final[tuple[str, ...]] = ("__proto__", "constructor", "prototype")

I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1
U64_MAX: Final = 2**64 - 1

DOC_URL: Final = "https://iii.dev/docs/workers/iii-state#error-codes"


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """One ``state::update`` operation, in a canonical shape whatever wire form it came from.

    ``path`` is a ``str`` for the field ops (set, increment, decrement, remove; ``""`` is the
    root) and a ``tuple[str, ...]`` of literal segments for merge and append (``()`` is the
    root). The reference's ``MergePath`` distinctions survive: an absent path, ``null``,
    ``""`` and ``[]`` all become ``()``; ``"foo"`` and ``["foo"]`` both become ``("foo",)``;
    ``[""]`` stays ``("",)`` and fails at apply time with ``*.path.empty_segment``.

    ``value`` is used by set, merge and append (``None`` is JSON null). ``by`` is used by
    increment and decrement and is always an ``int`` in the i64 range. The value is held by
    reference: treat it as immutable (``apply_ops`` never mutates it).
    """

    kind: OpKind
    path: str | tuple[str, ...]
    value: Any = None
    by: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown update op kind {self.kind!r}")
        if self.kind in SEGMENT_KINDS:
            if not isinstance(self.path, tuple) or not all(isinstance(s, str) for s in self.path):
                raise TypeError(f"{self.kind} path must be a tuple of str, got {self.path!r}")
        elif not isinstance(self.path, str):
            raise TypeError(f"{self.kind} path must be a str, got {self.path!r}")
        if self.kind in ("increment", "decrement"):
            if type(self.by) is not int or not I64_MIN <= self.by <= I64_MAX:
                raise ValueError(f"{self.kind} by must be an int in the i64 range, got {self.by!r}")
            if self.value is not None:
                raise ValueError(f"{self.kind} takes no value")
        else:
            if self.by != 0 or type(self.by) is not int:
                raise ValueError(f"{self.kind} takes no by")
            if self.kind == "remove" and self.value is not None:
                raise ValueError("remove takes no value")

    @property
    def segments(self) -> tuple[str, ...]:
        """The path as literal segments, for every kind (a field path has at most one)."""
        if isinstance(self.path, tuple):
            return self.path
        return (self.path,) if self.path else ()

    def to_json(self) -> dict[str, Any]:
        """The canonical typed wire form, accepted by the reference engine and by ``parse_ops``.

        Merge and append paths are written as a segment list (the root as an absent path), so
        the form round-trips exactly through :func:`gateway.state.ops.parse_ops`.
        """
        out: dict[str, Any] = {"type": self.kind}
        if self.kind in SEGMENT_KINDS:
            if self.path:
                out["path"] = list(self.path)
            out["value"] = self.value
        elif self.kind in ("increment", "decrement"):
            out["path"] = self.path
            out["by"] = self.by
        elif self.kind == "set":
            out["path"] = self.path
            out["value"] = self.value
        else:
            out["path"] = self.path
        return out


@dataclass(frozen=True, slots=True)
class OpError:
    """A per-op failure: the op was skipped, the batch went on (reference FR-13)."""

    op_index: int
    code: str
    message: str
    doc_url: str = DOC_URL

    def to_json(self) -> dict[str, Any]:
        """The reference ``UpdateOpError`` object."""
        return {
            "op_index": self.op_index,
            "code": self.code,
            "message": self.message,
            "doc_url": self.doc_url,
        }


@dataclass(frozen=True, slots=True)
class OpsOutcome:
    """The result of applying a batch: the value to write and the ops that failed.

    ``value`` may share unchanged sub-objects with the input value and with op values; it
    must be treated as immutable (serialise it, don't edit it in place).
    """

    value: Any
    errors: tuple[OpError, ...]

    def errors_json(self) -> list[dict[str, Any]]:
        """The ``errors`` list of the ``state::update`` result (omit the field when empty)."""
        return [e.to_json() for e in self.errors]


def set_op(path: str, value: Any = None) -> UpdateOp:
    """``{"type":"set","path":path,"value":value}``."""
    return UpdateOp("set", path, value)


def merge_op(value: Any, path: str | tuple[str, ...] | list[str] | None = None) -> UpdateOp:
    """A merge; ``path`` may be given in any of the reference's ``MergePath`` shapes."""
    return UpdateOp("merge", normalize_segments(path), value)


def increment_op(path: str, by: int) -> UpdateOp:
    """``{"type":"increment","path":path,"by":by}``."""
    return UpdateOp("increment", path, by=by)


def decrement_op(path: str, by: int) -> UpdateOp:
    """``{"type":"decrement","path":path,"by":by}``."""
    return UpdateOp("decrement", path, by=by)


def append_op(value: Any, path: str | tuple[str, ...] | list[str] | None = None) -> UpdateOp:
    """An append; ``path`` may be given in any of the reference's ``MergePath`` shapes."""
    return UpdateOp("append", normalize_segments(path), value)


def remove_op(path: str) -> UpdateOp:
    """``{"type":"remove","path":path}``."""
    return UpdateOp("remove", path)


def normalize_segments(path: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Map a ``MergePath`` (absent, ``Single`` or ``Segments``) to literal segments.

    Only ``Single("")`` collapses to the root; an empty string *inside* a list is kept so that
    it is reported as an empty segment, as the reference does.
    """
    if path is None:
        return ()
    if isinstance(path, str):
        return (path,) if path else ()
    return tuple(path)


def json_type_name(value: Any) -> str:
    """The reference's JSON type name: ``null|boolean|number|string|array|object``.

    ``bool`` is tested before ``int`` because Python's ``True`` is an ``int``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def value_depth(value: Any) -> int:
    """Nesting depth where every object or array level counts 1 (``{}`` is 1, a scalar 0).

    Iterative, so a hostile deeply nested value cannot exhaust the Python stack.
    """
    best = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > best:
            best = depth
        stack.extend((child, depth) for child in children)
    return best
