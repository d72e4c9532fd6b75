"""Decode the JSON ``ops`` of ``state::update`` into :class:`UpdateOp` values.

Two wire forms are accepted (the mapping is documented in :mod:`gateway.state.ops`):
the reference's internally tagged form ``{"type": ..., ...}`` and the seed documents' form
with one op name as the key. Anything else raises :class:`gateway.errors.InputError` with the
message serde would produce for the reference's types, followed by ``at ops[i]`` so a caller
can find the offending op in a long batch. The whole batch is rejected on the first bad op:
the reference fails the call before touching the store.

The messages imitate serde_json's wording (``missing field `path```, ``invalid type:
floating point `1.5`, expected i64``, ``unknown variant `x`, expected one of ...``); like
serde, fields are checked in the bytewise order of the object's keys (serde_json maps are
sorted) and missing required fields in declaration order. Unknown fields are ignored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn, cast

from gateway.errors import InputError
from gateway.state.ops_model import (
    I64_MAX,
    I64_MIN,
    KINDS,
    SEGMENT_KINDS,
    U64_MAX,
    OpKind,
    UpdateOp,
)

__all__ = ["describe_json", "parse_op", "parse_ops"]

# Fields per variant in the reference's declaration order, and which of them are required.
_FIELDS: dict[str, tuple[str, ...]] = {
    "set": ("path", "value"),
    "merge": ("path", "value"),
    "increment": ("path", "by"),
    "decrement": ("path", "by"),
    "append": ("path", "value"),
    "remove": ("path",),
}
_REQUIRED: dict[str, frozenset[str]] = {
    "set": frozenset({"path"}),
    "merge": frozenset({"value"}),
    "increment": frozenset({"path", "by"}),
    "decrement": frozenset({"path", "by"}),
    "append": frozenset({"value"}),
    "remove": frozenset({"path"}),
}
_VARIANTS = ", ".join(f"`{k}`" for k in KINDS)
_LEGACY_COUNTER = "an object with `field` and `by`"


class _Reject(Exception):
    """Internal: one op failed to decode; ``parse_op`` adds the position."""


def _fail(message: str) -> NoReturn:
    raise _Reject(message)


def parse_ops(raw: Any) -> list[UpdateOp]:
    """Decode the ``ops`` array. Raises :class:`InputError` if it or any op is malformed."""
    if not isinstance(raw, list):
        raise InputError(f"invalid type: {describe_json(raw)}, expected a sequence")
    return [parse_op(item, index) for index, item in enumerate(raw)]


def parse_op(raw: Any, index: int | None = None) -> UpdateOp:
    """Decode one op in either wire form; ``index`` only labels the error message."""
    try:
        return _parse(raw)
    except _Reject as exc:
        where = "" if index is None else f" at ops[{index}]"
        raise InputError(f"{exc}{where}") from None


def _parse(raw: Any) -> UpdateOp:
    if not isinstance(raw, dict):
        _fail(f"invalid type: {describe_json(raw)}, expected internally tagged enum UpdateOp")
    if "type" in raw:
        tag = raw["type"]
        if not isinstance(tag, str):
            _fail(f"invalid type: {describe_json(tag)}, expected variant identifier")
        if tag not in _FIELDS:
            _fail(f"unknown variant `{tag}`, expected one of {_VARIANTS}")
        return _parse_typed(cast(OpKind, tag), raw)
    present = [k for k in KINDS if k in raw]
    if not present:
        _fail("missing field `type`")
    if len(present) > 1:
        names = ", ".join(f"`{k}`" for k in present)
        _fail(f"ambiguous operation: found {names}; an operation without `type` names exactly one")
    return _parse_legacy(present[0], raw[present[0]])


def _parse_typed(kind: OpKind, obj: dict[Any, Any]) -> UpdateOp:
    fields = _FIELDS[kind]
    seen: dict[str, Any] = {}
    for key in sorted(k for k in obj if isinstance(k, str)):
        if key not in fields:
            continue
        raw = obj[key]
        if key == "by":
            seen[key] = _parse_i64(raw)
        elif key == "path":
            seen[key] = _parse_segments(raw) if kind in SEGMENT_KINDS else _parse_str(raw)
        else:
            seen[key] = raw
    for name in fields:
        if name not in seen and name in _REQUIRED[kind]:
            _fail(f"missing field `{name}`")
    if kind in SEGMENT_KINDS:
        return UpdateOp(kind, seen.get("path", ()), seen["value"])
    if kind in ("increment", "decrement"):
        return UpdateOp(kind, seen["path"], by=seen["by"])
    if kind == "set":
        return UpdateOp(kind, seen["path"], seen.get("value"))
    return UpdateOp(kind, seen["path"])


def _parse_legacy(kind: OpKind, payload: Any) -> UpdateOp:
    """The seed documents' single-key form; see the mapping table in ``gateway.state.ops``."""
    if kind == "set":
        return UpdateOp("set", "", payload)
    if kind in SEGMENT_KINDS:
        return UpdateOp(kind, (), payload)
    if kind == "remove":
        return UpdateOp("remove", _parse_str(payload))
    if not isinstance(payload, dict):
        _fail(f"invalid type: {describe_json(payload)}, expected {_LEGACY_COUNTER}")
    seen: dict[str, Any] = {}
    for key in sorted(k for k in payload if isinstance(k, str)):
        if key == "by":
            seen[key] = _parse_i64(payload[key])
        elif key == "field":
            seen[key] = _parse_str(payload[key])
    for name in ("field", "by"):
        if name not in seen:
            _fail(f"missing field `{name}`")
    return UpdateOp(kind, seen["field"], by=seen["by"])


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        _fail(f"invalid type: {describe_json(raw)}, expected a string")
    return raw


def _parse_segments(raw: Any) -> tuple[str, ...]:
    """The reference's ``Option<MergePath>``: null, a string, or an array of strings."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw else ()
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    _fail("data did not match any variant of untagged enum MergePath")


def _parse_i64(raw: Any) -> int:
    """A JSON integer in the i64 range, as serde_json decodes ``i64`` from a ``Value``.

    serde_json holds integers above i64 as u64 ("invalid value") and integers outside both
    ranges as f64 ("invalid type: floating point"); floats are never accepted, not even 1.0.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        if I64_MIN <= raw <= I64_MAX:
            return raw
        if 0 <= raw <= U64_MAX:
            _fail(f"invalid value: integer `{raw}`, expected i64")
    _fail(f"invalid type: {describe_json(raw)}, expected i64")


def describe_json(value: Any) -> str:
    """How serde_json names an unexpected JSON value in an "invalid type" message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        if I64_MIN <= value <= U64_MAX:
            return f"integer `{value}`"
        try:
            return f"floating point `{format_f64(float(value))}`"
        except OverflowError:
            return "number out of range"
    if isinstance(value, float):
        return f"floating point `{format_f64(value)}`"
    if isinstance(value, str):
        return f"string {_rust_debug_str(value)}"
    if isinstance(value, list | tuple):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, bytes | bytearray):
        return "byte array"
    return type(value).__name__


def format_f64(value: float) -> str:
    """Format a float the way serde_json's error messages do (the ``ryu`` shortest form).

    Shortest round-trip digits, plain notation with ``.0`` for magnitudes in [1e-5, 1e16),
    scientific (``1e16``, ``1.5e-7``) outside it.
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    sign = "-" if str(value).startswith("-") else ""
    if value == 0:
        return f"{sign}0.0"
    _, digit_tuple, exp = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exp, int)
    digits = "".join(str(d) for d in digit_tuple).lstrip("0")
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + exp  # 10^(kk-1) <= value < 10^kk
    if exp >= 0 and kk <= 16:
        text = digits + "0" * exp + ".0"
    elif 0 < kk <= 16:
        text = f"{digits[:kk]}.{digits[kk:]}"
    elif -5 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


_DEBUG_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def _rust_debug_str(text: str) -> str:
    """A string quoted as Rust's ``{:?}`` does (serde's ``string "..."`` wording)."""
    out = []
    for ch in text:
        escaped = _DEBUG_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    return '"' + "".join(out) + '"'
