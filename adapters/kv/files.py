"""The files of a durable kv store directory: lock, identity, log segments, replay.

Directory layout (``file_path`` is a directory; scope and key names never become file names)::

    LOCK                      flock()ed while a process has the store open
    STORE                     JSON identity: epoch, clean-shutdown flag, last fsync policy
    wal-<first revision>.log  log segments, records in strictly consecutive revision order
    snap-<revision>.snap      the table at that revision (records framed by BEGIN/END)
    *.tmp                     a file being written; removed at start

Every function here blocks; the store runs them in a worker thread (``asyncio.to_thread``) or
before the event loop serves anything. Failures surface as :class:`StorageError`, damaged bytes
as :class:`CorruptDataError` naming the file and offset.

**Torn tail.** A crash can leave the last segment ending in a partial or garbled record. A bad
record in the *last* segment is a torn tail when no intact record follows it (the next records
would carry the next revisions, so we search for them); it is truncated and reported. A bad record
anywhere else, or one followed by intact records, is corruption and start fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.kv.records import NEED_DATA, NeedData, Op, decode_at, decode_fields
from adapters.kv.table import KvTable
from gateway.errors import CorruptDataError, StorageError

__all__ = [
    "SegmentLog",
    "SegmentReplay",
    "StoreLock",
    "StoreMeta",
    "TornTail",
    "fsync_dir",
    "list_segments",
    "list_snapshots",
    "read_meta",
    "remove_temp_files",
    "replay_segments",
    "segment_path",
    "snapshot_path",
    "write_file_atomic",
    "write_meta",
]

_SEGMENT = ("wal-", ".log")
_SNAPSHOT = ("snap-", ".snap")
_META = "STORE"
_LOCK = "LOCK"
_FORMAT = 1
_PUT = int(Op.PUT)
_DELETE = int(Op.DELETE)


def _numbered(directory: Path, kind: tuple[str, str]) -> list[tuple[int, Path]]:
    prefix, suffix = kind
    found = []
    for entry in os.scandir(directory):
        name = entry.name
        if name.startswith(prefix) and name.endswith(suffix):
            digits = name[len(prefix) : -len(suffix)]
            if digits.isdigit():
                found.append((int(digits), Path(entry.path)))
    found.sort()
    return found


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first revision, path) of every log segment, oldest first."""
    return _numbered(directory, _SEGMENT)


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(revision, path) of every snapshot, oldest first."""
    return _numbered(directory, _SNAPSHOT)


def segment_path(directory: Path, first_revision: int) -> Path:
    return directory / f"{_SEGMENT[0]}{first_revision:020d}{_SEGMENT[1]}"


def snapshot_path(directory: Path, revision: int) -> Path:
    return directory / f"{_SNAPSHOT[0]}{revision:020d}{_SNAPSHOT[1]}"


def fsync_dir(directory: Path) -> None:
    """Make renames, creations and removals in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: tmp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_temp_files(directory: Path) -> None:
    """Leftovers of a write that never finished (a snapshot or STORE cut short by a crash)."""
    for entry in os.scandir(directory):
        if entry.name.endswith(".tmp"):
            os.unlink(entry.path)


class StoreLock:
    """An exclusive ``flock`` on ``<dir>/LOCK``: one process per store directory.

    The kernel drops the lock when the process dies, so a crashed owner never leaves a stale lock.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / _LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StorageError(
                f"{self.path.parent}: store is in use by another process (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """The identity of a store. ``clean`` is False while a process has it open."""

    epoch: str
    clean: bool
    fsync: str


def read_meta(directory: Path) -> StoreMeta | None:
    path = directory / _META
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        if doc["format"] != _FORMAT:
            raise CorruptDataError(f"unsupported store format {doc['format']!r}", path=str(path))
        return StoreMeta(epoch=str(doc["epoch"]), clean=bool(doc["clean"]), fsync=str(doc["fsync"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptDataError(f"store identity file does not parse: {exc}", path=str(path)) from exc


def write_meta(directory: Path, meta: StoreMeta) -> None:
    doc = {"format": _FORMAT, "epoch": meta.epoch, "clean": meta.clean, "fsync": meta.fsync}
    write_file_atomic(directory / _META, json.dumps(doc, sort_keys=True).encode() + b"\n")


@dataclass(frozen=True, slots=True)
class TornTail:
    """A truncated tail: the file, where it was cut and how many bytes went."""

    path: Path
    offset: int
    dropped_bytes: int


def _intact_record_follows(data: bytes, start: int, revisions: tuple[int, ...]) -> bool:
    """Whether an intact record with one of ``revisions`` starts somewhere after ``start``.

    The revision field sits 8 bytes into a record, so a byte search finds the candidates and
    the CRC check decides; this is what separates a torn tail from damage in the middle.
    """
    for revision in revisions:
        needle = struct.pack("<Q", revision)
        pos = data.find(needle, start + 9)
        while pos != -1:
            try:
                found = decode_at(data, pos - 8)
            except CorruptDataError:
                found = None
            if isinstance(found, tuple) and found[0].revision == revision:
                return True
            pos = data.find(needle, pos + 1)
    return False


@dataclass(slots=True)
class SegmentReplay:
    """What replaying the log found."""

    revision: int  # the store's revision: the last one in the log, or the snapshot's if later
    log_revision: int | None  # the last revision in the log (None: no segment to replay)
    records: int  # log records applied (after the snapshot)
    log_bytes: int  # bytes of the replayed segments after truncation
    torn: TornTail | None


def replay_segments(
    table: KvTable, segments: list[tuple[int, Path]], snapshot_revision: int
) -> SegmentReplay:
    """Apply the log on top of a table loaded at ``snapshot_revision``.

    Segments wholly at or before the snapshot are skipped unread. Revisions must run on without
    a gap from the snapshot; a torn tail of the last segment is truncated (and fsynced) here.
    """
    live = [
        (first, path)
        for i, (first, path) in enumerate(segments)
        if i + 1 >= len(segments) or segments[i + 1][0] > snapshot_revision + 1
    ]
    expected = snapshot_revision + 1
    if live and live[0][0] > expected:
        raise CorruptDataError(
            f"log starts at revision {live[0][0]} but the snapshot ends at {snapshot_revision}: "
            "records are missing",
            path=str(live[0][1]),
        )
    if live:
        expected = live[0][0]
    applied = 0
    log_bytes = 0
    torn: TornTail | None = None
    put, remove = table.put, table.remove
    for index, (first, path) in enumerate(live):
        if first != expected:
            raise CorruptDataError(
                f"segment should start at revision {expected}, its name says {first}", path=str(path)
            )
        is_last = index == len(live) - 1
        data = path.read_bytes()
        offset = 0
        size = len(data)
        while offset < size:
            try:
                fields = decode_fields(data, offset)
                failure = "record is cut short"
            except CorruptDataError as exc:
                fields, failure = NEED_DATA, exc.message
            if isinstance(fields, NeedData):
                if not is_last or _intact_record_follows(data, offset, (expected + 1, expected + 2)):
                    raise CorruptDataError(failure, path=str(path), offset=offset)
                torn = TornTail(path, offset, size - offset)
                _truncate(path, offset)
                break
            op, revision, scope, key, value, end = fields
            if revision != expected or (op != _PUT and op != _DELETE):
                raise CorruptDataError(
                    f"expected a write at revision {expected}, found op {op} at revision {revision}",
                    path=str(path),
                    offset=offset,
                )
            if revision > snapshot_revision:
                if value is not None:
                    put(scope, key, (revision, value))
                else:
                    remove(scope, key)
                applied += 1
            expected += 1
            offset = end
        log_bytes += offset
    return SegmentReplay(
        revision=max(expected - 1, snapshot_revision) if live else snapshot_revision,
        log_revision=expected - 1 if live else None,
        records=applied,
        log_bytes=log_bytes,
        torn=torn,
    )


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentLog:
    """The append side of the log: the active segment, its siblings, fsync and roll.

    Not thread-safe by itself: the store calls it from one flusher at a time (in a worker
    thread), never concurrently.
    """

    def __init__(
        self,
        directory: Path,
        segments: list[tuple[int, Path]],
        next_revision: int,
        *,
        on_fsync: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_fsync = on_fsync
        self.segments: list[tuple[int, Path]] = list(segments)
        self.fsyncs = 0
        self.bytes_written = 0
        self.unsynced = False
        if not self.segments:
            self.segments.append((next_revision, segment_path(directory, next_revision)))
        path = self.segments[-1][1]
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.active_bytes = os.fstat(self._fd).st_size
        self.total_bytes = sum(p.stat().st_size for _, p in self.segments[:-1]) + self.active_bytes
        fsync_dir(directory)

    @property
    def active_first_revision(self) -> int:
        return self.segments[-1][0]

    def _fileno(self) -> int:
        if self._fd is None:
            raise StorageError("the log is closed")
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> None:
        fd = self._fileno()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        size = len(data)
        self.active_bytes += size
        self.total_bytes += size
        self.bytes_written += size
        if size:
            self.unsynced = True

    def sync(self) -> None:
        fd = self._fileno()
        started = time.perf_counter()
        os.fsync(fd)
        elapsed = time.perf_counter() - started
        self.fsyncs += 1
        self.unsynced = False
        if self._on_fsync is not None:
            self._on_fsync(elapsed)

    def roll(self, next_revision: int) -> None:
        """Close the active segment durably and start ``wal-<next_revision>``."""
        self.sync()
        os.close(self._fileno())
        self._fd = None
        path = segment_path(self.directory, next_revision)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.segments.append((next_revision, path))
        self.active_bytes = 0
        fsync_dir(self.directory)

    def drop_through(self, revision: int) -> None:
        """Remove every closed segment whose records are all at or before ``revision``."""
        keep: list[tuple[int, Path]] = []
        for i, (first, path) in enumerate(self.segments):
            is_active = i == len(self.segments) - 1
            covered = not is_active and self.segments[i + 1][0] <= revision + 1
            if covered:
                self.total_bytes -= path.stat().st_size
                path.unlink()
            else:
                keep.append((first, path))
        self.segments = keep
        fsync_dir(self.directory)

    def close(self) -> None:
        """Fsync (if anything is unsynced) and close the active segment. Idempotent."""
        if self._fd is None:
            return
        if self.unsynced:
            self.sync()
        os.close(self._fd)
        self._fd = None

    def remove_all(self) -> None:
        """Delete every segment of a closed log (a snapshot at its last revision covers them)."""
        if self._fd is not None:
            raise StorageError("remove_all() on an open log")
        for _, path in self.segments:
            path.unlink()
        self.segments = []
        self.total_bytes = 0
        self.active_bytes = 0
        fsync_dir(self.directory)
