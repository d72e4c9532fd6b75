"""The Bridge's read cache: one per upstream, kept coherent by the relayed watch.

Why it is safe: while the relay watch of an upstream is *live* (caught up, BacklogEnd seen,
no disconnect or resync since), every change to every scope routed to it reaches this edge,
in revision order. So an entry filled from an upstream answer stays exact as long as each
relayed change is applied to it. The Bridge only consults a cache while its upstream's watch
is live, and throws the whole cache away (:meth:`ReadCache.flush`) whenever the watch stops
being live -- disconnect, watch ended, resync, epoch change -- so it is filled again only from
answers and events of the new live period.

Rules kept here (the Bridge supplies the "live" check):

- **Revisions decide.** An entry is replaced only by something with a higher revision
  (an event, a write's result, an answer): a late answer never overwrites a newer event.
- **Answers racing with events.** A fill is bracketed by :meth:`begin_key` / :meth:`finish_get`
  (or the scope variants). An event for the key (or scope) arriving meanwhile marks the fill
  *dirty*; the caller then gets whichever of the answer and the cached state is newer, and an
  answer that cannot be compared (the key was evicted meanwhile) is returned but not kept.
- **Deletes are remembered** as tombstones (with their revision), so "missing" is cached too.
- **Scopes.** ``list``/``items`` of a scope are served from the cache only when the scope is
  *complete*: its full ``items`` answer was installed during the current live period (merged
  with the events that raced with it). Later events keep it complete (new keys are appended,
  deleted keys dropped, the kv store's own order rule). Evicting any of its keys, or a scope
  larger than the whole cache, makes it incomplete again, and the next ``list`` goes upstream.
- **Bounded.** At most ``max_entries`` keys (tombstones included), least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.state.adapter import Entry

__all__ = ["Gone", "KeyTicket", "ReadCache", "ScopeTicket"]

Slot = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Gone:
    """A key known to be missing since ``revision`` (0: a read found it missing)."""

    revision: int


Cached = Entry | Gone


@dataclass(frozen=True, slots=True)
class KeyTicket:
    slot: Slot
    generation: int


@dataclass(frozen=True, slots=True)
class ScopeTicket:
    scope: str
    generation: int


def _view(cached: Cached) -> Entry | None:
    return cached if isinstance(cached, Entry) else None


class ReadCache:
    """Entries of one upstream's scopes (see the module docstring)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self._lru: OrderedDict[Slot, Cached] = OrderedDict()
        self._complete: dict[str, dict[str, None]] = {}  # complete scope -> its keys, in order
        self._inflight_keys: dict[Slot, int] = {}
        self._dirty_keys: set[Slot] = set()
        self._inflight_scopes: dict[str, int] = {}
        self._dirty_scopes: dict[str, set[str]] = {}
        self.generation = 0
        self.token: Any = None  # what the live period this content belongs to is called
        self.evictions_total = 0
        self.flushes_total = 0

    def __len__(self) -> int:
        return len(self._lru)

    def flush(self, token: Any) -> None:
        """Forget everything; fills in flight will not be installed."""
        if self._lru or self._complete:
            self.flushes_total += 1
        self._lru.clear()
        self._complete.clear()
        self._dirty_keys.clear()
        for keys in self._dirty_scopes.values():
            keys.clear()
        self.generation += 1
        self.token = token

    # -- lookups ----------------------------------------------------------------------------

    def lookup(self, scope: str, key: str) -> tuple[bool, Entry | None]:
        """(hit, entry): a hit may be a known-missing key."""
        slot = (scope, key)
        cached = self._lru.get(slot)
        if cached is not None:
            self._lru.move_to_end(slot)
            return True, _view(cached)
        if scope in self._complete:
            return True, None
        return False, None

    def lookup_scope(self, scope: str) -> list[tuple[str, Entry]] | None:
        keys = self._complete.get(scope)
        if keys is None:
            return None
        found: list[tuple[str, Entry]] = []
        for key in keys:
            cached = self._lru[(scope, key)]
            self._lru.move_to_end((scope, key))
            assert isinstance(cached, Entry)
            found.append((key, cached))
        return found

    # -- changes (relayed events and our own writes' results) -------------------------------

    def apply(self, scope: str, key: str, entry: Entry | None, revision: int) -> None:
        """A change at ``revision``: the new entry, or None for a delete."""
        slot = (scope, key)
        if slot in self._inflight_keys:
            self._dirty_keys.add(slot)
        dirty = self._dirty_scopes.get(scope)
        if dirty is not None:
            dirty.add(key)
        current = self._lru.get(slot)
        if current is not None and current.revision >= revision:
            return
        self._install(slot, entry if entry is not None else Gone(revision))

    def _install(self, slot: Slot, cached: Cached) -> None:
        scope, key = slot
        self._lru[slot] = cached
        self._lru.move_to_end(slot)
        keys = self._complete.get(scope)
        if keys is not None:
            if isinstance(cached, Entry):
                keys.setdefault(key, None)
            else:
                keys.pop(key, None)
        while len(self._lru) > self.max_entries:
            (old_scope, _), _ = self._lru.popitem(last=False)
            self.evictions_total += 1
            self._complete.pop(old_scope, None)

    # -- fills ------------------------------------------------------------------------------

    def begin_key(self, scope: str, key: str) -> KeyTicket:
        slot = (scope, key)
        self._inflight_keys[slot] = self._inflight_keys.get(slot, 0) + 1
        return KeyTicket(slot, self.generation)

    def _end_key(self, slot: Slot) -> bool:
        """Close one fill of ``slot``; True when an event touched it meanwhile."""
        dirty = slot in self._dirty_keys
        left = self._inflight_keys.get(slot, 1) - 1
        if left <= 0:
            self._inflight_keys.pop(slot, None)
            self._dirty_keys.discard(slot)
        else:
            self._inflight_keys[slot] = left
        return dirty

    def cancel_key(self, ticket: KeyTicket) -> None:
        self._end_key(ticket.slot)

    def finish_get(self, ticket: KeyTicket, answer: Entry | None) -> Entry | None:
        """Install a ``get`` answer if it is the newest known state; return the newest."""
        dirty = self._end_key(ticket.slot)
        if ticket.generation != self.generation:
            return answer
        current = self._lru.get(ticket.slot)
        if current is not None:
            if answer is None or current.revision >= answer.revision:
                return _view(current)
            self._install(ticket.slot, answer)
            return answer
        if not dirty:
            self._install(ticket.slot, answer if answer is not None else Gone(0))
        return answer

    def begin_scope(self, scope: str) -> ScopeTicket:
        self._inflight_scopes[scope] = self._inflight_scopes.get(scope, 0) + 1
        self._dirty_scopes.setdefault(scope, set())
        return ScopeTicket(scope, self.generation)

    def _end_scope(self, scope: str) -> set[str]:
        dirty = set(self._dirty_scopes.get(scope, ()))
        left = self._inflight_scopes.get(scope, 1) - 1
        if left <= 0:
            self._inflight_scopes.pop(scope, None)
            self._dirty_scopes.pop(scope, None)
        else:
            self._inflight_scopes[scope] = left
        return dirty

    def cancel_scope(self, ticket: ScopeTicket) -> None:
        self._end_scope(ticket.scope)

    def finish_items(self, ticket: ScopeTicket, answer: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
        """Install a full ``items`` answer as a complete scope (merged with racing events)."""
        scope = ticket.scope
        dirty = self._end_scope(scope)
        if ticket.generation != self.generation or len(answer) > self.max_entries:
            return answer
        merged: dict[str, Entry] = dict(answer)
        complete = True
        for key in dirty:
            current = self._lru.get((scope, key))
            if current is None:
                complete = False  # evicted while we waited: cannot tell which is newer
                continue
            mine = merged.get(key)
            if mine is not None and mine.revision >= current.revision:
                continue
            if isinstance(current, Entry):
                merged[key] = current
            else:
                merged.pop(key, None)
        for key, entry in merged.items():
            current = self._lru.get((scope, key))
            if current is None or current.revision < entry.revision:
                self._install((scope, key), entry)
            else:
                self._lru.move_to_end((scope, key))
        if complete and all(isinstance(self._lru.get((scope, k)), Entry) for k in merged):
            self._complete[scope] = dict.fromkeys(merged)
        return list(merged.items())
