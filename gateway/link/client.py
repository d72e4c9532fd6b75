"""The downstream side of one link: connect, authenticate, pipeline requests, follow watches.

:func:`connect` opens a TCP (or TLS) connection to one upstream endpoint and completes the
mutual handshake, pinning the upstream's key; it returns a :class:`LinkClient` or raises
:class:`AuthError` (with the refusal ``reason``, ours or the upstream's) or
:class:`LinkBroken` (unreachable, reset, handshake timeout).

A client multiplexes any number of concurrent :meth:`LinkClient.request` calls over the one
connection (each a future keyed by request id; a cancelled caller cancels its request on the
link, so the upstream can stop working on it) and any number of watch streams
(:meth:`LinkClient.watch`), whose frames are handed to a :class:`WatchListener` synchronously
as they arrive, in order. Reconnecting is not done here: the Bridge owns that policy.

Failures map to the gateway error tree: an upstream ``ErrorResponse`` becomes the exception of
its code (:func:`~gateway.link.messages.error_from_wire`), a lost or closed link fails every
pending call with :class:`LinkBroken` (code ``UPSTREAM_UNAVAILABLE``: a write in flight may or
may not have been applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import AuthError, GatewayError, LinkBroken, LinkClosed, LocalProtocolError
from gateway.link.auth import ClientHandshake
from gateway.link.connection import LinkConnection
from gateway.link.events import (
    BacklogEndReceived,
    ConnectionClosed,
    ErrorReceived,
    EventReceived,
    HandshakeComplete,
    HandshakeFailed,
    LinkEvent,
    ProgressReceived,
    ResponseReceived,
)
from gateway.link.frames import DEFAULT_MAX_FRAME_SIZE
from gateway.link.messages import WatchEvent
from gateway.link.requests import RequestArgs, WatchArgs
from gateway.link.states import NORMAL, State
from gateway.link.transport import FLUSH_EVERY, LinkProtocol

if TYPE_CHECKING:
    from gateway.metrics import Metrics

__all__ = ["ClientWatch", "LinkClient", "WatchListener", "client_tls_context", "connect"]

log = logging.getLogger(__name__)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: a caller that gave up must not cause an asyncio warning."""
    if not future.cancelled():
        future.exception()


class WatchListener(Protocol):
    """Receives one watch stream's frames, synchronously and in order (must not block)."""

    def on_event(self, event: WatchEvent) -> None: ...

    def on_backlog_end(self, revision: int, epoch: str) -> None: ...

    def on_progress(self, revision: int) -> None: ...


class ClientWatch:
    """An open watch: ``done`` resolves when the stream ends (the upstream's final answer)."""

    def __init__(self, client: LinkClient, sub_id: int, listener: WatchListener) -> None:
        self.client = client
        self.sub_id = sub_id
        self.listener = listener
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.done.add_done_callback(_retrieve)

    def cancel(self) -> None:
        """End the stream: nothing more is delivered; ``done`` fails with CancelledError."""
        self.client._cancel_watch(self)


def client_tls_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """TLS 1.3 only, the upstream's certificate verified (``ca`` or the system store), and a
    client certificate when ``cert`` is given (for upstreams that require mTLS)."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class LinkClient(LinkProtocol):
    """One authenticated link to an upstream (build it with :func:`connect`)."""

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        client_id: str,
        server_key: Ed25519PublicKey,
        metrics: Metrics | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        heartbeat_interval: float = 20.0,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 5.0,
        close_timeout: float = 5.0,
    ) -> None:
        super().__init__(metrics=metrics, close_timeout=close_timeout)
        self._private_key = private_key
        self.client_id = client_id
        self._server_key = server_key
        self._conn_args: dict[str, Any] = {
            "max_frame_size": max_frame_size,
            "heartbeat_interval": heartbeat_interval,
            "idle_timeout": idle_timeout,
            "handshake_timeout": handshake_timeout,
            "close_timeout": close_timeout,
        }
        self.ready: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._watches: dict[int, ClientWatch] = {}
        self.peer: HandshakeComplete | None = None

    # -- LinkProtocol -----------------------------------------------------------------------

    def make_connection(self, transport: asyncio.Transport) -> LinkConnection:
        cert_hash = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                cert_hash = hashlib.sha256(der).digest()
        handshake = ClientHandshake(
            private_key=self._private_key,
            client_id=self.client_id,
            server_key=self._server_key,
            cert_hash=cert_hash,
        )
        return LinkConnection(handshake, **self._conn_args)

    def handle_event(self, event: LinkEvent) -> None:
        match event:
            case ResponseReceived(request_id=rid, result=result):
                self._settle(rid, result, None)
            case ErrorReceived(request_id=rid):
                self._settle(rid, None, event.to_exception())
            case EventReceived(event=watch_event):
                watch = self._watches.get(watch_event.sub_id)
                if watch is not None:
                    watch.listener.on_event(watch_event)
            case BacklogEndReceived(sub_id=sub_id, revision=revision, epoch=epoch):
                watch = self._watches.get(sub_id)
                if watch is not None:
                    watch.listener.on_backlog_end(revision, epoch)
            case ProgressReceived(sub_id=sub_id, revision=revision):
                watch = self._watches.get(sub_id)
                if watch is not None:
                    watch.listener.on_progress(revision)
            case HandshakeComplete():
                self.peer = event
                if not self.ready.done():
                    self.ready.set_result(event)
            case HandshakeFailed(reason=reason, message=message):
                if not self.ready.done():
                    self.ready.set_exception(AuthError(message, reason=reason.value))
            case ConnectionClosed():
                self._fail_all(event)
            case _:
                pass

    def on_lost(self) -> None:
        event = self.close_event or ConnectionClosed("CONNECTION_LOST", "the connection was lost", True)
        self._fail_all(event)

    def _fail_all(self, event: ConnectionClosed) -> None:
        if not self.ready.done():
            self.ready.set_exception(
                LinkBroken(f"link closed during the handshake: {event.code} {event.reason}")
            )
        requests, self._requests = self._requests, {}
        watches, self._watches = self._watches, {}
        if not requests and not watches:
            return
        error = LinkBroken(f"the link to the upstream closed ({event.code}: {event.reason})")
        for future in requests.values():
            if not future.done():
                future.set_exception(error)
        for watch in watches.values():
            if not watch.done.done():
                watch.done.set_exception(error)

    def _settle(self, rid: int, result: Any, error: GatewayError | None) -> None:
        future = self._requests.pop(rid, None)
        if future is None:
            watch = self._watches.pop(rid, None)
            future = watch.done if watch is not None else None
        if future is None or future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    # -- API --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.conn is not None and self.conn.state is State.OPEN and self.transport is not None

    def _send(self, args: RequestArgs) -> int:
        conn = self.conn
        if conn is None or not self.is_open:
            raise LinkBroken("the link to the upstream is not open")
        try:
            rid = conn.send_request(args)
        except LinkClosed as exc:
            raise LinkBroken(f"the link to the upstream is closing: {exc.message}") from exc
        except LocalProtocolError as exc:  # FRAME_TOO_LARGE, or a value msgpack cannot encode
            raise GatewayError(f"cannot send {args.OP}: {exc.message}", code=exc.code) from exc
        self.queued_since_flush += 1
        if self.queued_since_flush >= FLUSH_EVERY:
            self.flush()  # let the upstream start on these while we produce the rest
        else:
            self.kick()
        return rid

    async def request(self, args: RequestArgs, timeout: float | None = None) -> Any:
        """Send one request and wait for its answer.

        With ``timeout`` (seconds) the request is abandoned on the link and ``TimeoutError``
        raised when no answer came in time (one timer handle: cheaper than a timeout scope
        around the call). Cancelling the caller abandons the request too.
        """
        if self.writing_paused:
            await self.drain()
        rid = self._send(args)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._requests[rid] = future
        timer = None if timeout is None else self._loop.call_later(timeout, self._expire, rid)
        try:
            return await future
        except (asyncio.CancelledError, TimeoutError):
            self._abandon(rid)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, rid: int) -> None:
        future = self._requests.get(rid)
        if future is not None and not future.done():
            future.set_exception(TimeoutError())

    def _abandon(self, rid: int) -> None:
        if self._requests.pop(rid, None) is not None and self.conn is not None:
            with contextlib.suppress(GatewayError):
                if self.conn.cancel(rid):
                    self.kick()

    def watch(self, args: WatchArgs, listener: WatchListener) -> ClientWatch:
        """Open a watch stream; frames go to ``listener`` until ``done`` resolves."""
        rid = self._send(args)
        watch = ClientWatch(self, rid, listener)
        self._watches[rid] = watch
        return watch

    def _cancel_watch(self, watch: ClientWatch) -> None:
        if self._watches.pop(watch.sub_id, None) is None:
            return
        if self.conn is not None:
            with contextlib.suppress(GatewayError):
                if self.conn.cancel(watch.sub_id):
                    self.kick()
        watch.done.cancel()

    def statistics(self) -> dict[str, float]:
        return {"link_pending_requests": len(self._requests), "link_client_watches": len(self._watches)}

    async def aclose(self, code: str = NORMAL, reason: str = "") -> None:
        """Close the link (closing handshake, bounded by ``close_timeout``)."""
        self.close(code, reason)
        await self.wait_closed(self.close_timeout)


async def connect(
    host: str,
    port: int,
    *,
    private_key: Ed25519PrivateKey,
    client_id: str,
    server_key: Ed25519PublicKey,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
    metrics: Metrics | None = None,
    **options: Any,
) -> LinkClient:
    """Connect to ``host:port`` and authenticate; see the module docstring for the errors.

    ``options`` go to :class:`LinkClient` (frame size, heartbeat and idle times ...).
    """
    loop = asyncio.get_running_loop()

    def factory() -> LinkClient:
        return LinkClient(
            private_key=private_key, client_id=client_id, server_key=server_key, metrics=metrics, **options
        )

    try:
        async with asyncio.timeout(timeout):
            _, client = await loop.create_connection(
                factory, host, port, ssl=tls, server_hostname=(server_hostname or host) if tls else None
            )
    except TimeoutError as exc:
        raise LinkBroken(f"connecting to {host}:{port} timed out after {timeout:g} s") from exc
    except (OSError, ssl.SSLError) as exc:
        raise LinkBroken(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(client.ready)
    except TimeoutError as exc:
        client.abort()
        raise LinkBroken(f"the handshake with {host}:{port} timed out after {timeout:g} s") from exc
    except BaseException:
        client.abort()
        raise
    return client
