"""Snapshot files: the whole table at one revision, in the log's own record format.

A snapshot is ``BEGIN``, one ``PUT`` per live key (its own revision, scopes and keys in
insertion order, so list order survives compaction), then ``END`` carrying the key count.
It is written to ``*.tmp``, fsynced and renamed, so a snapshot file on disk is always complete;
any failed check when reading one is corruption, never a torn tail.

Both functions block (they run in a worker thread).
"""

from __future__ import annotations

import os
from pathlib import Path

from adapters.kv.files import fsync_dir, snapshot_path
from adapters.kv.records import (
    NeedData,
    Op,
    Record,
    decode_at,
    decode_value,
    encode_put,
    encode_record,
    encode_value,
)
from adapters.kv.table import KvTable, TableImage
from gateway.errors import CorruptDataError

__all__ = ["read_snapshot", "write_snapshot"]

_CHUNK = 1 << 20


def write_snapshot(directory: Path, revision: int, epoch: str, image: TableImage) -> tuple[Path, int]:
    """Write ``image`` (the table at ``revision``) durably; returns its path and size."""
    path = snapshot_path(directory, revision)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    size = 0
    with open(tmp, "wb") as fh:
        begin = Record(Op.SNAPSHOT_BEGIN, revision, "", "", encode_value({"epoch": epoch, "format": 1}))
        chunk = bytearray(encode_record(begin))
        for scope, keys in image:
            for key, (key_revision, value) in keys.items():
                chunk += encode_put(key_revision, scope, key, value)
                count += 1
                if len(chunk) >= _CHUNK:
                    fh.write(chunk)
                    size += len(chunk)
                    chunk.clear()
        chunk += encode_record(Record(Op.SNAPSHOT_END, revision, "", "", encode_value(count)))
        fh.write(chunk)
        size += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)
    return path, size


def read_snapshot(path: Path, revision: int, table: KvTable) -> int:
    """Load a snapshot into an empty ``table``; returns the number of keys loaded."""
    data = path.read_bytes()
    where = str(path)

    def fail(message: str, offset: int) -> CorruptDataError:
        return CorruptDataError(message, path=where, offset=offset)

    offset = 0
    count = 0
    began = False
    while True:
        try:
            result = decode_at(data, offset)
        except CorruptDataError as exc:
            raise fail(exc.message, offset) from exc
        if isinstance(result, NeedData):
            raise fail("snapshot ends before its END record", offset)
        record, end = result
        if not began:
            if record.op is not Op.SNAPSHOT_BEGIN or record.revision != revision:
                raise fail("snapshot does not start with BEGIN at its revision", offset)
            began = True
        elif record.op is Op.PUT:
            if record.revision > revision:
                raise fail(f"key revision {record.revision} is after the snapshot", offset)
            if table.put(record.scope, record.key, (record.revision, record.value or b"")) is not None:
                raise fail("key appears twice", offset)
            count += 1
        elif record.op is Op.SNAPSHOT_END:
            try:
                expected = decode_value(record.value or b"\xc0")
            except CorruptDataError as exc:
                raise fail(exc.message, offset) from exc
            if expected != count or record.revision != revision:
                raise fail(f"END says {expected!r} keys, read {count}", offset)
            if end != len(data):
                raise fail("bytes after the END record", end)
            return count
        else:
            raise fail(f"unexpected {record.op.name} record in a snapshot", offset)
        offset = end
