"""The durable half of the kv store: load at start, then the write-ahead log pipeline.

:class:`Journal` owns the store directory while it is open: the lock, the identity file, the log
segments and the snapshots. The store hands it each committed write as a log record plus an
opaque change item, and the journal decides when the change may be published:

* Records go to an in-memory buffer; one flusher task writes the buffer to the active segment
  in a worker thread (``asyncio.to_thread``), so the event loop never blocks on the disk.
* ``fsync: always``: a write is acknowledged, and its change published, only after the fsync of
  its batch (group commit: every write that arrived while the previous fsync ran shares the
  next one). ``interval``: the first unsynced write opens a window of ``save_interval_ms``, at
  whose end the flusher fsyncs. ``never``: the OS decides. Close always fsyncs everything.
* Compaction: when the log has grown by ``compact_after_bytes`` since the last snapshot, the
  flusher rolls to a new segment, takes a shallow image of the table at exactly the revision of
  the batch it just took, and a background task writes the snapshot and then removes the
  segments it covers.
* An I/O error fails the journal for good (what reached the disk is unknown): every waiting and
  later write raises :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from adapters.kv.files import (
    SegmentLog,
    StoreLock,
    StoreMeta,
    list_segments,
    list_snapshots,
    read_meta,
    remove_temp_files,
    replay_segments,
    write_meta,
)
from adapters.kv.snapshot import read_snapshot, write_snapshot
from adapters.kv.table import KvTable, TableImage
from gateway.config.settings import KvSettings
from gateway.errors import CorruptDataError, StorageError

if TYPE_CHECKING:
    from gateway.metrics import Metrics

__all__ = ["Journal", "JournalTuning", "new_epoch"]

log = logging.getLogger("adapters.kv.store")

T = TypeVar("T")


def new_epoch() -> str:
    """A random store identity."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class JournalTuning:
    """Sizes the store exposes as class attributes (see ``KvAdapter``)."""

    segment_max_bytes: int
    max_buffer_bytes: int
    yield_buffer_bytes: int
    close_compact_min_bytes: int


class Journal(Generic[T]):
    """Log, snapshots and fsync policy of one open store directory."""

    def __init__(
        self,
        settings: KvSettings,
        table: KvTable,
        tuning: JournalTuning,
        *,
        revision: Callable[[], int],
        publish: Callable[[T], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.directory = Path(settings.file_path)
        self.tuning = tuning
        self.epoch = ""
        self.failure: StorageError | None = None
        self.torn_truncations = 0
        self.last_snapshot_revision = 0
        self._table = table
        self._revision = revision
        self._publish = publish
        self._metrics = metrics
        self._lock: StoreLock | None = None
        self._log: SegmentLog | None = None
        self._buf = bytearray()
        self._pending: list[T] = []
        self._batch: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._io_lock = asyncio.Lock()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_waiters: list[asyncio.Future[int]] = []
        self._force_compact = False
        self._sync_due_at: float | None = None
        self._bytes_since_snapshot = 0
        self._records_since_snapshot = 0

    # ------------------------------------------------------------------ open

    def load(self) -> int:
        """Lock the directory, load the newest snapshot, replay the log (blocking).

        Returns the revision the store is at. On failure the lock is released.
        """
        directory = self.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{directory}: cannot create the store directory: {exc}") from exc
        self._lock = StoreLock(directory)
        self._lock.acquire()
        try:
            return self._load(directory)
        except BaseException:
            self._lock.release()
            raise

    def _load(self, directory: Path) -> int:
        meta = read_meta(directory)
        segments = list_segments(directory)
        snapshots = list_snapshots(directory)
        if meta is None and (segments or snapshots):
            raise CorruptDataError(
                "the STORE identity file is missing but log files exist", path=str(directory)
            )
        remove_temp_files(directory)
        snapshot_revision = 0
        if snapshots:
            snapshot_revision, path = snapshots[-1]
            read_snapshot(path, snapshot_revision, self._table)
        replay = replay_segments(self._table, segments, snapshot_revision)
        if replay.torn is not None:
            self.torn_truncations += 1
            log.warning(
                "kv store %s: truncated a torn tail of %d bytes at offset %d of %s",
                directory, replay.torn.dropped_bytes, replay.torn.offset, replay.torn.path,
            )  # fmt: skip
        if meta is None:
            self.epoch = new_epoch()
        elif not meta.clean and meta.fsync != "always":
            # Changes published before their fsync may be gone and their revisions will be
            # reused: whoever resumes from a revision must not do it across this gap.
            self.epoch = new_epoch()
            log.warning(
                "kv store %s was not closed cleanly (fsync=%s): recent writes may be lost, "
                "starting a new epoch",
                directory, meta.fsync,
            )  # fmt: skip
        else:
            self.epoch = meta.epoch
        write_meta(directory, StoreMeta(self.epoch, clean=False, fsync=self.settings.fsync))
        for revision, path in snapshots[:-1]:
            if revision < snapshot_revision:
                path.unlink()
        self.last_snapshot_revision = snapshot_revision
        self._bytes_since_snapshot = replay.log_bytes
        self._records_since_snapshot = replay.records
        self._log = SegmentLog(
            directory, list_segments(directory), replay.revision + 1, on_fsync=self._observe_fsync
        )
        self._log.drop_through(snapshot_revision)
        if replay.log_revision is not None and replay.log_revision < replay.revision:
            # The log ends before the snapshot (its tail was lost after the snapshot was made):
            # appending there would leave a revision gap, so continue in a fresh segment.
            self._log.roll(replay.revision + 1)
        return replay.revision

    def start(self) -> None:
        """Start the flusher (on the running loop) once :meth:`load` has succeeded."""
        self._batch = asyncio.get_running_loop().create_future()
        self._flusher = asyncio.create_task(self._run_flusher(), name="kv-log-flusher")

    def _observe_fsync(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.fsync_duration.observe(seconds)

    # ------------------------------------------------------------------ writes

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def admit(self) -> None:
        """Back-pressure before a write: yield to the flusher, wait while the buffer is full."""
        if len(self._buf) >= self.tuning.yield_buffer_bytes:
            await asyncio.sleep(0)  # let the flusher take the buffer
            while (
                not self._closing and self.failure is None and len(self._buf) >= self.tuning.max_buffer_bytes
            ):
                self._drained.clear()
                await self._drained.wait()
        self.check()

    def append(self, record: bytes, change: T) -> None:
        """Log a committed write (no await); publish its change now or after its fsync."""
        self._buf += record
        self._records_since_snapshot += 1
        if self.settings.fsync == "always":
            self._pending.append(change)
        else:
            self._publish(change)
        self._wake.set()

    async def acknowledged(self) -> None:
        """With fsync=always, wait until the batch holding the last record is fsynced."""
        if self.settings.fsync == "always":
            assert self._batch is not None
            await asyncio.shield(self._batch)
            self.check()

    # ------------------------------------------------------------------ flusher

    async def _run_flusher(self) -> None:
        """The one writer of log files: batches, fsync policy, rolls, compaction triggers."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                due = self._sync_due_at
                if self._buf or self._force_compact or (due is not None and loop.time() >= due):
                    await self._flush_batch(loop)
                    continue
                if self._closing:
                    return
                timeout = None if due is None else max(0.0, due - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        except Exception as exc:
            self._fail(exc)

    async def _flush_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._log is not None and self._batch is not None
        data, self._buf = self._buf, bytearray()
        upto = self._revision()  # the table is exactly at this revision right now
        pending, self._pending = self._pending, []
        batch, self._batch = self._batch, loop.create_future()
        self._drained.set()
        policy = self.settings.fsync
        now = loop.time()
        if policy == "interval" and data and self._sync_due_at is None:
            self._sync_due_at = now + self.settings.save_interval_ms / 1000  # the loss window opens
        due = self._sync_due_at
        sync = policy == "always" or self._closing or (due is not None and now >= due)
        records = self._records_since_snapshot
        compact = (
            not self._closing
            and self._snapshot_task is None
            and (
                self._force_compact
                or self._bytes_since_snapshot + len(data) >= self.settings.compact_after_bytes
            )
        )
        roll_to: int | None = None
        if compact or self._log.active_bytes + len(data) >= self.tuning.segment_max_bytes:
            roll_to = upto + 1 if self._log.active_first_revision != upto + 1 else None
        image = self._table.image() if compact else None
        async with self._io_lock:
            await asyncio.to_thread(self._write_batch, data, sync, roll_to)
        if not self._log.unsynced:
            self._sync_due_at = None
        if data:
            self._bytes_since_snapshot += len(data)
            if self._metrics is not None:
                self._metrics.log_bytes_written.inc(len(data))
        for change in pending:
            self._publish(change)
        batch.set_result(None)
        if image is not None:
            self._force_compact = False
            self._bytes_since_snapshot = 0
            self._records_since_snapshot -= records  # writes made during the I/O stay counted
            self._snapshot_task = asyncio.create_task(self._snapshot(image, upto), name="kv-snapshot")

    def _write_batch(self, data: bytearray, sync: bool, roll_to: int | None) -> None:
        assert self._log is not None
        self._log.write(data)
        if roll_to is not None:
            self._log.roll(roll_to)  # fsyncs the closed segment
        elif sync and self._log.unsynced:
            self._log.sync()

    def _fail(self, exc: BaseException) -> None:
        log.error("kv store %s failed: %s", self.directory, exc, exc_info=exc)
        self.failure = exc if isinstance(exc, StorageError) else StorageError(f"kv store failed: {exc}")
        self._drained.set()
        if self._batch is not None and not self._batch.done():
            self._batch.set_result(None)
        for waiter in self._snapshot_waiters:
            if not waiter.done():
                waiter.set_exception(self.failure)
        self._snapshot_waiters.clear()

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self) -> int:
        """Compact now: snapshot the table, drop the log it covers. Returns its revision."""
        self.check()
        if self._snapshot_task is not None:
            await self._snapshot_task
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._snapshot_waiters.append(waiter)
        self._force_compact = True
        self._wake.set()
        return await waiter

    async def _snapshot(self, image: TableImage, revision: int) -> None:
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        try:
            await asyncio.to_thread(self._write_snapshot_files, image, revision)
            async with self._io_lock:
                assert self._log is not None
                await asyncio.to_thread(self._log.drop_through, revision)
        except (OSError, StorageError) as exc:
            log.error("kv store %s: snapshot at revision %d failed: %s", self.directory, revision, exc)
            if self._metrics is not None:
                self._metrics.snapshots.labels("error").inc()
            error = exc if isinstance(exc, StorageError) else StorageError(f"snapshot failed: {exc}")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        else:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(revision)
        finally:
            self._snapshot_task = None

    def _write_snapshot_files(self, image: TableImage, revision: int) -> None:
        write_snapshot(self.directory, revision, self.epoch, image)
        self.last_snapshot_revision = revision
        for older, path in list_snapshots(self.directory):
            if older < revision:
                path.unlink()
        if self._metrics is not None:
            self._metrics.snapshots.labels("ok").inc()

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        """Drain and fsync the log, compact if worthwhile, mark the store clean, unlock."""
        self._closing = True
        self._drained.set()  # release writers waiting for buffer space
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        if self._snapshot_task is not None:
            await self._snapshot_task
        image: TableImage | None = None
        if self.failure is None and self._close_compaction_worthwhile():
            image = self._table.image()
        async with self._io_lock:
            await asyncio.to_thread(self._close_files, image, self._revision())

    def _close_compaction_worthwhile(self) -> bool:
        """A log record replays about six times slower than a snapshotted key loads."""
        return (
            self._bytes_since_snapshot >= self.tuning.close_compact_min_bytes
            and self._records_since_snapshot * 4 >= self._table.key_count
        )

    def _close_files(self, image: TableImage | None, revision: int) -> None:
        assert self._log is not None and self._lock is not None
        try:
            if self.failure is not None:
                with contextlib.suppress(OSError, StorageError):
                    self._log.close()
                return
            self._log.close()
            if image is not None:
                self._write_snapshot_files(image, revision)
                self._log.remove_all()
            write_meta(self.directory, StoreMeta(self.epoch, clean=True, fsync=self.settings.fsync))
        finally:
            self._lock.release()

    def statistics(self) -> dict[str, float]:
        logf = self._log
        return {
            "kv_log_bytes": logf.total_bytes if logf else 0,
            "kv_log_segments": len(logf.segments) if logf else 0,
            "kv_log_bytes_since_snapshot": self._bytes_since_snapshot,
            "kv_last_snapshot_revision": self.last_snapshot_revision,
            "kv_torn_tail_truncations_total": self.torn_truncations,
            "kv_fsyncs_total": logf.fsyncs if logf else 0,
            "kv_write_buffer_bytes": len(self._buf),
        }
