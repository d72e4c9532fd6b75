"""Field checks shared by the link's frame codecs (pure).

Each helper reads one field of a decoded frame map and returns it with its type proven, or
raises :class:`RemoteProtocolError` with code ``MALFORMED_FRAME`` and a message that names the
frame type and the field (``req.id: expected an unsigned integer, got str``). ``type(x) is
int`` rather than ``isinstance`` on purpose: ``True`` must not pass for an id or a revision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from gateway.errors import RemoteProtocolError
from gateway.link.frames import MALFORMED_FRAME

__all__ = [
    "MAX_U64",
    "bad_field",
    "bytes_field",
    "check_json",
    "get_field",
    "json_field",
    "opt_str_field",
    "str_field",
    "uint_field",
]

MAX_U64: Final = 2**64 - 1


def bad_field(frame_type: str, field: str, expected: str, value: Any) -> NoReturn:
    raise RemoteProtocolError(
        f"{frame_type}.{field}: expected {expected}, got {type(value).__name__}", code=MALFORMED_FRAME
    )


def get_field(frame: Mapping[str, Any], frame_type: str, field: str) -> Any:
    try:
        return frame[field]
    except KeyError:
        raise RemoteProtocolError(f"{frame_type}: missing field {field!r}", code=MALFORMED_FRAME) from None


def uint_field(frame: Mapping[str, Any], t: str, field: str) -> int:
    value = get_field(frame, t, field)
    if type(value) is not int or not 0 <= value <= MAX_U64:
        bad_field(t, field, "an unsigned integer", value)
    return value


def str_field(frame: Mapping[str, Any], t: str, field: str, max_len: int | None = None) -> str:
    value = get_field(frame, t, field)
    if type(value) is not str:
        bad_field(t, field, "a string", value)
    if max_len is not None and len(value) > max_len:
        raise RemoteProtocolError(f"{t}.{field}: longer than {max_len} characters", code=MALFORMED_FRAME)
    return value


def opt_str_field(frame: Mapping[str, Any], t: str, field: str) -> str | None:
    value = frame.get(field)
    if value is not None and type(value) is not str:
        bad_field(t, field, "a string or nil", value)
    return value


def bytes_field(frame: Mapping[str, Any], t: str, field: str, size: int) -> bytes:
    value = get_field(frame, t, field)
    if type(value) is not bytes:
        bad_field(t, field, f"{size} bytes", value)
    if len(value) != size:
        raise RemoteProtocolError(
            f"{t}.{field}: expected {size} bytes, got {len(value)}", code=MALFORMED_FRAME
        )
    return value


_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _refuse(item: Any, where: str) -> NoReturn:
    if type(item) is float:
        raise RemoteProtocolError(f"{where}: {item} is not a JSON number", code=MALFORMED_FRAME)
    raise RemoteProtocolError(f"{where}: {type(item).__name__} is not a JSON value", code=MALFORMED_FRAME)


def check_json(value: Any, where: str) -> None:
    """Raise :class:`RemoteProtocolError` unless ``value`` is plain JSON data.

    msgpack can carry what JSON cannot (bytes, timestamps, non-string map keys, NaN and
    infinities); state values are JSON, and such a value would only fail much later in a
    worker's JSON encoder or a size check. The walk is iterative: nesting depth is bounded by
    msgpack, not by Python's recursion limit. Scalars (the common case) return at once, and
    the members of a container are checked in place: only nested containers go on the stack.
    """
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is float:
        if not math.isfinite(value):
            _refuse(value, where)
        return
    if kind is not dict and kind is not list:
        _refuse(value, where)
    scalars, isfinite = _SCALARS, math.isfinite
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise RemoteProtocolError(
                        f"{where}: JSON object keys must be strings", code=MALFORMED_FRAME
                    )
            members = item.values()
        else:
            members = item
        for sub in members:
            kind = type(sub)
            if kind in scalars:
                continue
            if kind is dict or kind is list:
                push(sub)
            elif kind is not float or not isfinite(sub):
                _refuse(sub, where)


def json_field(frame: Mapping[str, Any], t: str, field: str) -> Any:
    value = get_field(frame, t, field)
    check_json(value, f"{t}.{field}")
    return value
