"""The asyncio driver of a :class:`~gateway.link.connection.LinkConnection`.

The sans-IO connection decides everything (framing, handshake, authorization, timers); this
module only moves bytes and time into it and its output onto the socket. One
:class:`LinkProtocol` per TCP (or TLS) connection, subclassed by the server and the client
sides, which only implement :meth:`LinkProtocol.handle_event`.

Why an ``asyncio.Protocol`` and not streams: the link is a pipelined, many-requests-per-read
protocol. ``data_received`` hands every byte to the connection at once and drains all the
events they complete in one go, without a reader task and its wake-ups per frame.

**Write batching.** Sending never writes to the socket directly: ``send_*`` calls on the
connection only append to its output buffer and :meth:`LinkProtocol.kick` schedules one flush
for the end of the current event-loop iteration. Every response, event and request produced
in the same tick leaves in a single ``transport.write`` (one syscall, one TLS record batch).

**Flow control.** The transport's write buffer has high/low water marks; while it is above
the high mark :attr:`LinkProtocol.writing_paused` is set and :meth:`LinkProtocol.drain` waits.
The server also stops reading new requests while its peer is not reading answers, so a client
that never reads cannot make the server buffer without bound (watch streams are bounded by
the server separately, per watch).

**Timers.** One ``call_later`` handle per connection runs ``conn.tick()`` at the deadline it
returns (heartbeat ping, idle timeout, handshake and close deadlines).

**Closing.** When the connection reaches CLOSED or ERROR the output (its ``Close`` frame) is
flushed and the transport closed; if the peer does not read it within ``close_timeout`` the
transport is aborted, so a stuck peer cannot keep a socket alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Final, cast

from gateway.errors import LinkBroken, RemoteProtocolError
from gateway.link.events import NEED_DATA, ConnectionClosed, LinkEvent
from gateway.link.states import State

if TYPE_CHECKING:
    from gateway.link.connection import LinkConnection
    from gateway.metrics import Metrics

__all__ = ["FLUSH_EVERY", "WRITE_HIGH_WATER", "WRITE_LOW_WATER", "LinkProtocol", "peer_address"]

log = logging.getLogger(__name__)

#: Transport write-buffer marks: large enough that a pipelined burst never pauses, small
#: enough that a peer that stops reading is noticed after a bounded amount of memory.
#: Frames queued in one loop iteration before they are written without waiting for its end.
#: Per-tick batching alone makes two busy ends take turns: many callers woken by one read send
#: their next requests as one late batch while the other end idles. Writing every few frames
#: lets both ends work at once, at the cost of a few more (still batched) writes.
FLUSH_EVERY: Final = 16
WRITE_HIGH_WATER: Final = 4 * 1024 * 1024
WRITE_LOW_WATER: Final = 1024 * 1024
_FINISHED_STATES: Final = (State.CLOSED, State.ERROR)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The peer's IP address (no port: rate limits and logs are per host)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) if peer else "unknown"


class LinkProtocol(asyncio.Protocol):
    """Drives one LinkConnection over one asyncio transport (see the module docstring).

    Subclasses build the connection in :meth:`make_connection` (called from
    ``connection_made``, when the TLS certificate of the peer is known) and react to its
    events in :meth:`handle_event`. :attr:`closed` resolves once the transport is gone, with
    the :class:`ConnectionClosed` event that ended the link.
    """

    pause_reading_with_writing = False  #: the server sets this (see module docstring)

    def __init__(self, *, metrics: Metrics | None = None, close_timeout: float = 5.0) -> None:
        self._metrics = metrics
        # The byte counters' children, looked up once (labels() costs more than a small frame).
        self._bytes_in = metrics.link_bytes.labels("in") if metrics is not None else None
        self._bytes_out = metrics.link_bytes.labels("out") if metrics is not None else None
        self.close_timeout = close_timeout
        self.conn: LinkConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.address = "unknown"
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self.queued_since_flush = 0  # frames producers queued since the last write (see flush)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_state: State | None = None  # the link state the timer was armed in
        self._abort_timer: asyncio.TimerHandle | None = None
        self.writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._shutting = False  # the transport close has been started
        self.closed: asyncio.Future[ConnectionClosed] = self._loop.create_future()
        self.close_event: ConnectionClosed | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # -- to implement -----------------------------------------------------------------------

    def make_connection(self, transport: asyncio.Transport) -> LinkConnection:
        raise NotImplementedError

    def handle_event(self, event: LinkEvent) -> None:
        raise NotImplementedError

    def on_protocol_error(self, exc: RemoteProtocolError) -> None:
        """The peer broke the protocol (the Close with the code is already queued)."""

    def on_lost(self) -> None:
        """Called once when the transport is gone (after the last event)."""

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.address = peer_address(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Answers are small and latency-bound: never let Nagle hold one back for an ACK.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.conn = self.make_connection(transport)
            self.conn.start()
        except Exception:
            log.exception("link: cannot set up the connection from %s", self.address)
            transport.abort()
            return
        self._after_input()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self._shutting:
            return
        self.bytes_in += len(data)
        if self._bytes_in is not None:
            self._bytes_in.inc(len(data))
        conn.receive_data(data)
        self._after_input()

    def eof_received(self) -> bool:
        conn = self.conn
        if conn is not None and conn.state not in _FINISHED_STATES:
            conn.receive_data(b"")
            self._after_input()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        conn = self.conn
        if conn is not None and conn.state not in _FINISHED_STATES:
            conn.receive_data(b"")
            self._process_events()
        if not self.closed.done():
            event = self.close_event or ConnectionClosed(
                "CONNECTION_LOST",
                f"the connection was lost: {exc}" if exc else "the connection was lost",
                True,
            )
            self.close_event = event
            self.closed.set_result(event)
        self._wake_drainers(LinkBroken("the link is closed"))
        self.transport = None
        try:
            self.on_lost()
        except Exception:
            log.exception("link: cleanup of the connection from %s failed", self.address)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.pause_reading_with_writing and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.pause_reading_with_writing and self.transport is not None and not self._shutting:
            self.transport.resume_reading()
        self._wake_drainers(None)

    # -- driving the connection -------------------------------------------------------------

    def _after_input(self) -> None:
        self._process_events()
        self._flush()
        self._after_state_change()

    def _process_events(self) -> None:
        conn = self.conn
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                self.close_event = event
            try:
                self.handle_event(event)
            except Exception:
                log.exception("link: handling %s from %s failed", type(event).__name__, self.address)

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        if self.close_event is None:
            self.close_event = ConnectionClosed(exc.code, exc.message, remote=True)
        if self._metrics is not None:
            self._metrics.protocol_errors.labels("link", exc.code).inc()
        try:
            self.on_protocol_error(exc)
        except Exception:
            log.exception("link: protocol error handler failed for %s", self.address)

    def _after_state_change(self) -> None:
        conn = self.conn
        if conn is None:
            return
        if conn.state in _FINISHED_STATES:
            self._shutdown()
        elif self._timer is None:
            self._arm_timer()
        elif conn.state is not self._timer_state:  # new deadlines (handshake done: heartbeats)
            self._timer.cancel()
            self._timer = None
            self._arm_timer()

    def _arm_timer(self) -> None:
        conn = self.conn
        assert conn is not None
        delay = conn.tick()
        self._flush()
        self._process_events()
        if delay is None or conn.state in _FINISHED_STATES:
            self._shutdown()
            return
        self._timer_state = conn.state
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.conn is None or self._shutting:
            return
        self._arm_timer()

    def kick(self) -> None:
        """Schedule a flush of the connection's output at the end of this loop iteration."""
        if not self._flush_scheduled and not self._shutting:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()
        self._after_state_change()

    def flush(self) -> None:
        """Write the connection's output to the transport now (not at the end of the tick).

        For producers that queue many frames in one tick (a burst of watch events): once the
        bytes are in the transport, its buffer size and flow control see them.
        """
        self._flush()

    def _flush(self) -> None:
        self.queued_since_flush = 0
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        data = conn.data_to_send()
        if data:
            self.bytes_out += len(data)
            if self._bytes_out is not None:
                self._bytes_out.inc(len(data))
            transport.write(data)

    def outbound_bytes(self) -> int:
        """Bytes queued for the peer and not yet written to the socket."""
        transport = self.transport
        pending = transport.get_write_buffer_size() if transport is not None else 0
        conn = self.conn
        return pending + (int(conn.statistics()["outbound_bytes"]) if conn is not None else 0)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark."""
        if self.transport is None:
            raise LinkBroken("the link is closed")
        if not self.writing_paused:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: a drainer that gave up must not warn

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: str = "NORMAL", reason: str = "") -> None:
        """Start the closing handshake (or just close, before the handshake ends)."""
        conn = self.conn
        if conn is None:
            if self.transport is not None:
                self.transport.abort()
            return
        conn.close(code, reason)
        self._flush()
        self._process_events()
        self._after_state_change()

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def _shutdown(self) -> None:
        if self._shutting:
            return
        self._shutting = True
        self._flush()
        self._cancel_timers()
        transport = self.transport
        if transport is None:
            return
        transport.close()  # after the buffered output (the Close frame) is written
        self._abort_timer = self._loop.call_later(self.close_timeout, transport.abort)

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait_closed(self, timeout: float | None = None) -> ConnectionClosed | None:
        """Wait until the transport is gone; abort it if that takes longer than ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort()
            return await asyncio.shield(self.closed)
