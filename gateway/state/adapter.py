"""The seam between the state module and its storage backends.

Every backend (the embedded kv store, Redis, the Bridge to an upstream gateway) implements
:class:`StateAdapter`, and one contract suite (``tests/contract/``) runs against each of them.
The state module owns request validation, size limits on ``set``, error-code translation and
trigger fan-out; an adapter owns storage, atomicity and revisions.

Change events come *from the adapter* (``subscribe``) rather than from the module, because on
Redis and through the Bridge the writes of other engines must fire our triggers too. An adapter
calls every sink synchronously, once per committed write, in revision order; sinks must not
block (they enqueue).
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gateway.state.ops import OpError, UpdateOp

__all__ = [
    "Change",
    "ChangeKind",
    "ChangeSink",
    "Entry",
    "StateAdapter",
    "StoreInfo",
    "WriteResult",
]

JSON = Any


class ChangeKind(enum.Enum):
    """What a write did to a key; the value is the reference ``event_type``."""

    CREATED = "state:created"
    UPDATED = "state:updated"
    DELETED = "state:deleted"


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored value and the revision of the write that put it there."""

    value: JSON
    revision: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed ``set``, ``delete`` or ``update`` did.

    ``existed`` tells a missing key from a stored JSON null (``old_value`` is None for both).
    ``errors`` holds the per-op failures of an ``update`` (the call still succeeds).
    ``queued``: not applied yet but durably queued for the upstream (a Bridge's offline
    outbox); ``revision`` is then 0 and the values are not known.
    """

    existed: bool
    old_value: JSON
    new_value: JSON
    revision: int
    errors: tuple[OpError, ...] = ()
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write as triggers and watchers see it.

    ``origin`` is the id of the engine that made the write (ours, another gateway on the same
    Redis, or an edge whose write reached us through the link).
    """

    scope: str
    key: str
    kind: ChangeKind
    old_value: JSON
    new_value: JSON
    revision: int
    origin: str

    def to_event(self) -> dict[str, JSON]:
        """The trigger payload: the reference's six fields plus ``revision`` and ``origin``."""
        return {
            "type": "state",
            "event_type": self.kind.value,
            "scope": self.scope,
            "key": self.key,
            "old_value": self.old_value,
            "new_value": self.new_value,
            "revision": self.revision,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Identity and position of a store: ``epoch`` changes when its history is not continuous."""

    epoch: str
    revision: int
    extra: dict[str, JSON] = field(default_factory=dict)


ChangeSink = Callable[[Change], None]


@runtime_checkable
class StateAdapter(Protocol):
    """A storage backend for the state module.

    All methods may raise :class:`gateway.errors.AdapterError` (or a subclass) when the backend
    fails; the state module turns that into the reference error codes. Scope and key are any
    strings, including ``""``. ``origin=None`` means "this engine".
    """

    name: str

    async def start(self) -> None:
        """Open files or connections, replay state. Called once before any operation."""

    async def close(self) -> None:
        """Flush everything acknowledged and release resources. Idempotent."""

    def subscribe(self, sink: ChangeSink) -> None:
        """Register a sink that receives every committed change, in revision order."""

    def info(self) -> StoreInfo:
        """Current epoch and revision (cheap, no I/O)."""

    def ready(self) -> bool:
        """True when operations can be served now (``/readyz``)."""

    async def get(self, scope: str, key: str) -> Entry | None:
        """The entry at scope/key, or None when the key does not exist."""

    async def set(self, scope: str, key: str, value: JSON, *, origin: str | None = None) -> WriteResult:
        """Store ``value``, replacing what was there, atomically with its change event."""

    async def delete(self, scope: str, key: str, *, origin: str | None = None) -> WriteResult:
        """Remove the key atomically (read and remove in one step) and emit ``state:deleted``.

        Deleting a missing key succeeds with ``existed=False`` and still emits an event, as the
        reference engine does.
        """

    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp],
        *,
        max_value_bytes: int | None = None,
        origin: str | None = None,
    ) -> WriteResult:
        """Apply ``ops`` atomically with :func:`gateway.state.ops.apply_ops` and write the result.

        Raises :class:`gateway.errors.ValueTooLarge` (and writes nothing) when the result's compact
        JSON is over ``max_value_bytes``.
        """

    async def list(self, scope: str) -> list[JSON]:
        """The values of a scope in key insertion order (where the backend keeps one)."""

    async def items(self, scope: str) -> builtins.list[tuple[str, Entry]]:
        """The keys and entries of a scope, in the same order as :meth:`list`."""

    async def list_groups(self) -> builtins.list[str]:
        """The scopes that hold at least one key, sorted bytewise (UTF-8 order)."""
