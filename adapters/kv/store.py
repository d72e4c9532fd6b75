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

**Durability** (``file_based``) is the job of :class:`adapters.kv.journal.Journal`: the log
pipeline, group commit, the fsync policies, snapshots and compaction. With ``fsync: always`` a
write returns, and its change is published, only after its record is fsynced; with ``interval``
and ``never`` changes are published at once.

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
import gc
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from adapters.kv.journal import Journal, JournalTuning, new_epoch
from adapters.kv.loghistory import read_log_changes
from adapters.kv.records import decode_value, encode_delete, encode_put, encode_value
from adapters.kv.table import KvTable
from gateway.config.settings import KvSettings
from gateway.errors import StorageError, ValueTooLarge
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
    #: A resume reaching further back than this many changes resyncs instead of reading the log.
    log_history_max_changes: int = 1_000_000

    def __init__(self, settings: KvSettings, *, engine_id: str, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine_id = engine_id
        self._metrics = metrics
        self._durable = settings.store_method == "file_based"
        self._table = KvTable()
        self._sinks: list[ChangeSink] = []
        self._history: deque[_Raw] | None = (
            deque(maxlen=settings.history_size) if settings.history_size > 0 else None
        )
        self._history_floor = 0
        self._state = _NEW
        self._epoch = ""
        self._revision = 0  # last assigned
        self._published = 0  # last whose change went out
        self._journal: Journal[_Raw] | None = None  # file_based only
        self._close_done: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._state != _NEW:
            raise StorageError("kv store: start() called twice")
        if not self._durable:
            self._epoch = new_epoch()
            self._state = _OPEN
            return
        tuning = JournalTuning(
            segment_max_bytes=self.segment_max_bytes,
            max_buffer_bytes=self.max_buffer_bytes,
            yield_buffer_bytes=self.yield_buffer_bytes,
            close_compact_min_bytes=self.close_compact_min_bytes,
        )
        journal: Journal[_Raw] = Journal(
            self.settings,
            self._table,
            tuning,
            revision=lambda: self._revision,
            publish=self._publish,
            metrics=self._metrics,
        )
        self._revision = await asyncio.to_thread(self._load, journal)
        self._journal = journal
        self._epoch = journal.epoch
        self._published = self._history_floor = self._revision
        self._state = _OPEN
        journal.start()

    def _load(self, journal: Journal[_Raw]) -> int:
        # Loading allocates millions of objects that all stay alive; cyclic GC passes over the
        # growing heap would only cost time (about a third of a snapshot load).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return journal.load()
        except BaseException:
            self._table = KvTable()  # a later start() must not load on top of a partial table
            raise
        finally:
            if gc_was_enabled:
                gc.enable()

    async def close(self) -> None:
        """Write and fsync everything, compact if worthwhile, release the directory."""
        if self._close_done is not None:
            await asyncio.shield(self._close_done)
            return
        self._close_done = asyncio.get_running_loop().create_future()
        try:
            if self._state == _OPEN and self._journal is not None:
                self._state = _CLOSING
                await self._journal.close()
        finally:
            self._state = _CLOSED
            self._close_done.set_result(None)

    def ready(self) -> bool:
        return self._state == _OPEN and (self._journal is None or self._journal.failure is None)

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
            raise StorageError(f"kv store is {self._state}")
        if self._journal is not None:
            self._journal.check()

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
        # From here to _commit there is no await: the write is one atomic step. The record is
        # encoded first, so a write that cannot be logged leaves the table untouched.
        revision = self._revision + 1
        record = encode_put(revision, scope, key, data)
        old = self._table.put(scope, key, (revision, data))
        kind = ChangeKind.CREATED if old is None else ChangeKind.UPDATED
        old_data = None if old is None else old[1]
        self._commit(record, _Raw(scope, key, kind, old_data, data, revision, origin or self.engine_id))
        await self._acknowledged()
        old_value = None if old_data is None else decode_value(old_data)
        return WriteResult(old is not None, old_value, value, revision)

    async def delete(self, scope: str, key: str, *, origin: str | None = None) -> WriteResult:
        await self._admit()
        revision = self._revision + 1
        record = encode_delete(revision, scope, key)
        old = self._table.remove(scope, key)
        old_data = None if old is None else old[1]
        raw = _Raw(scope, key, ChangeKind.DELETED, old_data, None, revision, origin or self.engine_id)
        self._commit(record, raw)
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
        record = encode_put(revision, scope, key, data)
        self._table.put(scope, key, (revision, data))
        kind = ChangeKind.CREATED if old is None else ChangeKind.UPDATED
        old_data = None if old is None else old[1]
        self._commit(record, _Raw(scope, key, kind, old_data, data, revision, origin or self.engine_id))
        await self._acknowledged()
        return WriteResult(old is not None, current, outcome.value, revision, outcome.errors)

    async def _admit(self) -> None:
        """Check the store takes writes (after waiting for log buffer space)."""
        self._check_open()
        if self._journal is not None:
            await self._journal.admit()
            self._check_open()

    def _commit(self, record: bytes, raw: _Raw) -> None:
        """The write is in the table: give it its revision in the log and publish (no await)."""
        self._revision = raw.revision
        if self._journal is None:
            self._publish(raw)
        else:
            self._journal.append(record, raw)

    async def _acknowledged(self) -> None:
        if self._journal is not None:
            await self._journal.acknowledged()

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

    async def snapshot(self) -> int:
        """Compact now: snapshot the table, drop the log it covers. Returns its revision.

        For ``in_memory`` there is nothing to write; returns the current revision.
        """
        self._check_open()
        if self._journal is None:
            return self._published
        return await self._journal.snapshot()

    # ------------------------------------------------------------------ history and stats

    def changes_since(self, revision: int) -> builtins.list[Change] | None:
        """The changes after ``revision``, oldest first, or None when history does not reach back.

        The history is an in-memory ring of the last ``history_size`` changes of this process
        (it starts empty at each start); for a durable store, older revisions are read back from
        the log segments (:mod:`adapters.kv.loghistory`: exact revisions and new values, old
        values and kinds as far as the range read shows them), so the history reaches back to
        the last compaction. A watcher that gets None must resync from a snapshot.
        """
        if revision > self._published:
            return None
        if revision < self._history_floor:
            if self._journal is None:
                return None
            older = read_log_changes(
                self._journal.directory,
                revision,
                self._history_floor,
                max_changes=self.log_history_max_changes,
            )
            newer = self.changes_since(self._history_floor)
            return None if older is None or newer is None else older + newer
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
        if self._journal is not None:
            stats.update(self._journal.statistics())
        return stats
