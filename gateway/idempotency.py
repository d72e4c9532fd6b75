"""Idempotent writes on the upstream: a repeated write with the same key is answered, not redone.

An edge's offline outbox (``adapters.bridge.outbox``) replays queued writes after a reconnect,
each with an idempotency key (the link's ``idem`` field). If the edge crashed after the
upstream applied a write but before it recorded that, the replay sends the same write again;
this table makes the upstream answer it with the first result instead of applying it twice.

**Window.** The newest ``capacity`` keys (100 000 by default) are remembered; keys are
namespaced by the peer that sent them. With a ``path`` (the gateway's data dir:
``<data_dir>/link-idempotency.log``) they are also appended to a file, next to the data, and
read back on start, so the window survives an upstream restart. A record is written right
after its write returned (without an fsync of its own: it survives a process crash, and only a
power loss in the instant between the store's commit and this append loses a key). A repeat
arriving after its key was pushed out by ``capacity`` newer ones is applied again. The file is
rewritten with the live keys whenever it holds twice ``capacity`` records; a damaged record
ends the file (it is cut there: losing keys only narrows the window).

**Concurrency.** A repeat arriving while the first is still running (the edge reconnected
and replayed before the first answer) waits for the first and gets its result. Writes run in
tasks owned by this table (in ``_running`` until they end; each is bounded by the adapter's
own timeouts), so a request cancelled by a lost link does not cut its write short.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import msgpack

__all__ = ["DEFAULT_CAPACITY", "IdempotencyTable"]

DEFAULT_CAPACITY: Final = 100_000
FILE_NAME: Final = "link-idempotency.log"
_HEADER: Final = struct.Struct("<II")  # CRC32 of length+body, body length

log = logging.getLogger(__name__)


def _frame(body: bytes) -> bytes:
    head = struct.pack("<I", len(body))
    return struct.pack("<I", zlib.crc32(head + body)) + head + body


def _records(data: bytes) -> tuple[list[tuple[str, str, Any]], int]:
    """The intact records and the length of the intact prefix."""
    found: list[tuple[str, str, Any]] = []
    offset = 0
    while len(data) - offset >= _HEADER.size:
        crc, length = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if end > len(data) or zlib.crc32(data[offset + 4 : end]) != crc:
            break
        try:
            peer, key, result = msgpack.unpackb(data[offset + _HEADER.size : end], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            break
        found.append((str(peer), str(key), result))
        offset = end
    return found, offset


class IdempotencyTable:
    """Results of recent idempotent writes, by (peer, key); see the module docstring."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, directory: str | None = None) -> None:
        self.capacity = max(1, capacity)
        self._done: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.repeats_total = 0
        self.file = Path(directory) / FILE_NAME if directory else None
        self._records = 0
        if self.file is not None:
            try:
                self._load(self.file)
            except OSError as exc:  # e.g. a read-only data dir: keep the window in memory only
                log.warning("link: idempotency keys kept in memory only (%s: %s)", self.file, exc.strerror)
                self.file = None

    def _load(self, file: Path) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        data = file.read_bytes() if file.exists() else b""
        found, intact = _records(data)
        for peer, key, result in found:
            self._remember((peer, key), result)
        self._records = len(found)
        if intact < len(data):
            log.warning("link: idempotency file %s cut at byte %d (damaged tail)", file, intact)
            with open(file, "r+b") as f:
                f.truncate(intact)

    def _remember(self, slot: tuple[str, str], result: Any) -> None:
        self._done[slot] = result
        self._done.move_to_end(slot)
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)

    def _persist(self, slot: tuple[str, str], result: Any) -> None:
        if self.file is None:
            return
        try:
            if self._records >= 2 * self.capacity:
                body = b"".join(_frame(msgpack.packb([p, k, r])) for (p, k), r in self._done.items())
                temp = self.file.with_suffix(".tmp")
                temp.write_bytes(body)
                os.replace(temp, self.file)
                self._records = len(self._done)
                return
            with open(self.file, "ab") as f:
                f.write(_frame(msgpack.packb([slot[0], slot[1], result])))
            self._records += 1
        except (OSError, TypeError, ValueError) as exc:  # the window narrows; the write stands
            log.warning("link: idempotency key not persisted: %s", exc)

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
        self._remember(slot, task.result())
        self._persist(slot, task.result())
