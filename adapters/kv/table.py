"""The in-memory table of the kv store: scopes of keys in insertion order. Pure, no I/O.

Layout: ``{scope: {key: (revision, stored_value)}}``. Python dicts keep insertion order with
exactly the reference IndexMap semantics the state module promises: overwriting a key keeps its
position, deleting it and setting it again moves it to the end. A scope whose last key is
removed is dropped, so :meth:`KvTable.groups` lists only scopes that hold keys.

Values are held in their stored form (msgpack bytes, see ``adapters.kv.records``). ``bytes`` is
immutable, so nothing a caller does to a returned value can reach the table, reads need no
defensive deep copy (each read decodes a fresh object), the table is several times smaller than
one of Python dicts, and the bytes logged for a write are the bytes kept in memory.

Entries are plain tuples so a snapshot can take a consistent picture of the whole table with
shallow ``dict.copy()`` calls: nothing inside an entry is ever mutated in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from adapters.kv.records import Op, Record

__all__ = ["KvTable", "Slot", "TableImage"]

Slot = tuple[int, bytes]
"""One key: (revision of the last write to it, stored value)."""

TableImage = list[tuple[str, dict[str, Slot]]]
"""A point-in-time copy of the table, scope by scope, for a snapshot writer."""


class KvTable:
    """Scopes of keys, each scope in key insertion order."""

    __slots__ = ("_keys", "_scopes")

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, Slot]] = {}
        self._keys = 0

    @property
    def key_count(self) -> int:
        return self._keys

    @property
    def scope_count(self) -> int:
        return len(self._scopes)

    def get(self, scope: str, key: str) -> Slot | None:
        keys = self._scopes.get(scope)
        return None if keys is None else keys.get(key)

    def put(self, scope: str, key: str, slot: Slot) -> Slot | None:
        """Store ``slot``; returns the previous one (None when the key is new)."""
        keys = self._scopes.get(scope)
        if keys is None:
            keys = self._scopes[scope] = {}
        old = keys.get(key)
        keys[key] = slot
        if old is None:
            self._keys += 1
        return old

    def remove(self, scope: str, key: str) -> Slot | None:
        """Remove the key; returns what it held. An emptied scope disappears."""
        keys = self._scopes.get(scope)
        if keys is None:
            return None
        old = keys.pop(key, None)
        if old is not None:
            self._keys -= 1
            if not keys:
                del self._scopes[scope]
        return old

    def slots(self, scope: str) -> list[tuple[str, Slot]]:
        """The keys of a scope and their slots, in insertion order (a copy)."""
        keys = self._scopes.get(scope)
        return [] if keys is None else list(keys.items())

    def values(self, scope: str) -> list[Slot]:
        keys = self._scopes.get(scope)
        return [] if keys is None else list(keys.values())

    def groups(self) -> list[str]:
        """Scopes holding at least one key, sorted by code point (= UTF-8 byte order)."""
        return sorted(self._scopes)

    def image(self) -> TableImage:
        """A consistent copy for a snapshot: O(keys) pointer copies, no value copies."""
        return [(scope, keys.copy()) for scope, keys in self._scopes.items()]

    def load(self, scope: str, keys: list[str], slots: Iterable[Slot]) -> int:
        """Bulk-add keys of one scope (snapshot loading); returns how many were new."""
        table = self._scopes.get(scope)
        if table is None:
            table = self._scopes[scope] = {}
        before = len(table)
        table.update(zip(keys, slots, strict=True))
        added = len(table) - before
        self._keys += added
        if not table:
            del self._scopes[scope]
        return added

    def apply(self, record: Record) -> None:
        """Replay one PUT or DELETE record (snapshot frame records are not table content)."""
        if record.op is Op.PUT:
            assert record.value is not None  # guaranteed by the decoder
            self.put(record.scope, record.key, (record.revision, record.value))
        elif record.op is Op.DELETE:
            self.remove(record.scope, record.key)

    def apply_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.apply(record)

    def __iter__(self) -> Iterator[tuple[str, str, Slot]]:
        for scope, keys in self._scopes.items():
            for key, slot in keys.items():
                yield scope, key, slot
