"""Length-prefixed msgpack framing for the federation link (pure, no I/O).

A frame is a 4-byte big-endian body length followed by the body, one msgpack *map* whose keys
are strings. TCP gives a byte stream, so the length prefix is what lets a reader cut it into
messages without parsing msgpack incrementally, and it lets us refuse an oversized frame from
its header alone, before a single byte of its body is buffered (a peer cannot make us allocate
more than ``max_frame_size``).

The decoder is strict on purpose, because everything after it trusts its output:

- a length over the limit raises :class:`RemoteProtocolError` with code ``FRAME_TOO_LARGE``;
- a body that is not exactly one msgpack map with string keys (bad msgpack, trailing bytes, an
  empty body, an array, invalid UTF-8, an ext type) raises code ``MALFORMED_FRAME``.

msgpack's own limits (``max_str_len`` ...) are set to the body length explicitly: a length
header inside the body can then never claim more than the body holds. Extension types are
refused (nothing on the link uses them), msgpack timestamps decode to ``msgpack.Timestamp``
and are refused later by the message field checks.

After an error the decoder is poisoned: every later call raises the same error, so a caller that
ignores the first one cannot resynchronise on garbage.

``canonical_pack`` is the deterministic encoding (map keys sorted) that the handshake hashes:
both ends must produce the same bytes for the same logical message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn

import msgpack

from gateway.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_TOO_LARGE",
    "HEADER_SIZE",
    "MALFORMED_FRAME",
    "PRE_AUTH_MAX_FRAME_SIZE",
    "FrameDecoder",
    "SharedFrame",
    "canonical_pack",
    "encode_frame",
    "new_packer",
]

HEADER_SIZE: Final = 4
# Handshake frames are a few hundred bytes; anything bigger before authentication is hostile.
PRE_AUTH_MAX_FRAME_SIZE: Final = 4 * 1024
# After authentication: large enough for big values and snapshots, small enough to bound memory.
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
_MAX_LENGTH_FIELD: Final = 2**32 - 1
# Bodies up to this size are decoded from a copy (cheaper than two memoryviews for the small
# frames of the hot path); larger ones straight from the buffer.
_COPY_LIMIT: Final = 64 * 1024
_read_length: Final = struct.Struct(">I").unpack_from

FRAME_TOO_LARGE: Final = "FRAME_TOO_LARGE"
MALFORMED_FRAME: Final = "MALFORMED_FRAME"

Frame = dict[str, Any]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed on the link")


def new_packer() -> msgpack.Packer:
    """A reusable encoder for :func:`encode_frame` (one per connection: not for threads)."""
    return msgpack.Packer(use_bin_type=True)


def encode_frame(
    body: Mapping[str, Any], max_frame_size: int | None = None, packer: msgpack.Packer | None = None
) -> bytes:
    """The frame bytes (length prefix + msgpack) of ``body``.

    Raises :class:`LocalProtocolError` with code ``FRAME_TOO_LARGE`` when the body is over
    ``max_frame_size`` (our caller built something the peer would refuse; it can answer with an
    error instead), or with code ``MALFORMED_FRAME`` when ``body`` holds something msgpack
    cannot encode. A ``packer`` from :func:`new_packer` saves building one per frame (it resets
    itself when a value cannot be encoded).
    """
    try:
        if packer is not None:
            payload: bytes = packer.pack(body)
        else:
            payload = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode frame: {exc}", code=MALFORMED_FRAME) from exc
    size = len(payload)
    limit = _frame_limit(max_frame_size)
    if size > limit:
        raise _too_large(size, limit)
    return size.to_bytes(HEADER_SIZE, "big") + payload


def _frame_limit(max_frame_size: int | None) -> int:
    return _MAX_LENGTH_FIELD if max_frame_size is None else min(max_frame_size, _MAX_LENGTH_FIELD)


def _too_large(size: int, limit: int) -> LocalProtocolError:
    return LocalProtocolError(
        f"frame of {size} bytes exceeds the maximum frame size of {limit} bytes", code=FRAME_TOO_LARGE
    )


class SharedFrame:
    """One frame body encoded once, sent to many peers that differ in one integer field only.

    Fan-out of a change to many watches: every copy carries the same change and only its
    subscription id differs, so the map (its values included) is packed once here and
    :meth:`frame` prepends the map header and the one field per copy. The result is the same
    msgpack map a plain :func:`encode_frame` of the full body gives (field order aside).

    Raises :class:`LocalProtocolError` (``MALFORMED_FRAME``) when ``body`` cannot be encoded.
    """

    __slots__ = ("_field", "_header", "_pairs")

    def __init__(self, body: Mapping[str, Any], field: str) -> None:
        if field in body:
            raise ValueError(f"the shared body already has the field {field!r}")
        try:
            packed: bytes = msgpack.packb(body, use_bin_type=True)
            self._field: bytes = msgpack.packb(field, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode frame: {exc}", code=MALFORMED_FRAME) from exc
        count = len(body) + 1
        # A map header is one byte up to 15 entries (fixmap), else 0xde and a 16-bit count.
        self._pairs = packed[1:] if len(body) < 16 else packed[3:]
        self._header = bytes([0x80 | count]) if count < 16 else b"\xde" + count.to_bytes(2, "big")

    def frame(self, value: int, max_frame_size: int | None = None) -> bytes:
        """The frame bytes of the body with ``field = value`` (same errors as encode_frame)."""
        try:
            packed: bytes = msgpack.packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode frame: {exc}", code=MALFORMED_FRAME) from exc
        head = self._header + self._field + packed
        size = len(head) + len(self._pairs)
        limit = _frame_limit(max_frame_size)
        if size > limit:
            raise _too_large(size, limit)
        return size.to_bytes(HEADER_SIZE, "big") + head + self._pairs


def _sort_key(key: Any) -> tuple[int, bytes]:
    # str and bytes keys can share a map; order str before bytes, each by its bytes.
    if isinstance(key, str):
        return (0, key.encode("utf-8", "surrogatepass"))
    if isinstance(key, bytes):
        return (1, key)
    # Non-string keys (ints) cannot come from our decoder; order them after, by their encoding.
    return (2, msgpack.packb(key, use_bin_type=True))


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _canonical(obj[k]) for k in sorted(obj, key=_sort_key)}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    return obj


def canonical_pack(obj: Any) -> bytes:
    """msgpack of ``obj`` with every map's keys sorted: equal values give equal bytes.

    msgpack already picks the shortest encoding for each int and str; sorting keys removes the
    one remaining freedom (map order), so both handshake ends hash identical bytes.
    """
    return msgpack.packb(_canonical(obj), use_bin_type=True)  # type: ignore[no-any-return]


class FrameDecoder:
    """Cuts a byte stream into frames (dicts). Feed bytes, then pull frames until ``None``.

    ``max_frame_size`` may be raised after the handshake (it starts at the pre-auth limit in
    :class:`~gateway.link.connection.LinkConnection`); the new limit applies to the next frame
    whose header has not been checked yet.
    """

    __slots__ = ("_buf", "_error", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (a partial frame at most, when drained)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. Cheap: parsing happens in :meth:`next_frame`."""
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` when more bytes are needed.

        Raises :class:`RemoteProtocolError` (``FRAME_TOO_LARGE`` or ``MALFORMED_FRAME``).
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        start = self._pos
        available = len(buf) - start
        if available < HEADER_SIZE:
            self._compact()
            return None
        (length,) = _read_length(buf, start)
        if length > self.max_frame_size:
            self._fail(
                f"frame of {length} bytes exceeds the maximum frame size of {self.max_frame_size} bytes",
                FRAME_TOO_LARGE,
            )
        if available < HEADER_SIZE + length:
            self._compact()
            return None
        end = start + HEADER_SIZE + length
        self._pos = end
        if length <= _COPY_LIMIT:
            return self._decode(buf[start + HEADER_SIZE : end])
        # Decode straight from the buffer (no copy); the views are released before the buffer
        # can be resized again.
        with memoryview(buf) as whole, whole[start + HEADER_SIZE : end] as body:
            return self._decode(body)

    def __iter__(self) -> Iterator[Frame]:
        """Every complete frame currently buffered."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _decode(self, body: memoryview | bytearray) -> Frame:
        n = len(body)
        try:
            obj = msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                use_list=True,
                ext_hook=_refuse_ext,
                max_str_len=n,
                max_bin_len=n,
                max_array_len=n,
                max_map_len=n,
                max_ext_len=n,
            )
        except Exception as exc:  # msgpack raises ValueError subclasses, TypeError, UnicodeError
            self._fail(f"frame body is not valid msgpack: {type(exc).__name__}: {exc}", MALFORMED_FRAME)
        if not isinstance(obj, dict):
            self._fail(f"frame body must be a msgpack map, got {type(obj).__name__}", MALFORMED_FRAME)
        for key in obj:
            if type(key) is not str:
                self._fail("frame map keys must be strings", MALFORMED_FRAME)
        return obj

    def _fail(self, message: str, code: str) -> NoReturn:
        self._error = RemoteProtocolError(message, code=code)
        raise self._error
