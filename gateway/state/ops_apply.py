"""Apply parsed ``state::update`` ops to a JSON value, exactly as the reference engine does.

Every storage adapter calls :func:`apply_ops` inside its own atomic step (the kv store under
its lock, Redis in a compare-and-set loop, the bridge on the upstream), so the semantics live
here once. The function is pure:

* It never mutates ``current`` or any op value. Callers keep the old value for the result
  and the change event, and Redis retries the same ops on a fresh read after a CAS conflict.
* It copies only what an op changes, along the path (copy-on-write), never the whole value:
  a counter bump on a large document copies the root mapping and nothing below it. A
  container copied once is mutated in place by later ops of the same batch.

Ops run in order; a failing op is skipped and reported with its original index, and later
ops still run (the reference's FR-13). Section 2 of the reference notes describes each rule;
the comments below name the non-obvious ones.

Numbers follow serde_json. Integers in [i64 min, u64 max] use exact integer arithmetic and
fail with ``not_number`` ("got number") when the result leaves that range; floats use IEEE
doubles and fail on a non-finite result. A stored integer *outside* that range (possible in
Python, impossible in serde_json, which reads such a literal as a double) is treated as the
double serde_json would have read, so ``2**64 + 1`` increments as the float ``2**64``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from gateway.state.ops_model import (
    I64_MIN,
    MAX_PATH_DEPTH,
    MAX_SEGMENT_BYTES,
    MAX_VALUE_DEPTH,
    MAX_VALUE_KEYS,
    PROTO_KEYS,
    U64_MAX,
    OpError,
    OpsOutcome,
    UpdateOp,
    json_type_name,
    value_depth,
)

__all__ = ["apply_ops"]

_MISSING: Final = object()


class _OpFailed(Exception):
    """Internal: the current op failed; it is recorded and the batch goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Doc:
    """The value being built, plus which containers this batch already owns.

    ``missing`` is the reference's ``using_missing_default``: the key did not exist and no op
    has succeeded yet, so the root is still the implicit ``{}``. Root increment/decrement and
    root append treat that root as absent rather than as an object.

    ``_owned`` maps id -> container for every dict or list created by this batch. Holding the
    reference keeps the id unique; anything not in it belongs to the caller or to an op and is
    copied before its first change.
    """

    __slots__ = ("_owned", "missing", "root")

    def __init__(self, root: Any, missing: bool) -> None:
        self._owned: dict[int, Any] = {}
        self.missing = missing
        self.root = self.new_dict() if missing else root

    def new_dict(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {}
        self._owned[id(fresh)] = fresh
        return fresh

    def new_list(self, first: Any) -> list[Any]:
        fresh = [first]
        self._owned[id(fresh)] = fresh
        return fresh

    def own_dict(self, node: dict[str, Any]) -> dict[str, Any]:
        if id(node) in self._owned:
            return node
        copy = dict(node)
        self._owned[id(copy)] = copy
        return copy

    def own_list(self, node: list[Any]) -> list[Any]:
        if id(node) in self._owned:
            return node
        copy = list(node)
        self._owned[id(copy)] = copy
        return copy

    def root_dict(self) -> dict[str, Any]:
        """The root (already checked to be a dict), owned so it can be changed in place."""
        self.root = self.own_dict(self.root)
        return self.root

    def walk_or_create(self, segments: Sequence[str]) -> dict[str, Any]:
        """The owned dict at ``segments``, creating missing levels.

        Destructive like the reference: a non-object root, intermediate or target (null,
        scalar, array) is replaced by ``{}``.
        """
        root = self.root
        node = self.own_dict(root) if isinstance(root, dict) else self.new_dict()
        self.root = node
        for seg in segments:
            child = node.get(seg)
            child = self.own_dict(child) if isinstance(child, dict) else self.new_dict()
            node[seg] = child
            node = child
        return node


def apply_ops(current: Any, existed: bool, ops: Sequence[UpdateOp]) -> OpsOutcome:
    """Apply ``ops`` in order to ``current`` (ignored when ``existed`` is False: start at ``{}``).

    Never raises for well-formed ops and JSON values; per-op failures are in ``errors``. The
    returned value is ``current`` itself when nothing changed, and otherwise shares every
    unchanged sub-object with ``current`` and with the op values.
    """
    doc = _Doc(current, missing=not existed)
    errors: list[OpError] = []
    for index, op in enumerate(ops):
        try:
            _HANDLERS[op.kind](doc, op)
        except _OpFailed as failure:
            errors.append(OpError(index, failure.code, failure.message))
        else:
            doc.missing = False
    return OpsOutcome(doc.root, tuple(errors))


# --------------------------------------------------------------------------- validation


def _check_path(kind: str, segments: Sequence[str]) -> None:
    """The checks every op runs before touching anything ($UO validate_op_path)."""
    if len(segments) > MAX_PATH_DEPTH:
        raise _OpFailed(
            f"{kind}.path.too_deep",
            f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}",
        )
    for seg in segments:
        if not seg:
            raise _OpFailed(f"{kind}.path.empty_segment", "Path contains an empty segment")
        if len(seg) * 4 > MAX_SEGMENT_BYTES:  # only then can the UTF-8 form be too long
            size = len(seg.encode("utf-8", "surrogatepass"))
            if size > MAX_SEGMENT_BYTES:
                raise _OpFailed(
                    f"{kind}.path.segment_too_long",
                    f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}",
                )
        if seg in PROTO_KEYS:
            raise _OpFailed(
                f"{kind}.path.proto_polluted",
                f"Path segment '{seg}' is not allowed (prototype pollution).",
            )


def _check_merge_value(value: Any) -> dict[str, Any]:
    """Merge value checks, in the reference's order; returns the value as a mapping."""
    if not isinstance(value, dict):
        raise _OpFailed("merge.value.not_an_object", "Merge value must be a JSON object")
    if len(value) > MAX_VALUE_KEYS:
        raise _OpFailed(
            "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}",
        )
    for key in PROTO_KEYS:  # bytewise order, as the reference walks its sorted map
        if key in value:
            raise _OpFailed(
                "merge.value.proto_polluted",
                f'Merge value top-level key "{key}" is a prototype-pollution sink',
            )
    depth = value_depth(value)
    if depth > MAX_VALUE_DEPTH:
        raise _OpFailed(
            "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}",
        )
    return value


def _segments_label(segments: Sequence[str]) -> str:
    """``[a, b]``: bracketed so a literal dotted key is never mistaken for a nested path."""
    return f"[{', '.join(segments)}]" if segments else "root"


def _not_object(kind: str, label: str, target: Any) -> _OpFailed:
    return _OpFailed(
        f"{kind}.target_not_object",
        f"Cannot {kind} at path '{label}': target is {json_type_name(target)}, expected object.",
    )


def _not_number(kind: str, label: str, target: Any) -> _OpFailed:
    return _OpFailed(
        f"{kind}.not_number",
        f"Expected number at path '{label}', got {json_type_name(target)}.",
    )


# --------------------------------------------------------------------------- handlers


def _set(doc: _Doc, op: UpdateOp) -> None:
    path = op.path
    assert isinstance(path, str)
    if not path:
        doc.root = op.value  # may turn the root into a non-object
        return
    _check_path("set", (path,))
    if not isinstance(doc.root, dict):
        raise _not_object("set", path, doc.root)
    doc.root_dict()[path] = op.value


def _merge(doc: _Doc, op: UpdateOp) -> None:
    segments = op.segments
    _check_path("merge", segments)
    value = _check_merge_value(op.value)
    if not segments:
        # Root merge is shallow and a silent no-op on a non-object root (no error).
        if isinstance(doc.root, dict) and value:
            doc.root_dict().update(value)
        return
    doc.walk_or_create(segments).update(value)


def _counter(doc: _Doc, op: UpdateOp) -> None:
    kind = op.kind
    path = op.path
    assert isinstance(path, str)
    sign = 1 if kind == "increment" else -1
    if not path:
        if doc.missing:
            doc.root = sign * op.by
            return
        result = _add(doc.root, sign, op.by)
        if result is None:
            raise _not_number(kind, "root", doc.root)
        doc.root = result
        return
    _check_path(kind, (path,))
    root = doc.root
    if not isinstance(root, dict):
        raise _not_object(kind, path, root)
    existing = root.get(path, _MISSING)
    if existing is _MISSING:
        result = sign * op.by  # decrement of a missing field by i64 min gives u64 2**63
    else:
        result = _add(existing, sign, op.by)
        if result is None:  # null, non-number, or out of range ("got number")
            raise _not_number(kind, path, existing)
    doc.root_dict()[path] = result


def _add(current: Any, sign: int, by: int) -> int | float | None:
    """``current + sign*by`` with the reference's number rules, or None when it fails."""
    if isinstance(current, bool) or not isinstance(current, int | float):
        return None
    if isinstance(current, int):
        if I64_MIN <= current <= U64_MAX:
            exact = current + sign * by
            return exact if I64_MIN <= exact <= U64_MAX else None
        try:
            current = float(current)
        except OverflowError:
            return None
    result = current + by if sign > 0 else current - by
    return result if math.isfinite(result) else None


def _append(doc: _Doc, op: UpdateOp) -> None:
    segments = op.segments
    _check_path("append", segments)
    value = op.value
    if not segments:
        target = None if doc.missing else doc.root  # a missing key appends like null
        doc.root = _append_to(doc, target, value, "root")
        return
    root = doc.root
    if not isinstance(root, dict):  # checked before any intermediate is created
        raise _not_object("append", _segments_label(segments), root)
    leaf = segments[-1]
    if len(segments) == 1:
        existing = root.get(leaf, _MISSING)
        if existing is _MISSING:
            new = value if isinstance(value, str) else doc.new_list(value)
        else:
            new = _append_to(doc, existing, value, leaf)
        doc.root_dict()[leaf] = new
        return
    parents = segments[:-1]
    # Look before writing: a leaf mismatch must leave the document untouched.
    node: Any = root
    for seg in parents:
        node = node.get(seg)
        if not isinstance(node, dict):
            node = None
            break
    existing = _MISSING if node is None else node.get(leaf, _MISSING)
    # A missing nested leaf is always an array, even for a string value.
    new = doc.new_list(value) if existing is _MISSING else _append_to(doc, existing, value, leaf)
    doc.walk_or_create(parents)[leaf] = new


def _append_to(doc: _Doc, target: Any, value: Any, label: str) -> Any:
    """The append matrix for an existing target (null counts as absent); the new target."""
    if isinstance(target, list):
        items = doc.own_list(target)
        items.append(value)  # an array value is pushed as one element
        return items
    if isinstance(target, str):
        if isinstance(value, str):
            return target + value
        raise _OpFailed(
            "append.type_mismatch",
            f"Expected string append value at path '{label}', got {json_type_name(value)}.",
        )
    if target is None:
        return value if isinstance(value, str) else doc.new_list(value)
    raise _OpFailed(
        "append.type_mismatch",
        f"Cannot append at path '{label}': target is {json_type_name(target)}, "
        "expected array, string, null, or missing field.",
    )


def _remove(doc: _Doc, op: UpdateOp) -> None:
    path = op.path
    assert isinstance(path, str)
    if not path:
        doc.root = None  # the key stays, holding null
        return
    _check_path("remove", (path,))
    root = doc.root
    if not isinstance(root, dict):
        raise _not_object("remove", path, root)
    if path in root:  # a missing field is a silent no-op
        del doc.root_dict()[path]


_HANDLERS: Final[dict[str, Callable[[_Doc, UpdateOp], None]]] = {
    "set": _set,
    "merge": _merge,
    "increment": _counter,
    "decrement": _counter,
    "append": _append,
    "remove": _remove,
}
