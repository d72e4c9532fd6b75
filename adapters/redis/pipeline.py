"""Auto-pipelining: many concurrent commands share one Redis connection, in order.

Why: with one command per connection per round trip, every command costs its own send and
receive system calls and its own wake-up, and with tens of concurrent callers those dominate
(measured on the 2-core test machine: about 8k script calls/s through a pool of 50 one-at-a-time
connections, about 20k through one pipelined connection). Redis answers the commands of a
connection in the order it received them, so commands written back to back can be matched to
their replies first-in, first-out, and everything queued during one event-loop tick leaves in
one write.

A :class:`Pipe` owns at most one connection at a time and, per connection, three tasks: the
writer (sends what callers queued, a batch per wake-up), the reader (reads replies and resolves
the callers' futures; when the connection fails it fails what is owed and closes it) and a
watchdog (below).
Failure semantics, which the executor relies on:

* a command that never left the process (connect failed, or the connection broke before its
  batch was written) fails with :class:`NotSent`: resending it is always safe;
* Redis answering ``-LOADING`` refuses every command, so the ones in flight are NotSent too;
* a command written to a connection that then broke, or that got no reply within
  ``read_timeout``, fails with the connection error: it may or may not have run;
* an error reply (``-ERR``, ``-NOSCRIPT``...) fails only its own command; the connection is fine.

A caller that is cancelled (its deadline passed) leaves its reply to be read and dropped. A
watchdog task breaks the connection when replies are owed and none arrived for
``read_timeout``, so a hung server fails what is in flight instead of stalling the connection
forever; an idle connection is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import BusyLoadingError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["NotSent", "Pipe", "pack"]

log = logging.getLogger(__name__)


class NotSent(Exception):
    """The command did not reach Redis, or Redis refused it unrun: resending is safe.

    ``cause`` is the underlying error; ``connecting`` says it was the connect that failed (so
    resending at once would most likely fail the same way).
    """

    def __init__(self, cause: BaseException, *, connecting: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.connecting = connecting


def pack(args: Sequence[bytes | str | int | float]) -> bytes:
    """RESP-encode one command. Simpler than redis-py's ``pack_command`` (which splits large
    values into separate buffers and is the costliest step per command here): every argument
    is short or already bytes, so one join is enough. ``str`` is UTF-8 (lone surrogates from
    foreign non-UTF-8 names round-trip via surrogateescape)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8", "surrogateescape")
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to redis")
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


class Pipe:
    """One pipelined connection (made on first use and after a failure, by ``factory``)."""

    def __init__(self, factory: Callable[[], AbstractConnection], *, read_timeout: float) -> None:
        self._factory = factory
        self._read_timeout = read_timeout
        self._conn: AbstractConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._sent: deque[asyncio.Future[Any]] = deque()  # written, replies owed in this order
        self._queued: list[asyncio.Future[Any]] = []  # packed into _out, not written yet
        self._out: list[bytes] = []
        self._wake = asyncio.Event()
        self._progress = 0.0  # loop time of the last reply (or of the first owed command)
        self._stalled: RedisTimeoutError | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def load(self) -> int:
        """Commands waiting for a reply (for picking the least busy pipe)."""
        return len(self._sent) + len(self._queued)

    async def request(self, args: Sequence[bytes | str | int | float]) -> Any:
        """Send one command and return its reply (raises as in the module docstring)."""
        if self._conn is None:
            await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._out.append(pack(args))
        self._queued.append(future)
        self._wake.set()
        return await future

    async def _connect(self) -> AbstractConnection:
        async with self._connect_lock:
            if self._closed:
                raise NotSent(RedisConnectionError("redis connection pipe is closed"), connecting=True)
            if self._conn is not None:
                return self._conn
            conn = self._factory()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
            except (RedisError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                raise NotSent(exc, connecting=True) from exc
            self._conn = conn
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write(conn), name="redis-pipe-writer")
            self._reader = loop.create_task(self._read(conn), name="redis-pipe-reader")
            self._watchdog = loop.create_task(self._watch(conn), name="redis-pipe-watchdog")
            return conn

    async def _write(self, conn: AbstractConnection) -> None:
        """Write what callers queued, a batch per wake-up (so per event-loop tick, at most)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._out:
                continue
            if not conn.is_connected:
                return  # broken: the reader fails what is queued (never resend on a new socket)
            data, futures = self._out, self._queued
            self._out, self._queued = [], []
            if not self._sent:
                self._progress = asyncio.get_running_loop().time()  # the watchdog's clock starts
            self._sent.extend(futures)  # before the write: no reply can come earlier than that
            try:
                # No socket timeout on these connections: this writes at once, then awaits drain.
                await conn.send_packed_command(data, check_health=False)
            except Exception as exc:  # redis-py closed it; the reader fails what is in flight
                log.debug("redis pipe write failed: %s", exc)
                return

    def reset(self) -> None:
        """Drop the connection now (what is owed fails as after a connection loss); the next
        command connects again. Used when the master moved (Sentinel failover)."""
        conn = self._conn
        if conn is not None:
            self._fail(conn, RedisConnectionError("connection reset: the redis master moved"))
            if self._reader is not None:
                self._reader.cancel()  # it closes the old socket on its way out

    async def _watch(self, conn: AbstractConnection) -> None:
        """Break the connection when replies are owed and none came for ``read_timeout``.

        A periodic check instead of a timeout around every read: arming and cancelling a timer
        per reply costs more than the read itself at high rates.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._read_timeout / 4)
            if self._sent and loop.time() - self._progress > self._read_timeout:
                self._stalled = RedisTimeoutError(
                    f"no reply from redis within {self._read_timeout:g}s ({len(self._sent)} owed)"
                )
                if self._reader is not None:
                    self._reader.cancel()
                return

    async def _read(self, conn: AbstractConnection) -> None:
        """Match replies to callers until the connection fails; then fail what is owed."""
        loop = asyncio.get_running_loop()
        failure: BaseException = RedisConnectionError("redis connection closed")
        try:
            while True:
                reply: Any
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:
                    reply = exc  # an error reply: only this command failed, the stream is in sync
                self._progress = loop.time()
                if not self._sent:
                    raise RedisConnectionError(f"unexpected reply from redis: {reply!r:.100}")
                future = self._sent.popleft()
                if not future.done():
                    if isinstance(reply, BaseException):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            stalled, self._stalled = self._stalled, None
            task = asyncio.current_task()
            if stalled is None or task is None or task.uncancel() > 0:
                raise  # closed or reset, not our watchdog
            failure = stalled
        except Exception as exc:
            failure = exc
        finally:
            self._fail(conn, failure)
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _fail(self, conn: AbstractConnection, exc: BaseException) -> None:
        """The connection is gone: fail every owed reply, per the module docstring."""
        if self._conn is not conn:
            return
        self._conn = None
        for task in (self._writer, self._watchdog):
            if task is not None:
                task.cancel()  # the writer may sit in drain(); the socket is being closed anyway
        sent, self._sent = self._sent, deque()
        queued, self._queued = self._queued, []
        self._out = []
        refused = isinstance(exc, BusyLoadingError)
        first = True
        for future in sent:
            if future.done():
                continue
            if refused:
                future.set_exception(NotSent(exc))
            elif first:
                future.set_exception(exc)
            else:
                lost = RedisConnectionError(f"connection lost with the command in flight ({exc})")
                future.set_exception(lost)
            first = False
        for future in queued:
            if not future.done():
                future.set_exception(NotSent(exc))

    async def aclose(self) -> None:
        """Close the connection and stop the tasks (owed replies fail)."""
        self._closed = True
        async with self._connect_lock:  # no connect in progress past this point
            tasks = [t for t in (self._reader, self._writer, self._watchdog) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
