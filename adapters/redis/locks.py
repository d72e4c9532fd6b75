"""Per-key locks: one process's updates of a key queue here instead of racing in Redis.

``update`` is read, apply ops in Python, compare-and-set. Two updates of the same key from the
same process would conflict with each other on every round; queueing them locally leaves the
CAS to resolve only conflicts with other engines, so retries stay rare.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["KeyLocks"]


class KeyLocks:
    """One asyncio.Lock per (scope, key) with waiters; entries vanish when nobody holds them."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, scope: str, key: str) -> AsyncIterator[None]:
        ident = (scope, key)
        lock, users = self._locks.get(ident, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[ident] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[ident]
            if users == 1:
                del self._locks[ident]
            else:
                self._locks[ident] = (lock, users - 1)
