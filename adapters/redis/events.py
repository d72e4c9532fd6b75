"""The change-event tailer: every write by any gateway on this Redis, once, in revision order.

Each adapter instance runs one :class:`EventTailer` task. It blocks in ``XREAD`` on a dedicated
connection (so a blocked read never holds a pool connection) and calls the subscribed sinks
with a :class:`Change` for each stream entry. Own writes are delivered the same way as writes
of other gateways: a write's event reaches the sinks one stream round trip after it commits,
and all gateways see the same order.

Guarantees and their limits:

* **Order, no duplicates.** Stream ids are ``<revision>-0`` and revisions are contiguous (one
  INCR and one XADD per write, in one script), so the tailer delivers revision ``r`` only after
  ``r - 1`` and never twice within a process.
* **Resume.** After each delivered batch the position ``<epoch>:<revision>`` is written to
  ``P cursor:<engine_id>`` (pipelined with the next XREAD, no extra round trip), and once more
  at close. A new adapter with the same ``engine_id`` resumes there: nothing missed, nothing
  repeated after a clean stop. After a crash of the gateway the batch in flight may be
  delivered again (the cursor lags delivery by at most one batch). The key expires
  ``cursor_ttl`` after its last write (refreshed while the gateway runs), so engine ids that
  never come back do not pile up in Redis; the engine id must be stable across restarts for
  resuming to work.
  A Redis restart or connection loss only breaks the XREAD; the tailer reconnects with
  exponential jittered backoff and continues from the last delivered id.
* **Trimmed history.** The stream keeps about ``stream_max_len`` entries. When the next entry
  is not ``last + 1`` the events in between are gone: the tailer logs an error with the range,
  adds the count to ``events_missed_total`` and goes on with the entries that exist. Sinks see
  the jump in ``Change.revision`` (revisions are contiguous, so a watcher can detect it and
  resync from a snapshot).
* **New epoch.** When ``P epoch`` differs from the tailer's (FLUSHALL, a Redis that lost its
  data), the old history is gone: the tailer adopts the new epoch and delivers the new stream
  from its start. Counted in ``epoch_changes_total``.
* Sink exceptions are logged and counted, never stop the tailer; values that are not valid
  JSON are delivered as ``None`` and counted (the log names scope and key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.connection import Health, RedisExecutor
from adapters.redis.scripts import KeyLayout
from gateway import jsonutil
from gateway.state.adapter import Change, ChangeKind, ChangeSink

__all__ = ["EventTailer", "backoff_delay", "decode_entry"]

log = logging.getLogger(__name__)

_KINDS = {b"c": ChangeKind.CREATED, b"u": ChangeKind.UPDATED, b"d": ChangeKind.DELETED}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def decode_entry(entry_id: bytes, fields: list[bytes], on_corrupt: Callable[[str, str, str], None]) -> Change:
    """Turn one stream entry into a Change; bad JSON becomes None and is reported."""
    revision = int(entry_id.split(b"-", 1)[0])
    if len(fields) != 2 or fields[0] != b"m":
        raise ValueError(f"unexpected fields {fields[::2]!r}")
    kind, raw_scope, raw_key, old, new, origin = msgpack.unpackb(fields[1], raw=True)
    scope, key = _text(raw_scope), _text(raw_key)

    def value(raw: bytes, which: str) -> Any:
        if not raw:
            return None
        try:  # decoding first spares json its encoding detection; bad UTF-8 is a ValueError too
            return jsonutil.loads(raw.decode())
        except ValueError as exc:
            on_corrupt(scope, key, f"{which} value of event {revision}: {exc}")
            return None

    return Change(
        scope=scope,
        key=key,
        kind=_KINDS[kind],
        old_value=value(old, "old"),
        new_value=value(new, "new"),
        revision=revision,
        origin=_text(origin),
    )


class _Subscriber:
    __slots__ = ("after", "sink")

    def __init__(self, sink: ChangeSink, after: int) -> None:
        self.sink = sink
        self.after = after


class EventTailer:
    """Owns the XREAD loop task; ``start`` creates it, ``stop`` cancels and awaits it."""

    def __init__(
        self,
        executor: RedisExecutor,
        layout: KeyLayout,
        *,
        engine_id: str,
        health: Health,
        adopt_epoch: Callable[[], Awaitable[str]],
        on_corrupt: Callable[[str, str, str], None],
        block_ms: int,
        batch: int,
        command_timeout: float,
        backoff_base: float,
        backoff_cap: float,
        cursor_ttl: int,
    ) -> None:
        self._executor = executor
        self._layout = layout
        self._cursor_key = layout.cursor(engine_id)
        self._health = health
        self._adopt_epoch = adopt_epoch
        self._on_corrupt = on_corrupt
        self._block_ms = block_ms
        self._batch = batch
        self._read_timeout = block_ms / 1000 + command_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sinks: list[_Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self.epoch = ""
        self.delivered = 0  # revision of the last event handed to the sinks
        self._persisted: bytes | None = None
        self._persisted_at = 0.0  # loop time of the last cursor write
        self.cursor_ttl = cursor_ttl
        self.events_delivered_total = 0
        self.events_missed_total = 0
        self.sink_errors_total = 0
        self.bad_entries_total = 0
        self.epoch_changes_total = 0

    def subscribe(self, sink: ChangeSink, *, after: int) -> None:
        """Deliver to ``sink`` the events with a revision above ``after`` (the caller passes the
        newest revision it knows was committed, so a sink never sees writes that returned
        before it subscribed, as with a store that publishes synchronously)."""
        self._sinks.append(_Subscriber(sink, after))

    @property
    def cursor(self) -> bytes:
        return f"{self.epoch}:{self.delivered}".encode()

    @staticmethod
    def parse_cursor(raw: bytes | None) -> tuple[str, int] | None:
        if not raw:
            return None
        epoch, _, rev = raw.decode("ascii", "replace").rpartition(":")
        try:
            return epoch, int(rev)
        except ValueError:
            return None

    def start(self, epoch: str, from_revision: int, *, saved: bool) -> None:
        """Begin delivering events after ``from_revision`` of ``epoch``.

        ``saved`` says whether that position is already the stored cursor; if not, it is saved
        with the first read (or at close), so a restart resumes from here even if no event
        arrived in between.
        """
        if self._task is not None:
            raise RuntimeError("tailer already started")
        self.epoch = epoch
        self.delivered = from_revision
        self._persisted = self.cursor if saved else None
        self._persisted_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="redis-event-tailer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # Library code can lose a cancellation (asyncio.wait_for on 3.11 does when its inner
        # await completes at the same moment); ask again until the task has really ended.
        while not (await asyncio.wait({task}, timeout=1.0))[0]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    async def persist_cursor(self) -> None:
        """Write the current position now (at close; the loop does it after each batch)."""
        if self.epoch and self._persisted != self.cursor:
            value = self.cursor
            await self._executor.call("SET", self._cursor_key, value, "EX", self.cursor_ttl)
            self._persisted = value

    async def wait_delivered(self, revision: int) -> None:
        """Return once the sinks have seen ``revision`` (the caller bounds the wait)."""
        while self.delivered < revision:
            event = self._progress
            await event.wait()

    # --- the loop ---

    async def _run(self) -> None:
        failures = 0
        while True:
            conn = self._executor.make_dedicated_connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
                while True:
                    # Bounded here: XREAD blocks block_ms, a live Redis answers within the rest.
                    async with asyncio.timeout(self._read_timeout):
                        await self._round(conn)
                    failures = 0
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._health.mark_down(f"event stream read failed: {exc}")
                log.debug("redis event tailer: %s", exc)
            except RedisError as exc:  # an error reply, e.g. NOPERM or WRONGTYPE on the stream key
                log.error("redis event tailer: %s", exc)
            except Exception:  # a bug must not end event delivery for this process
                log.exception("redis event tailer failed; restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            delay = backoff_delay(failures, self._backoff_base, self._backoff_cap)
            failures += 1
            await asyncio.sleep(delay)

    async def _round(self, conn: AbstractConnection) -> None:
        """One pipelined exchange: save the position, check the epoch, read new entries."""
        commands: list[tuple[Any, ...]] = []
        cursor = self.cursor
        now = asyncio.get_running_loop().time()
        if cursor != self._persisted or now - self._persisted_at > self.cursor_ttl / 4:
            commands.append(("SET", self._cursor_key, cursor, "EX", self.cursor_ttl))
        commands.append(("GET", self._layout.epoch))
        commands.append(
            (
                "XREAD", "COUNT", self._batch, "BLOCK", self._block_ms,
                "STREAMS", self._layout.events, f"{self.delivered}-0",
            )
        )  # fmt: skip
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        replies = [await conn.read_response(timeout=None) for _ in commands]
        self._health.mark_up()
        if len(commands) == 3:
            self._persisted, self._persisted_at = cursor, now
        epoch_raw, stream_reply = replies[-2], replies[-1]
        if epoch_raw is None or epoch_raw.decode("ascii", "replace") != self.epoch:
            await self._new_epoch()
            return
        if stream_reply:
            # RESP2: [[stream, entries]]; RESP3 (protocol=3 in the URL): {stream: entries}.
            entries = (
                next(iter(stream_reply.values())) if isinstance(stream_reply, dict) else stream_reply[0][1]
            )
            self._deliver(entries)

    async def _new_epoch(self) -> None:
        old = self.epoch
        self.epoch = await self._adopt_epoch()
        self.epoch_changes_total += 1
        log.error(
            "redis store epoch changed from %s to %s (its data was lost or flushed): events "
            "after revision %d of the old history are gone; delivering the new history from its start",
            old,
            self.epoch,
            self.delivered,
        )
        self.delivered = 0
        for sub in self._sinks:
            sub.after = 0
        self._signal_progress()

    def _deliver(self, entries: list[tuple[bytes, list[bytes]]]) -> None:
        for entry_id, fields in entries:
            revision = int(entry_id.split(b"-", 1)[0])
            if revision <= self.delivered:
                continue
            if revision != self.delivered + 1:
                missed = revision - self.delivered - 1
                self.events_missed_total += missed
                log.error(
                    "redis event stream was trimmed past this gateway's position: revisions %d..%d "
                    "(%d events) are gone and were not delivered; raise stream_max_len if this repeats",
                    self.delivered + 1,
                    revision - 1,
                    missed,
                )
            try:
                change = decode_entry(entry_id, fields, self._on_corrupt)
            except (KeyError, TypeError, ValueError) as exc:
                self.bad_entries_total += 1
                log.error("redis event %s is malformed (%r); skipped", entry_id, exc)
                self.delivered = revision
                continue
            for sub in self._sinks:
                if revision <= sub.after:
                    continue
                try:
                    sub.sink(change)
                except Exception:
                    self.sink_errors_total += 1
                    log.exception("change sink failed on revision %d", revision)
            self.delivered = revision
            self.events_delivered_total += 1
        self._signal_progress()

    def _signal_progress(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff (also used by the adapter's CAS retries)."""
    if base <= 0:
        return 0.0
    return min(cap, random.random() * base * math.pow(2, min(failures, 30)))
