"""Idempotent writes on the upstream: a repeated write with the same key is answered, not redone.

An edge's offline outbox (``adapters.bridge.outbox``) replays queued writes after a reconnect,
each with an idempotency key (the link's ``idem`` field). If the edge crashed after the
upstream applied a write but before it recorded that, the replay sends the same write again;
this table makes the upstream answer it with the first result instead of applying it twice.

**Window.** The newest ``capacity`` keys (per upstream process, 100 000 by default) are
remembered, in memory, for the upstream's lifetime; keys are namespaced by the peer that sent
them. A repeat arriving after its key was pushed out, or after the upstream restarted, is
applied again -- the outbox keeps replays short (it replays at once on reconnect), so this only
matters when an edge crashes mid-replay *and* the upstream restarts or takes 100 000 other
idempotent writes before the edge comes back.

**Concurrency.** A repeat arriving while the first is still running (the edge reconnected
and replayed before the first answer) waits for the first and gets its result. Writes run in
tasks owned by this table (in ``_running`` until they end; each is bounded by the adapter's
own timeouts), so a request cancelled by a lost link does not cut its write short.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["DEFAULT_CAPACITY", "IdempotencyTable"]

DEFAULT_CAPACITY: Final = 100_000


class IdempotencyTable:
    """Results of recent idempotent writes, by (peer, key); see the module docstring."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(1, capacity)
        self._done: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.repeats_total = 0

    def __len__(self) -> int:
        return len(self._done)

    async def run(self, peer: str, key: str, write: Callable[[], Awaitable[Any]]) -> Any:
        """``write()``'s result, running it only if this (peer, key) was not seen before.

        The write runs in a task of this table's own, shielded from the request: a link lost
        mid-write cancels the request, not the write, and its result is still remembered
        (otherwise a store write that went through would be applied again by the replay).
        A write that failed is not remembered: its repeat runs again."""
        slot = (peer, key)
        if slot in self._done:
            self.repeats_total += 1
            self._done.move_to_end(slot)
            return self._done[slot]
        running = self._running.get(slot)
        if running is not None:
            self.repeats_total += 1
            return await asyncio.shield(running)
        task: asyncio.Future[Any] = asyncio.ensure_future(write())
        self._running[slot] = task
        task.add_done_callback(lambda done: self._finished(slot, done))
        return await asyncio.shield(task)

    def _finished(self, slot: tuple[str, str], task: asyncio.Future[Any]) -> None:
        del self._running[slot]
        if task.cancelled() or task.exception() is not None:
            return
        self._done[slot] = task.result()
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)
