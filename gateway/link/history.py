"""The upstream's memory of recent changes, so a watcher can resume from a revision.

A downstream that lost its link comes back with "everything after revision r". The upstream
answers from :class:`ChangeHistory`: a bounded ring of the last ``max_changes`` committed
changes, fed by the store's change sink (the same stream local triggers see), whatever the
store is (kv, Redis, or a Bridge when gateways are chained). Bounded on purpose: a watcher
that was away longer than the ring reaches gets ``HISTORY_GONE`` and resyncs, instead of the
upstream keeping every change forever (etcd's compaction model, ``reference/anchors.md``).

What the ring promises: it holds *every* change the store published with a revision in
``(floor, last]``, in revision order. So ``since(r)`` is exact for ``floor <= r <= last`` and
None otherwise. Three things move the floor up and drop the ring, and tell the reset
listeners (the link server then ends every watch with ``HISTORY_GONE``):

- the store's **epoch changed** (a new Redis, a kv store that lost unsynced writes, a Bridge
  that resynced): revisions of the old epoch mean nothing in the new one;
- a **revision went backwards** (the same, seen from the revisions);
- a **gap** in a store whose revisions are contiguous (kv, Redis): a Redis stream trimmed under
  a slow reader; the changes in the gap were never seen here, so nobody may resume across it.

The ring starts empty at ``start`` (floor = last = the store's revision then). Older
revisions are asked of the store (``older``: the kv store reads them back from its log, so a
resume across an upstream restart replays every change instead of resyncing); a store that
keeps no history of its own (Redis, a Bridge) turns an older resume point into ``HISTORY_GONE``.

**No epoch yet.** A store may have no epoch at ``start`` (a Bridge whose upstream is not
linked yet: a region started before its central). Such a history admits no watcher
(:meth:`has_epoch` is False and the watch hub answers ``UPSTREAM_UNAVAILABLE``, which the
downstream retries). It adopts the store's epoch and position, *without* a reset, as soon as the
store has one (asked through ``position_of`` when a watcher comes, or from the first change).
Adopting it as an epoch change instead would end every watch with ``HISTORY_GONE`` on the first
relayed change, and each downstream would skip what happened before its resync.

Listeners are called synchronously from the sink, in revision order, after the change is in
the ring; they must not block (the link server only queues bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from gateway.state.adapter import Change

__all__ = ["DEFAULT_HISTORY_SIZE", "ChangeHistory"]

log = logging.getLogger(__name__)

DEFAULT_HISTORY_SIZE: Final = 100_000

ChangeListener = Callable[[Change], None]
ResetListener = Callable[[str], None]


class ChangeHistory:
    """A ring of recent changes with their epoch (see the module docstring).

    Args:
        epoch_of: returns the store's current epoch (cheap; called once per change).
        max_changes: ring size.
        contiguous: the store's revisions have no holes (kv, Redis), so a hole is a loss.
        position_of: the store's current (epoch, revision), asked only while the history has
            no epoch (see "No epoch yet" in the module docstring).
        older: the store's own ``changes_since`` (kv), asked for revisions before the ring.
    """

    def __init__(
        self,
        epoch_of: Callable[[], str],
        *,
        max_changes: int = DEFAULT_HISTORY_SIZE,
        contiguous: bool = True,
        position_of: Callable[[], tuple[str, int]] | None = None,
        older: Callable[[int], list[Change] | None] | None = None,
    ) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be positive")
        self._epoch_of = epoch_of
        self.max_changes = max_changes
        self.contiguous = contiguous
        self._position_of = position_of
        self._older = older
        self.epoch = ""
        self.floor = 0  # every change with floor < revision <= last is in the ring
        self.last = 0
        self._ring: list[Change | None] = [None] * min(max_changes, 1024)
        self._start = 0
        self._count = 0
        self._listeners: list[ChangeListener] = []
        self._reset_listeners: list[ResetListener] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.resets_total = 0
        self.changes_total = 0

    def start(self, epoch: str, revision: int) -> None:
        """Begin at the store's current position (nothing before it can be replayed)."""
        self.epoch = epoch
        self.floor = self.last = revision
        self._clear()

    def has_epoch(self) -> bool:
        """True once the history belongs to an epoch; watchers are admitted only then.

        While it has none, ask the store: the first epoch it reports is adopted with the store's
        revision as the start, with no reset (no watcher was admitted before it).
        """
        if not self.epoch and self._count == 0 and self._position_of is not None:
            epoch, revision = self._position_of()
            if epoch:
                self._adopt(epoch, revision)
        return bool(self.epoch)

    def _adopt(self, epoch: str, revision: int) -> None:
        log.info("change history: the store's epoch is now %s (from revision %d)", epoch, revision)
        self.epoch = epoch
        self.floor = self.last = revision
        self._clear()

    # -- the sink ---------------------------------------------------------------------------

    def __call__(self, change: Change) -> None:
        epoch = self._epoch_of()
        revision = change.revision
        if not self.epoch and self._count == 0 and epoch:
            self._adopt(epoch, revision - 1)  # the first epoch: nobody watched before it
        if epoch != self.epoch:
            self._reset(epoch, revision - 1, f"the store's epoch changed from {self.epoch} to {epoch}")
        elif revision <= self.last:
            self._reset(epoch, revision - 1, f"revision went back from {self.last} to {revision}")
        elif self.contiguous and revision != self.last + 1:
            self._reset(epoch, revision - 1, f"revisions {self.last + 1}..{revision - 1} never arrived")
        self._append(change)
        self.last = revision
        self.changes_total += 1
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one broken watcher must not stop the others or the write
                log.exception("change history: listener %r failed", listener)
        if self._waiters:
            self._wake(revision)

    def _append(self, change: Change) -> None:
        ring = self._ring
        size = len(ring)
        if self._count == size:
            if size < self.max_changes:  # grow geometrically up to max_changes
                ordered = [ring[(self._start + i) % size] for i in range(size)]
                ring = self._ring = ordered + [None] * min(size, self.max_changes - size)
                self._start = 0
                size = len(ring)
            else:  # full: the oldest change leaves, the floor moves up to it
                oldest = ring[self._start]
                assert oldest is not None
                self.floor = oldest.revision
                ring[self._start] = None
                self._start = (self._start + 1) % size
                self._count -= 1
        ring[(self._start + self._count) % size] = change
        self._count += 1

    def _reset(self, epoch: str, floor: int, why: str) -> None:
        log.warning("change history reset (%s): watchers must resync", why)
        self.epoch = epoch
        self.floor = floor
        self.last = floor
        self._clear()
        self.resets_total += 1
        for listener in self._reset_listeners:
            try:
                listener(why)
            except Exception:
                log.exception("change history: reset listener %r failed", listener)

    def _clear(self) -> None:
        self._ring = [None] * min(self.max_changes, 1024)
        self._start = 0
        self._count = 0

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _at(self, index: int) -> Change:
        change = self._ring[(self._start + index) % len(self._ring)]
        assert change is not None
        return change

    def since(self, revision: int) -> list[Change] | None:
        """The changes after ``revision``, oldest first; None when neither the ring nor the
        store's own history (``older``) reaches back."""
        if revision > self.last:
            return None
        if revision < self.floor:
            return self._since_older(revision)
        lo, hi = 0, self._count
        while lo < hi:  # first index whose revision > revision
            mid = (lo + hi) // 2
            if self._at(mid).revision <= revision:
                lo = mid + 1
            else:
                hi = mid
        return [self._at(i) for i in range(lo, self._count)]

    def _since_older(self, revision: int) -> list[Change] | None:
        """The store's history up to the floor, then the ring; only while this history has
        followed the store without a reset, and only if the store's part ends at the floor."""
        if self._older is None or self.resets_total or not self.contiguous:
            return None
        found = self._older(revision)
        if found is None:
            return None
        older = [change for change in found if change.revision <= self.floor]
        if not older or older[-1].revision != self.floor:
            return None
        ring = self.since(self.floor)
        return None if ring is None else older + ring

    def covers(self, revision: int) -> bool:
        """True when a watcher may resume from ``revision``."""
        return self.floor <= revision <= self.last

    # -- listeners and waiters --------------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_reset_listener(self, listener: ResetListener) -> None:
        self._reset_listeners.append(listener)

    def remove_reset_listener(self, listener: ResetListener) -> None:
        if listener in self._reset_listeners:
            self._reset_listeners.remove(listener)

    async def wait_for(self, revision: int) -> None:
        """Wait until the ring has seen ``revision`` (a store whose events trail its writes)."""
        if self.last >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            await future
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not future]

    def _wake(self, revision: int) -> None:
        for wanted, future in self._waiters:
            if wanted <= revision and not future.done():
                future.set_result(None)

    def statistics(self) -> dict[str, float]:
        return {
            "link_history_changes": self._count,
            "link_history_floor_revision": self.floor,
            "link_history_revision": self.last,
            "link_history_resets_total": self.resets_total,
        }
