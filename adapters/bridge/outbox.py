"""The Bridge's offline outbox: a durable, bounded, ordered queue of writes made while the
upstream was unreachable.

**File format** (``<path>/outbox.log``, append-only). One record::

    offset  size  field
    0       4     CRC32 (little-endian) of bytes 4 .. end
    4       4     body length (little-endian u32)
    8       n     body: msgpack array

and two kinds of body: ``[1, seq, op, scope, key, payload, idem, queued_at]`` queues write
number ``seq`` (``op`` is ``set``/``delete``/``update``; ``payload`` the value, nil, or the
update's ops and max_value_bytes), ``[2, seq]`` says every write up to ``seq`` reached the
upstream. Own records rather than the kv store's: those carry a store revision and one value,
these carry an idempotency key, a timestamp and an op list.

**Crash safety** is the kv log's: a record is acknowledged to the caller only after it was
written and fsynced; on open, a record that fails its length or CRC check at the end of the
file is a torn tail (a crash in the middle of an append) and is cut off; one followed by more
data is corruption and refuses to open (the queue's order would be lost). When everything
queued is acknowledged the file is truncated to empty, so it never grows without bound.

**Exactly once.** Each queued write carries an idempotency key made when it is queued
(``<engine id>:<random>``) and kept in the file. Replaying sends it with the write; the
upstream remembers recent keys and answers a repeat with the first result instead of applying
it again. So a crash between "the upstream applied it" and "we wrote the ack" costs one
repeated request, not a repeated write.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from gateway.errors import AdapterUnavailable, CorruptDataError
from gateway.link.requests import DeleteArgs, SetArgs, UpdateArgs

__all__ = ["Outbox", "OutboxFull", "QueuedWrite", "decode_records", "encode_ack", "encode_write"]

_HEADER: Final = struct.Struct("<II")
_MAX_BODY: Final = 1 << 30
_WRITE: Final = 1
_ACK: Final = 2
OPS: Final = frozenset({"set", "delete", "update"})


class OutboxFull(AdapterUnavailable):
    """The upstream is unreachable and the outbox is at its entry or byte limit: the write is
    refused, nothing is queued (an ``UPSTREAM_UNAVAILABLE`` with its own code)."""

    code = "OUTBOX_FULL"


@dataclass(frozen=True, slots=True)
class QueuedWrite:
    seq: int
    op: str
    scope: str
    key: str
    payload: Any
    idem: str
    queued_at: float
    size: int  # bytes of its record in the file

    def request(self, engine_id: str) -> SetArgs | DeleteArgs | UpdateArgs:
        """The link request that replays it, with its idempotency key."""
        payload, origin = self.payload
        origin = origin or engine_id
        if self.op == "set":
            return SetArgs(self.scope, self.key, payload, origin, idem=self.idem)
        if self.op == "delete":
            return DeleteArgs(self.scope, self.key, origin, idem=self.idem)
        ops, limit = payload
        return UpdateArgs(self.scope, self.key, tuple(ops), origin, idem=self.idem, max_value_bytes=limit)


def _frame(body: bytes) -> bytes:
    head = struct.pack("<I", len(body))
    return struct.pack("<I", zlib.crc32(head + body)) + head + body


def encode_write(write: QueuedWrite) -> bytes:
    body = msgpack.packb(
        [_WRITE, write.seq, write.op, write.scope, write.key, write.payload, write.idem, write.queued_at],
        use_bin_type=True,
    )
    return _frame(body)


def encode_ack(seq: int) -> bytes:
    return _frame(msgpack.packb([_ACK, seq]))


def _parse(body: bytes, size: int) -> QueuedWrite | int:
    fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], int):
        raise ValueError("not an outbox record")
    if fields[0] == _ACK and len(fields) == 2 and isinstance(fields[1], int):
        return int(fields[1])
    if fields[0] != _WRITE or len(fields) != 8:
        raise ValueError("unknown outbox record")
    _, seq, op, scope, key, payload, idem, queued_at = fields
    if not (
        isinstance(seq, int)
        and op in OPS
        and isinstance(scope, str)
        and isinstance(key, str)
        and isinstance(idem, str)
        and isinstance(queued_at, (int, float))
    ):
        raise ValueError("malformed outbox write")
    return QueuedWrite(seq, op, scope, key, payload, idem, float(queued_at), size)


def decode_records(data: bytes) -> tuple[list[QueuedWrite | int], int]:
    """Every intact record, and the length of the intact prefix. A bad record at the end is a
    torn tail (the caller truncates to the prefix); a bad one followed by an intact record is
    corruption (:class:`CorruptDataError`)."""
    records: list[QueuedWrite | int] = []
    offset = 0
    while offset < len(data):
        parsed = _decode_one(data, offset)
        if parsed is None:
            if _intact_follows(data, offset + 1):
                raise CorruptDataError(f"outbox record at byte {offset} is damaged and data follows it")
            return records, offset
        record, end = parsed
        records.append(record)
        offset = end
    return records, offset


def _decode_one(data: bytes, offset: int) -> tuple[QueuedWrite | int, int] | None:
    if len(data) - offset < _HEADER.size:
        return None
    crc, length = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if length > _MAX_BODY or end > len(data):
        return None
    if zlib.crc32(data[offset + 4 : end]) != crc:
        return None
    try:
        return _parse(data[offset + _HEADER.size : end], end - offset), end
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData):
        return None


def _intact_follows(data: bytes, start: int) -> bool:
    """Whether an intact record starts anywhere after ``start`` (bounded scan)."""
    for offset in range(start, min(len(data), start + (1 << 16))):
        if _decode_one(data, offset) is not None:
            return True
    return False


class Outbox:
    """The queue file of one gateway (see the module docstring). Not thread-safe: one event
    loop owns it; appends are small synchronous writes plus an fsync."""

    def __init__(self, path: str, *, max_entries: int, max_bytes: int, engine_id: str) -> None:
        self.directory = Path(path)
        self.file = self.directory / "outbox.log"
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.engine_id = engine_id
        self.pending: deque[QueuedWrite] = deque()
        self.bytes = 0
        self.replayed_total = 0
        self._next_seq = 1
        self._fd: int | None = None

    def open(self) -> None:
        """Read the file, cut a torn tail, keep the writes not yet acknowledged."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self.file.read_bytes() if self.file.exists() else b""
        records, intact = decode_records(data)
        acked = 0
        writes: list[QueuedWrite] = []
        for record in records:
            if isinstance(record, int):
                acked = max(acked, record)
            else:
                writes.append(record)
                self._next_seq = max(self._next_seq, record.seq + 1)
        self._fd = os.open(self.file, os.O_WRONLY | os.O_CREAT, 0o600)
        if intact < len(data):
            os.ftruncate(self._fd, intact)
            os.fsync(self._fd)
        os.lseek(self._fd, 0, os.SEEK_END)
        self.pending = deque(w for w in writes if w.seq > acked)
        self.bytes = sum(w.size for w in self.pending)
        if not self.pending and intact:
            self._truncate()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        return len(self.pending)

    def oldest_age(self) -> float:
        return time.time() - self.pending[0].queued_at if self.pending else 0.0

    def append(self, op: str, scope: str, key: str, payload: Any) -> QueuedWrite:
        """Queue one write durably (fsynced before returning), or raise :class:`OutboxFull`."""
        assert self._fd is not None, "outbox not open"
        idem = f"{self.engine_id}:{secrets.token_hex(12)}"
        write = QueuedWrite(self._next_seq, op, scope, key, payload, idem, time.time(), 0)
        data = encode_write(write)
        if len(self.pending) >= self.max_entries or self.bytes + len(data) > self.max_bytes:
            raise OutboxFull(
                f"the offline outbox is full ({len(self.pending)} writes, {self.bytes} bytes; "
                f"limits {self.max_entries} writes, {self.max_bytes} bytes)"
            )
        os.write(self._fd, data)
        os.fsync(self._fd)
        write = QueuedWrite(write.seq, op, scope, key, payload, idem, write.queued_at, len(data))
        self._next_seq += 1
        self.pending.append(write)
        self.bytes += len(data)
        return write

    def ack_first(self) -> None:
        """The oldest queued write reached the upstream: record it, forget it."""
        assert self._fd is not None, "outbox not open"
        write = self.pending.popleft()
        self.bytes -= write.size
        self.replayed_total += 1
        if not self.pending:
            self._truncate()
            return
        os.write(self._fd, encode_ack(write.seq))
        os.fsync(self._fd)

    def _truncate(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.fsync(self._fd)
