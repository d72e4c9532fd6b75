"""Decoding of the six state functions' inputs, with the reference engine's error messages.

The reference decodes each input with serde into a struct: unknown fields are ignored, a
wrong type or a missing field fails the whole call with ``deserialization_error`` and a serde
message ("missing field `scope`", "invalid type: integer `1`, expected a string"). A JSON array
is accepted positionally, as serde does for structs. We reproduce that so callers that match on
messages keep working, and raise :class:`InputError` with the function's prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import InputError

__all__ = ["decode_input", "describe_json"]

_MISSING = object()


def describe_json(v: Any) -> str:
    """A serde-style description of an unexpected JSON value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v}`"
    if isinstance(v, str):
        return f'string "{v}"'
    if isinstance(v, list):
        return "sequence"
    return "map"


def decode_input(
    function_id: str,
    payload: Any,
    fields: Sequence[tuple[str, str]],
    *,
    aliases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Decode ``payload`` into ``{field: value}``.

    ``fields`` lists ``(name, kind)`` in declaration order, where kind is ``"string"`` (a JSON
    string), ``"any"`` (any JSON value, null included) or ``"list"`` (a JSON array). ``aliases``
    maps an alternative input name to a field name (``data`` -> ``value``).
    """
    prefix = f"Failed to deserialize input for {function_id}: "
    aliases = aliases or {}
    names = [n for n, _ in fields]
    kinds = dict(fields)
    out: dict[str, Any] = {}

    if isinstance(payload, list):  # serde's positional form for structs
        if len(payload) < len(fields):
            raise InputError(
                prefix + f"invalid length {len(payload)}, expected struct with {len(fields)} elements"
            )
        if len(payload) > len(fields):
            raise InputError(prefix + f"invalid length {len(payload)}, expected fewer elements in array")
        for (name, kind), value in zip(fields, payload, strict=True):
            _check(prefix, name, kind, value)
            out[name] = value
        return out

    if not isinstance(payload, dict):
        raise InputError(prefix + f"invalid type: {describe_json(payload)}, expected a map")

    for raw_name, value in payload.items():
        name = aliases.get(raw_name, raw_name) if isinstance(raw_name, str) else str(raw_name)
        if name not in kinds:
            continue  # unknown fields are ignored
        if name in out:
            raise InputError(prefix + f"duplicate field `{name}`")
        _check(prefix, name, kinds[name], value)
        out[name] = value
    for name in names:
        if name not in out:
            raise InputError(prefix + f"missing field `{name}`")
    return out


def _check(prefix: str, name: str, kind: str, value: Any) -> None:
    if kind == "string" and not isinstance(value, str):
        raise InputError(prefix + f"invalid type: {describe_json(value)}, expected a string")
    if kind == "list" and not isinstance(value, list):
        raise InputError(prefix + f"invalid type: {describe_json(value)}, expected a sequence")
