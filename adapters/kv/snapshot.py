"""Snapshot files: the whole table at one revision, in the log's own record framing.

A snapshot is a ``BEGIN`` record, ``CHUNK`` records (up to :data:`CHUNK_KEYS` keys of one scope
each: parallel lists of keys, revisions and stored values, scopes and keys in insertion order,
so list order survives compaction), then ``END`` carrying the key count. Chunks make loading a
few C-level calls per thousand keys: a snapshot loads several times faster than replaying the
same keys from the log, which is what makes compaction pay off at restart.

It is written to ``*.tmp``, fsynced and renamed, so a snapshot file on disk is always complete;
any failed check when reading one is corruption, never a torn tail.

Both functions block (they run in a worker thread).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from adapters.kv.files import fsync_dir, snapshot_path
from adapters.kv.records import (
    NeedData,
    Op,
    Record,
    decode_at,
    decode_chunk,
    decode_value,
    encode_chunk,
    encode_record,
    encode_value,
)
from adapters.kv.table import KvTable, TableImage
from gateway.errors import CorruptDataError

__all__ = ["CHUNK_KEYS", "read_snapshot", "write_snapshot"]

CHUNK_KEYS = 4096
_WRITE_BYTES = 1 << 20


def write_snapshot(directory: Path, revision: int, epoch: str, image: TableImage) -> tuple[Path, int]:
    """Write ``image`` (the table at ``revision``) durably; returns its path and size."""
    path = snapshot_path(directory, revision)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    size = 0
    with open(tmp, "wb") as fh:
        begin = Record(Op.SNAPSHOT_BEGIN, revision, "", "", encode_value({"epoch": epoch, "format": 1}))
        pending = bytearray(encode_record(begin))
        for scope, keys in image:
            items = iter(keys.items())
            while batch := list(itertools.islice(items, CHUNK_KEYS)):
                names = [k for k, _ in batch]
                revisions = [slot[0] for _, slot in batch]
                values = [slot[1] for _, slot in batch]
                pending += encode_chunk(revision, scope, names, revisions, values)
                count += len(batch)
                if len(pending) >= _WRITE_BYTES:
                    fh.write(pending)
                    size += len(pending)
                    pending.clear()
        pending += encode_record(Record(Op.SNAPSHOT_END, revision, "", "", encode_value(count)))
        fh.write(pending)
        size += len(pending)
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
            if isinstance(result, NeedData):
                raise fail("snapshot ends before its END record", offset)
            record, end = result
            if not began:
                if record.op is not Op.SNAPSHOT_BEGIN or record.revision != revision:
                    raise fail("snapshot does not start with BEGIN at its revision", offset)
                began = True
            elif record.op is Op.SNAPSHOT_CHUNK:
                keys, revisions, values = decode_chunk(record)
                if revisions and max(revisions) > revision:
                    raise fail(f"a key revision is after the snapshot's {revision}", offset)
                if table.load(record.scope, keys, zip(revisions, values, strict=True)) != len(keys):
                    raise fail("a key appears twice", offset)
                count += len(keys)
            elif record.op is Op.SNAPSHOT_END:
                expected = decode_value(record.value or b"\xc0")
                if expected != count or record.revision != revision:
                    raise fail(f"END says {expected!r} keys, read {count}", offset)
                if end != len(data):
                    raise fail("bytes after the END record", end)
                return count
            else:
                raise fail(f"unexpected {record.op.name} record in a snapshot", offset)
        except CorruptDataError as exc:
            if exc.path is not None:
                raise
            raise fail(exc.message, offset) from exc
        offset = end
