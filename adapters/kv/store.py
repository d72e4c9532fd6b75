"""``KvAdapter``: the embedded key-value store, in memory or durable (log + snapshots).

**Atomicity without a lock.** Every write runs its read-modify-write (read the old slot, apply
update ops, assign the next revision, change the table, append the log record) as one stretch of
code with no ``await`` in it, so on the event loop writes are serialized by construction:
500 concurrent increments sum exactly, and revisions, table order and log order always agree.
The only awaits of a write come before that stretch (back-pressure when the log buffer is full)
or after it (waiting for the fsync of its batch).

**Values.** The table keeps each value as its msgpack encoding (``bytes``, immutable; see
``adapters.kv.table``). Reads decode a fresh object, so a caller can mutate what it gets; a write
encodes once and that encoding is both the log body and the in-memory copy. ``set`` returns the
caller's own object as ``new_value``; ``update`` decodes the current value, lets
:func:`apply_ops` build the result copy-on-write, and returns both (they may share unchanged
sub-objects with each other, never with the store). Change events are decoded once per write
and shared by all sinks, which treat them as read-only.

**Durability** (``file_based``): records go to an in-memory buffer that one flusher task writes
to the active log segment in a worker thread. ``fsync: always`` acknowledges a write, and
publishes its change, only after the fsync of its batch (group commit: every write that arrived
while the previous fsync ran shares the next one). ``interval`` fsyncs at most
``save_interval_ms`` after the first unsynced write; ``never`` leaves it to the OS. With
``interval`` and ``never`` changes are published at once. Close always writes and fsyncs
everything. When the log has grown by ``compact_after_bytes`` since the last snapshot, the
flusher rolls to a new segment, takes a shallow image of the table at that exact revision and a
background task writes the snapshot, then removes the segments it covers.

**Revisions and epoch.** Every write (a delete of a missing key and an update whose ops all
failed included) takes the next revision, and the log holds strictly consecutive revisions.
``info().revision`` is the last *published* revision (with ``always``, a write is visible to
``get`` a moment before its fsync and its event). The epoch is a random id stored in the
directory; a new one is made for a new directory, and when the previous process stopped
without ``close()`` under ``interval``/``never``, because then published revisions may have been
lost and will be reused: watchers must not resume across that gap.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

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
from adapters.kv.records import decode_value, encode_delete, encode_put, encode_value
from adapters.kv.snapshot import read_snapshot, write_snapshot
from adapters.kv.table import KvTable, TableImage
from gateway.config.settings import KvSettings
from gateway.errors import CorruptDataError, StorageError, ValueTooLarge
from gateway.jsonutil import json_size
from gateway.state.adapter import Change, ChangeKind, ChangeSink, Entry, StoreInfo, WriteResult
from gateway.state.ops import apply_ops

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.state.ops import UpdateOp

__all__ = ["KvAdapter"]

log = logging.getLogger(__name__)

JSON = Any

_NEW: Final = "new"
_OPEN: Final = "open"
_CLOSING: Final = "closing"
_CLOSED: Final = "closed"
_FAILED: Final = "failed"


class _Raw(NamedTuple):
    """A committed change before decoding: cheap to keep in the history ring."""

    scope: str
    key: str
    kind: ChangeKind
    old: bytes | None
    new: bytes | None
    revision: int
    origin: str

    def change(self) -> Change:
        return Change(
            scope=self.scope,
            key=self.key,
            kind=self.kind,
            old_value=None if self.old is None else decode_value(self.old),
            new_value=None if self.new is None else decode_value(self.new),
            revision=self.revision,
            origin=self.origin,
        )


def _new_epoch() -> str:
    return secrets.token_hex(8)


class KvAdapter:
    """The ``kv`` state adapter. See the module docstring for the design."""

    name = "kv"

    #: A log segment is closed and a new one started past this size.
    segment_max_bytes: int = 64 * 1024 * 1024
    #: Log bytes buffered but not yet written before writers wait (back-pressure).
    max_buffer_bytes: int = 8 * 1024 * 1024
    #: Past this many buffered bytes a writer yields once, so a caller that never suspends
    #: (a tight loop of writes) cannot starve the flusher.
    yield_buffer_bytes: int = 512 * 1024
    #: At clean close, compact when the log since the snapshot has at least this many bytes and
    #: at least a quarter as many records as there are live keys: a log record replays about
    #: six times slower than a snapshotted key loads, so that is when the next start gains more
    #: than this close spends.
    close_compact_min_bytes: int = 64 * 1024

    def __init__(self, settings: KvSettings, *, engine_id: str, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine_id = engine_id
        self._metrics = metrics
        self._durable = settings.store_method == "file_based"
        self._dir = Path(settings.file_path)
        self._table = KvTable()
        self._sinks: list[ChangeSink] = []
        self._history: deque[_Raw] | None = (
            deque(maxlen=settings.history_size) if settings.history_size > 0 else None
        )
        self._history_floor = 0
        self._state = _NEW
        self._failure: StorageError | None = None
        self._epoch = ""
        self._revision = 0  # last assigned
        self._published = 0  # last whose change went out
        # file_based only
        self._lock: StoreLock | None = None
        self._log: SegmentLog | None = None
        self._buf = bytearray()
        self._pending: list[_Raw] = []  # fsync=always: changes waiting for their fsync
        self._batch: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._io_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_waiters: list[asyncio.Future[int]] = []
        self._force_compact = False
        self._sync_due_at: float | None = None  # fsync=interval: when unsynced data must be synced
        self._last_snapshot_revision = 0
        self._bytes_since_snapshot = 0
        self._records_since_snapshot = 0
        self._torn_truncations = 0
        self._close_done: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._state != _NEW:
            raise StorageError("kv store: start() called twice")
        if not self._durable:
            self._epoch = _new_epoch()
            self._state = _OPEN
            return
        await asyncio.to_thread(self._open_files)
        loop = asyncio.get_running_loop()
        self._batch = loop.create_future()
        self._published = self._revision
        self._history_floor = self._revision
        self._state = _OPEN
        self._flusher = asyncio.create_task(self._run_flusher(), name="kv-log-flusher")

    def _open_files(self) -> None:
        """Lock the directory, load the newest snapshot, replay the log (worker thread)."""
        directory = self._dir
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{directory}: cannot create the store directory: {exc}") from exc
        self._lock = StoreLock(directory)
        self._lock.acquire()
        # Loading allocates millions of objects that all stay alive; cyclic GC passes over the
        # growing heap would only cost time (about a third of a snapshot load).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._load(directory)
        except BaseException:
            self._table = KvTable()  # a later start() must not load on top of a partial table
            self._lock.release()
            raise
        finally:
            if gc_was_enabled:
                gc.enable()

    def _load(self, directory: Path) -> None:
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
            self._torn_truncations += 1
            log.warning(
                "kv store %s: truncated a torn tail of %d bytes at offset %d of %s",
                directory, replay.torn.dropped_bytes, replay.torn.offset, replay.torn.path,
            )  # fmt: skip
        if meta is None:
            self._epoch = _new_epoch()
        elif not meta.clean and meta.fsync != "always":
            self._epoch = _new_epoch()
            log.warning(
                "kv store %s was not closed cleanly (fsync=%s): recent writes may be lost, "
                "starting a new epoch",
                directory, meta.fsync,
            )  # fmt: skip
        else:
            self._epoch = meta.epoch
        write_meta(directory, StoreMeta(self._epoch, clean=False, fsync=self.settings.fsync))
        for revision, path in snapshots[:-1]:
            if revision < snapshot_revision:
                path.unlink()
        self._revision = replay.revision
        self._last_snapshot_revision = snapshot_revision
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

    def _observe_fsync(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.fsync_duration.observe(seconds)

    async def close(self) -> None:
        """Write and fsync everything, compact if worthwhile, release the directory."""
        if self._close_done is not None:
            await asyncio.shield(self._close_done)
            return
        self._close_done = asyncio.get_running_loop().create_future()
        try:
            await self._close()
        finally:
            self._close_done.set_result(None)

    async def _close(self) -> None:
        failed = self._state == _FAILED
        if self._state == _NEW or not self._durable:
            self._state = _CLOSED
            return
        self._state = _FAILED if failed else _CLOSING
        self._drained.set()  # release writers waiting for buffer space
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        if self._snapshot_task is not None:
            await self._snapshot_task
        image: TableImage | None = None
        if self._failure is None and self._close_compaction_worthwhile():
            image = self._table.image()
        async with self._io_lock:
            await asyncio.to_thread(self._close_files, image, self._revision)
        self._state = _CLOSED

    def _close_compaction_worthwhile(self) -> bool:
        return (
            self._bytes_since_snapshot >= self.close_compact_min_bytes
            and self._records_since_snapshot * 4 >= self._table.key_count
        )

    def _close_files(self, image: TableImage | None, revision: int) -> None:
        assert self._log is not None and self._lock is not None
        try:
            if self._failure is not None:
                with contextlib.suppress(OSError, StorageError):
                    self._log.close()
                return
            self._log.close()
            if image is not None:
                self._write_snapshot_files(image, revision)
                self._log.remove_all()
                self._last_snapshot_revision = revision
            write_meta(self._dir, StoreMeta(self._epoch, clean=True, fsync=self.settings.fsync))
        finally:
            self._lock.release()

    def ready(self) -> bool:
        return self._state == _OPEN

    def info(self) -> StoreInfo:
        return StoreInfo(
            epoch=self._epoch,
            revision=self._published,
            extra={"store_method": self.settings.store_method, "fsync": self.settings.fsync},
        )

    def subscribe(self, sink: ChangeSink) -> None:
        self._sinks.append(sink)

    # ------------------------------------------------------------------ reads

    def _check_open(self) -> None:
        if self._state != _OPEN:
            raise self._failure or StorageError(f"kv store is {self._state}")

    async def get(self, scope: str, key: str) -> Entry | None:
        self._check_open()
        slot = self._table.get(scope, key)
        return None if slot is None else Entry(decode_value(slot[1]), slot[0])

    async def list(self, scope: str) -> builtins.list[JSON]:
        self._check_open()
        return [decode_value(data) for _, data in self._table.values(scope)]

    async def items(self, scope: str) -> builtins.list[tuple[str, Entry]]:
        self._check_open()
        return [(key, Entry(decode_value(data), rev)) for key, (rev, data) in self._table.slots(scope)]

    async def list_groups(self) -> builtins.list[str]:
        self._check_open()
        return self._table.groups()

    # ------------------------------------------------------------------ writes

    async def set(self, scope: str, key: str, value: JSON, *, origin: str | None = None) -> WriteResult:
        data = encode_value(value)
        await self._admit()
        revision = self._revision + 1
        old = self._table.put(scope, key, (revision, data))
        kind = ChangeKind.CREATED if old is None else ChangeKind.UPDATED
        old_data = None if old is None else old[1]
        self._commit(
            encode_put(revision, scope, key, data),
            _Raw(scope, key, kind, old_data, data, revision, origin or self.engine_id),
        )
        await self._acknowledged()
        old_value = None if old_data is None else decode_value(old_data)
        return WriteResult(old is not None, old_value, value, revision)

    async def delete(self, scope: str, key: str, *, origin: str | None = None) -> WriteResult:
        await self._admit()
        revision = self._revision + 1
        old = self._table.remove(scope, key)
        old_data = None if old is None else old[1]
        self._commit(
            encode_delete(revision, scope, key),
            _Raw(scope, key, ChangeKind.DELETED, old_data, None, revision, origin or self.engine_id),
        )
        await self._acknowledged()
        old_value = None if old_data is None else decode_value(old_data)
        return WriteResult(old is not None, old_value, None, revision)

    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp],
        *,
        max_value_bytes: int | None = None,
        origin: str | None = None,
    ) -> WriteResult:
        await self._admit()
        # From here to _commit there is no await: read, apply and write are one atomic step.
        old = self._table.get(scope, key)
        current = None if old is None else decode_value(old[1])
        outcome = apply_ops(current, old is not None, ops)
        if max_value_bytes is not None:
            size = json_size(outcome.value)
            if size > max_value_bytes:
                raise ValueTooLarge(size, max_value_bytes)
        data = encode_value(outcome.value)
        revision = self._revision + 1
        self._table.put(scope, key, (revision, data))
        kind = ChangeKind.CREATED if old is None else ChangeKind.UPDATED
        self._commit(
            encode_put(revision, scope, key, data),
            _Raw(scope, key, kind, None if old is None else old[1], data, revision, origin or self.engine_id),
        )
        await self._acknowledged()
        return WriteResult(old is not None, current, outcome.value, revision, outcome.errors)

    async def _admit(self) -> None:
        """Wait for log buffer space, then check the store takes writes."""
        if len(self._buf) >= self.yield_buffer_bytes:
            await asyncio.sleep(0)  # let the flusher take the buffer
            while self._state == _OPEN and len(self._buf) >= self.max_buffer_bytes:
                self._drained.clear()
                await self._drained.wait()
        self._check_open()

    def _commit(self, record: bytes, raw: _Raw) -> None:
        """The write is in the table: give it its revision in the log and publish (no await)."""
        self._revision = raw.revision
        if not self._durable:
            self._publish(raw)
            return
        self._buf += record
        self._records_since_snapshot += 1
        if self.settings.fsync == "always":
            self._pending.append(raw)
        else:
            self._publish(raw)
        self._wake.set()

    async def _acknowledged(self) -> None:
        """With fsync=always, wait until the batch holding our record is fsynced."""
        if self._durable and self.settings.fsync == "always":
            assert self._batch is not None
            await asyncio.shield(self._batch)
            if self._failure is not None:
                raise self._failure

    def _publish(self, raw: _Raw) -> None:
        self._published = raw.revision
        history = self._history
        if history is not None:
            if len(history) == history.maxlen:
                self._history_floor = history[0].revision
            history.append(raw)
        if self._sinks:
            change = raw.change()
            for sink in self._sinks:
                try:
                    sink(change)
                except Exception:  # a broken sink must not undo or block a committed write
                    log.exception("kv store: change sink %r failed", sink)

    # ------------------------------------------------------------------ flusher

    async def _run_flusher(self) -> None:
        """The one writer of log files: batches, fsync policy, rolls, compaction triggers."""
        loop = asyncio.get_running_loop()
        interval = self.settings.save_interval_ms / 1000
        assert self._log is not None
        try:
            while True:
                self._wake.clear()
                due = self._sync_due_at
                if self._buf or self._force_compact or (due is not None and loop.time() >= due):
                    await self._flush_batch(loop, interval)
                    continue
                if self._state != _OPEN:
                    return
                timeout = None if due is None else max(0.0, due - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        except Exception as exc:
            self._fail(exc)

    async def _flush_batch(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        assert self._log is not None and self._batch is not None
        data, self._buf = self._buf, bytearray()
        upto = self._revision  # the table is exactly at this revision right now
        pending, self._pending = self._pending, []
        batch, self._batch = self._batch, loop.create_future()
        self._drained.set()
        policy = self.settings.fsync
        closing = self._state != _OPEN
        now = loop.time()
        if policy == "interval" and data and self._sync_due_at is None:
            self._sync_due_at = now + interval  # the loss window opens with the first unsynced write
        due = self._sync_due_at
        sync = policy == "always" or closing or (due is not None and now >= due)
        records = self._records_since_snapshot
        compact = self._snapshot_task is None and (
            self._force_compact or self._bytes_since_snapshot + len(data) >= self.settings.compact_after_bytes
        )
        compact = compact and not closing
        roll_to: int | None = None
        if compact or self._log.active_bytes + len(data) >= self.segment_max_bytes:
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
        for raw in pending:
            self._publish(raw)
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
        """An I/O error: what is on disk is unknown, so stop taking operations."""
        log.error("kv store %s failed: %s", self._dir, exc, exc_info=exc)
        self._failure = exc if isinstance(exc, StorageError) else StorageError(f"kv store failed: {exc}")
        self._state = _FAILED
        self._drained.set()
        if self._batch is not None and not self._batch.done():
            self._batch.set_result(None)
        for waiter in self._snapshot_waiters:
            if not waiter.done():
                waiter.set_exception(self._failure)
        self._snapshot_waiters.clear()

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self) -> int:
        """Compact now: snapshot the table, drop the log it covers. Returns its revision."""
        self._check_open()
        if not self._durable:
            return self._published
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
            log.error("kv store %s: snapshot at revision %d failed: %s", self._dir, revision, exc)
            if self._metrics is not None:
                self._metrics.snapshots.labels("error").inc()
            error = exc if isinstance(exc, StorageError) else StorageError(f"snapshot failed: {exc}")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        else:
            self._last_snapshot_revision = revision
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(revision)
        finally:
            self._snapshot_task = None

    def _write_snapshot_files(self, image: TableImage, revision: int) -> None:
        write_snapshot(self._dir, revision, self._epoch, image)
        for older, path in list_snapshots(self._dir):
            if older < revision:
                path.unlink()
        if self._metrics is not None:
            self._metrics.snapshots.labels("ok").inc()

    # ------------------------------------------------------------------ history and stats

    def changes_since(self, revision: int) -> builtins.list[Change] | None:
        """The changes after ``revision``, oldest first, or None when history does not reach back.

        The history is an in-memory ring of the last ``history_size`` changes of this process
        (it starts empty at each start). A watcher that gets None must resync from a snapshot.
        """
        if revision > self._published or revision < self._history_floor:
            return None
        history = self._history
        if history is None:
            return [] if revision == self._published else None
        return [raw.change() for raw in itertools.islice(history, revision - self._history_floor, None)]

    def statistics(self) -> dict[str, float]:
        """Live gauges, read at scrape time (metric ``iii_gateway_<name>``)."""
        stats: dict[str, float] = {
            "kv_keys": self._table.key_count,
            "kv_scopes": self._table.scope_count,
            "kv_revision": self._published,
            "kv_history_changes": len(self._history) if self._history is not None else 0,
        }
        if self._durable:
            logf = self._log
            stats.update(
                kv_log_bytes=logf.total_bytes if logf else 0,
                kv_log_segments=len(logf.segments) if logf else 0,
                kv_log_bytes_since_snapshot=self._bytes_since_snapshot,
                kv_last_snapshot_revision=self._last_snapshot_revision,
                kv_torn_tail_truncations_total=self._torn_truncations,
                kv_fsyncs_total=logf.fsyncs if logf else 0,
                kv_write_buffer_bytes=len(self._buf),
            )
        return stats
