"""The log-record codec of the embedded kv store: pure functions over bytes, no I/O.

One record is one committed write (or, in a snapshot file, one live key)::

    offset  size  field
    0       4     CRC32 (little-endian) of bytes 4 .. end: length, revision and body
    4       4     body length (little-endian u32)
    8       8     revision (little-endian u64)
    16      n     body: msgpack array [op, scope, key, value]

``value`` is a msgpack ``bin`` that holds the msgpack encoding of the JSON value (see
:func:`encode_value`), or nil for a delete. Keeping the value as an opaque blob means the
store can keep the very bytes it logged in memory and replay never re-encodes a value.

The CRC covers the length, so a flipped length byte fails the check instead of making the
reader skip to a wrong place. Whether a failing record is a torn tail (to be truncated) or
corruption (to be reported) is the caller's decision (``adapters.kv.files``): the codec only
says "this record is bad, here" or "not enough bytes yet".

Values are encoded so that every JSON value comes back exactly: integers beyond the 64-bit
msgpack range travel as an extension holding their decimal digits, strings that hold lone
surrogates (which Python's json module can produce) survive through ``surrogatepass``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from gateway.errors import CorruptDataError, InputError

__all__ = [
    "HEADER_SIZE",
    "MAX_BODY_BYTES",
    "NEED_DATA",
    "Fields",
    "NeedData",
    "Op",
    "Record",
    "RecordDecoder",
    "decode_at",
    "decode_chunk",
    "decode_fields",
    "decode_value",
    "encode_chunk",
    "encode_delete",
    "encode_put",
    "encode_record",
    "encode_value",
]

_HEADER: Final = struct.Struct("<IIQ")
HEADER_SIZE: Final = _HEADER.size
# A record body over this size is treated as damage: no value the gateway accepts gets near it
# (max_message_bytes defaults to 64 MiB), and it stops a flipped length byte from asking us to
# buffer gigabytes.
MAX_BODY_BYTES: Final = 1 << 30
_BIGINT_EXT: Final = 1
_UNICODE_ERRORS: Final = "surrogatepass"


class Op(enum.IntEnum):
    """What a record does.

    The log holds only PUT and DELETE. A snapshot file is BEGIN, CHUNKs (many keys of one scope
    in one record, so loading them is a few C-level calls instead of a Python loop per key),
    then END.
    """

    PUT = 1
    DELETE = 2
    SNAPSHOT_BEGIN = 3
    SNAPSHOT_END = 4
    SNAPSHOT_CHUNK = 5


class NeedData:
    """Sentinel type: the buffer ends inside a record."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record. ``value`` is the encoded JSON value (None for a delete)."""

    op: Op
    revision: int
    scope: str
    key: str
    value: bytes | None


def _default(obj: Any) -> Any:
    if isinstance(obj, int):  # only reached for integers outside the 64-bit range
        return msgpack.ExtType(_BIGINT_EXT, str(obj).encode("ascii"))
    raise TypeError(f"{type(obj).__name__} is not a JSON value")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _BIGINT_EXT:
        return int(data.decode("ascii"))
    raise ValueError(f"unknown extension type {code}")


def encode_value(value: Any) -> bytes:
    """The stored form of a JSON value. Raises InputError for anything that is not JSON."""
    try:
        return msgpack.packb(value, default=_default, unicode_errors=_UNICODE_ERRORS)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"value cannot be stored: {exc}") from exc


def decode_value(data: bytes) -> Any:
    """A fresh Python object for a stored value (callers may mutate it freely)."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_ext_hook, unicode_errors=_UNICODE_ERRORS
        )
    except Exception as exc:  # msgpack raises many types on bad bytes; all mean "corrupt"
        raise CorruptDataError(f"stored value does not decode: {exc}") from exc


def _frame(revision: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY_BYTES:
        raise InputError(f"a record of {len(body)} bytes is over the store's limit of {MAX_BODY_BYTES}")
    length_rev = struct.pack("<IQ", len(body), revision)
    crc = zlib.crc32(body, zlib.crc32(length_rev))
    return struct.pack("<I", crc) + length_rev + body


def _check_names(scope: object, key: object) -> None:
    # Anything else would encode but make the log unreadable (the decoder insists on strings).
    if type(scope) is not str or type(key) is not str:
        raise InputError("scope and key must be strings")


def encode_put(revision: int, scope: str, key: str, value: bytes) -> bytes:
    """A PUT record: ``value`` is already in stored form (:func:`encode_value`)."""
    _check_names(scope, key)
    body = msgpack.packb([Op.PUT.value, scope, key, value], unicode_errors=_UNICODE_ERRORS)
    return _frame(revision, body)


def encode_delete(revision: int, scope: str, key: str) -> bytes:
    """A DELETE record (also written for a key that did not exist: every write has a record)."""
    _check_names(scope, key)
    body = msgpack.packb([Op.DELETE.value, scope, key, None], unicode_errors=_UNICODE_ERRORS)
    return _frame(revision, body)


def encode_chunk(
    revision: int, scope: str, keys: list[str], revisions: list[int], values: list[bytes]
) -> bytes:
    """A snapshot CHUNK: parallel lists of keys, their revisions and stored values."""
    payload = msgpack.packb([keys, revisions, values], unicode_errors=_UNICODE_ERRORS)
    return encode_record(Record(Op.SNAPSHOT_CHUNK, revision, scope, "", payload))


def decode_chunk(record: Record) -> tuple[list[str], list[int], list[bytes]]:
    """The lists of a CHUNK record; raises CorruptDataError (no offset) if they are malformed."""
    try:
        keys, revisions, values = msgpack.unpackb(record.value, raw=False, unicode_errors=_UNICODE_ERRORS)
    except Exception as exc:
        raise CorruptDataError(f"snapshot chunk does not decode: {exc}") from None
    if not (
        type(keys) is type(revisions) is type(values) is list and len(keys) == len(revisions) == len(values)
    ):
        raise CorruptDataError("snapshot chunk lists are malformed")
    if keys and not (
        set(map(type, keys)) == {str}
        and set(map(type, revisions)) == {int}
        and set(map(type, values)) == {bytes}
    ):
        raise CorruptDataError("snapshot chunk holds a value of the wrong type")
    return keys, revisions, values


def encode_record(record: Record) -> bytes:
    """Any record, e.g. the BEGIN/END frames of a snapshot."""
    body = msgpack.packb(
        [record.op.value, record.scope, record.key, record.value], unicode_errors=_UNICODE_ERRORS
    )
    return _frame(record.revision, body)


Fields = tuple[int, int, str, str, "bytes | None", int]
"""(op, revision, scope, key, value, end offset): a record without the object, for replay."""

_PUT: Final = int(Op.PUT)
_DELETE: Final = int(Op.DELETE)
_FRAMES: Final = (int(Op.SNAPSHOT_BEGIN), int(Op.SNAPSHOT_END), int(Op.SNAPSHOT_CHUNK))


def decode_fields(buf: bytes | bytearray, offset: int) -> Fields | NeedData:
    """The hot path of replay: decode the record at ``offset`` into a plain tuple.

    Returns NEED_DATA when the buffer ends inside the record. Raises CorruptDataError (with
    ``offset``) when it fails its checks. Slicing copies only this record's bytes, and no
    buffer export outlives the call, so a ``bytearray`` stays resizable.
    """
    if len(buf) - offset < HEADER_SIZE:
        return NEED_DATA
    crc, length, revision = _HEADER.unpack_from(buf, offset)
    if length > MAX_BODY_BYTES:
        raise CorruptDataError(f"record length {length} is over the limit", offset=offset)
    end = offset + HEADER_SIZE + length
    if end > len(buf):
        return NEED_DATA
    if zlib.crc32(buf[offset + 4 : end]) != crc:
        raise CorruptDataError("record checksum mismatch", offset=offset)
    try:
        body = msgpack.unpackb(buf[offset + HEADER_SIZE : end], raw=False, unicode_errors=_UNICODE_ERRORS)
    except Exception as exc:  # a valid CRC over bytes that are not msgpack (a bug, or crafted)
        raise CorruptDataError(f"record body does not decode: {exc}", offset=offset) from None
    if type(body) is not list or len(body) != 4:
        raise CorruptDataError("record body is not [op, scope, key, value]", offset=offset)
    op, scope, key, value = body
    if type(scope) is not str or type(key) is not str:
        raise CorruptDataError("record scope or key is not a string", offset=offset)
    if op == _PUT:
        if type(value) is not bytes:
            raise CorruptDataError("PUT record without a value", offset=offset)
    elif op == _DELETE:
        if value is not None:
            raise CorruptDataError("DELETE record with a value", offset=offset)
    elif op not in _FRAMES or not (value is None or type(value) is bytes):
        raise CorruptDataError(f"unknown record op {op!r}", offset=offset)
    return op, revision, scope, key, value, end


def decode_at(buf: bytes | bytearray, offset: int) -> tuple[Record, int] | NeedData:
    """Decode the record that starts at ``offset``: the record and the offset past it.

    Same outcomes as :func:`decode_fields` (NEED_DATA, or CorruptDataError with ``offset``).
    """
    fields = decode_fields(buf, offset)
    if isinstance(fields, NeedData):
        return fields
    op, revision, scope, key, value, end = fields
    return Record(Op(op), revision, scope, key, value), end


class RecordDecoder:
    """Incremental decoder for a byte stream of records (sans-IO, h11 style).

    ``feed`` bytes as they arrive and call ``next_record`` until it returns NEED_DATA.
    Offsets in errors count from the first byte ever fed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._consumed = 0  # stream offset of self._buf[0]

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as records."""
        return len(self._buf)

    def next_record(self) -> Record | NeedData:
        try:
            result = decode_at(self._buf, 0)
        except CorruptDataError as exc:
            raise CorruptDataError(str(exc.message), offset=self._consumed + (exc.offset or 0)) from exc
        if isinstance(result, NeedData):
            return result
        record, end = result
        del self._buf[:end]
        self._consumed += end
        return record
