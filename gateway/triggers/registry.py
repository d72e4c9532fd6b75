"""Trigger bindings, and the providers of each trigger type.

A binding says "call function F when something of type T happens, filtered by config C". The
registry validates a binding with its type's provider (``state``, ``http``, ``cron``) and owns
the bookkeeping of who registered it, so that a worker's bindings go away with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import GatewayError

__all__ = ["Trigger", "TriggerRegistrationError", "TriggerRegistry", "TriggerType"]


class TriggerRegistrationError(GatewayError):
    """A binding's config is invalid for its type, or the type is unknown."""

    code = "trigger_registration_failed"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One binding. ``owner`` is the worker connection that registered it (None: in-process)."""

    id: str
    type: str
    function_id: str
    config: Any
    metadata: Any = None
    namespace: str = "default"
    owner: str | None = None


class TriggerType(Protocol):
    """A provider of one trigger type. ``add`` validates and raises TriggerRegistrationError."""

    name: str

    def add(self, trigger: Trigger) -> None: ...

    def remove(self, trigger: Trigger) -> None: ...


class TriggerRegistry:
    def __init__(self) -> None:
        self._types: dict[str, TriggerType] = {}
        self._triggers: dict[str, Trigger] = {}

    def add_type(self, provider: TriggerType, *aliases: str) -> None:
        for name in (provider.name, *aliases):
            self._types[name] = provider

    def types(self) -> list[str]:
        return sorted(self._types)

    def register(self, trigger: Trigger) -> None:
        """Add or replace (same id) a binding; the provider validates it first."""
        provider = self._types.get(trigger.type)
        if provider is None:
            raise TriggerRegistrationError(
                f"Unknown trigger type '{trigger.type}'. Available: {', '.join(self.types())}"
            )
        old = self._triggers.get(trigger.id)
        provider.add(trigger)  # raises before we touch our own state
        if old is not None and self._types.get(old.type) is not provider:
            self._types[old.type].remove(old)
        self._triggers[trigger.id] = trigger

    def unregister(self, trigger_id: str, *, owner: str | None = None) -> Trigger | None:
        trigger = self._triggers.get(trigger_id)
        if trigger is None or (owner is not None and trigger.owner != owner):
            return None
        del self._triggers[trigger_id]
        self._types[trigger.type].remove(trigger)
        return trigger

    def unregister_owner(self, owner: str) -> list[Trigger]:
        ids = [t.id for t in self._triggers.values() if t.owner == owner]
        return [t for t in (self.unregister(i) for i in ids) if t is not None]

    def get(self, trigger_id: str) -> Trigger | None:
        return self._triggers.get(trigger_id)

    def __iter__(self) -> Iterator[Trigger]:
        return iter(list(self._triggers.values()))

    def __len__(self) -> int:
        return len(self._triggers)

    def statistics(self) -> dict[str, float]:
        return {"triggers_registered": float(len(self._triggers))}
