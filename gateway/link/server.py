"""The upstream side of the federation link: a TCP/TLS listener serving authenticated peers.

``LinkServer`` accepts connections, runs the mutual handshake against the authorized-peers
directory, and serves requests through an injected :class:`RequestHandler` (the composition
root builds one over the local state adapter; this package never imports the state module),
so any store can be an upstream: kv, Redis, or a Bridge again (chaining).

What the server itself owns, because it is link behaviour rather than state behaviour:

- **Admission**: failed handshakes are counted (``auth_failures_total{reason}``), logged with
  the peer address and the reason (never a secret), and rate-limited per address; an address
  over its budget is refused with ``rate_limited`` before any crypto is spent on it.
- **Authorization** of every request and watch is done by the connection (``FORBIDDEN``,
  counted in ``forbidden_total{op}``); the handler receives only permitted requests.
- **Watches** (:mod:`gateway.link.watches`): replay from the :class:`ChangeHistory`, the
  backlog-end marker, live events, progress marks, and the slow-consumer bound.
- **Peers reload** (:meth:`LinkServer.reload_peers`, the app calls it on SIGHUP): new
  connections use the new file at once; open connections of a removed key are closed, those
  whose permissions changed get them at once (watches no longer allowed end with FORBIDDEN).
- **Shutdown**: stop accepting, let requests in flight answer (bounded), then close every link
  with ``GOING_AWAY`` after the events already queued, so downstreams reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import (
    ConfigError,
    ForbiddenError,
    GatewayError,
    LinkClosed,
    LocalProtocolError,
    RemoteProtocolError,
)
from gateway.link.acl import PeerDirectory, Permissions, load_authorized_peers
from gateway.link.auth import AuthFailure, AuthRateLimiter, ReplayCache, ServerHandshake
from gateway.link.connection import LinkConnection
from gateway.link.events import (
    CancelReceived,
    HandshakeComplete,
    HandshakeFailed,
    LinkEvent,
    RequestReceived,
    RequestRejected,
)
from gateway.link.frames import DEFAULT_MAX_FRAME_SIZE
from gateway.link.history import ChangeHistory
from gateway.link.requests import RequestArgs, WatchArgs
from gateway.link.states import CANCELLED, GOING_AWAY, UNAUTHORIZED, State
from gateway.link.transport import LinkProtocol
from gateway.link.watches import WatchHub

if TYPE_CHECKING:
    from gateway.metrics import Metrics

__all__ = ["LinkServer", "PeerInfo", "RequestHandler", "server_tls_context"]

log = logging.getLogger(__name__)

_DRAIN_ON_STOP: Final = 2.0  # seconds requests in flight get to answer at shutdown


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who sent a request: the id it announced (its engine id), its entry, its permissions."""

    peer_id: str
    name: str
    address: str
    permissions: Permissions


class RequestHandler(Protocol):
    """Serves one permitted request (any op but ``watch``); returns the wire result.

    Raise a :class:`GatewayError` to answer with its code. The handler must itself filter
    ``list_groups`` (and pattern reads) by ``peer.permissions``.
    """

    def __call__(self, peer: PeerInfo, args: RequestArgs) -> Awaitable[Any]: ...


def server_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """TLS 1.3 only; with ``client_ca`` the peer must present a certificate it signed (mTLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the link TLS files: {exc}", key="link.tls") from exc
    return ctx


class _Resumed:
    """Awaitable that continues a coroutine already started by hand (see ``_start_request``).

    It re-yields what the coroutine yielded (a future the task then waits on, or None for a
    bare yield) and forwards what the task sends or throws in, cancellation included.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, None]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # the task throws cancellation in: pass it on
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration:
                    return


async def _resume(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    await _Resumed(coro, pending)


class _ServerLink(LinkProtocol):
    """One accepted connection."""

    pause_reading_with_writing = True

    def __init__(self, server: LinkServer) -> None:
        super().__init__(metrics=server.metrics, close_timeout=server.close_timeout)
        self.server = server
        self.peer: PeerInfo | None = None
        self.peer_key: bytes | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def make_connection(self, transport: asyncio.Transport) -> LinkConnection:
        s = self.server
        handshake = ServerHandshake(
            private_key=s.identity,
            server_id=s.server_id,
            peers=s.peers,
            replay_cache=s.replay_cache,
            cert_hash=s.cert_hash,
        )
        return LinkConnection(
            handshake,
            max_frame_size=s.max_frame_size,
            heartbeat_interval=s.heartbeat_interval,
            idle_timeout=s.idle_timeout,
            handshake_timeout=s.handshake_timeout,
            close_timeout=s.close_timeout,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        conn = self.conn
        if conn is None:
            return
        self.server.links.add(self)
        if not self.server.rate_limiter.allow(self.address):
            conn.refuse(AuthFailure.RATE_LIMITED, "too many failed handshakes from this address")
            self._after_input()

    def handle_event(self, event: LinkEvent) -> None:
        conn = self.conn
        assert conn is not None
        match event:
            case RequestReceived(request_id=rid, args=args):
                if isinstance(args, WatchArgs):
                    assert self.peer is not None
                    self.server.watches.open(self, rid, args)
                else:
                    self._start_request(rid, args)
            case CancelReceived(request_id=rid):
                task = self.tasks.get(rid)
                if task is not None:
                    task.cancel()
                else:
                    self.server.watches.end(self, rid, CANCELLED, "cancelled by the peer")
            case RequestRejected(op=op, code=code, message=message):
                if code == ForbiddenError.code:
                    self.server.metrics_forbidden(op)
                    log.info("link: %s refused to peer %s: %s", op, self._who(), message)
            case HandshakeComplete():
                self._opened(event)
            case HandshakeFailed():
                self.server.auth_failed(self, event.reason, event.message)
            case _:
                pass

    def on_protocol_error(self, exc: RemoteProtocolError) -> None:
        if self.peer is None:  # garbage or an oversized frame instead of a handshake
            conn = self.conn
            reason = conn.handshake_failure if conn is not None else None
            self.server.auth_failed(self, reason or AuthFailure.MALFORMED, f"{exc.code}: {exc.message}")
        else:
            log.warning("link: peer %s broke the protocol (%s: %s)", self._who(), exc.code, exc.message)

    def _opened(self, event: HandshakeComplete) -> None:
        perms = event.permissions or Permissions()
        self.peer_key = event.peer_key
        self.peer = PeerInfo(event.peer_id, event.peer_name or "?", self.address, perms)
        log.info(
            "link: peer %s (%s, key %s) connected from %s",
            self.peer.name, event.peer_id, event.peer_key_text, self.address,
        )  # fmt: skip

    def _who(self) -> str:
        return f"{self.peer.name}@{self.address}" if self.peer else self.address

    def update_permissions(self, permissions: Permissions) -> None:
        conn = self.conn
        if conn is None or self.peer is None:
            return
        conn.permissions = permissions
        p = self.peer
        self.peer = PeerInfo(p.peer_id, p.name, p.address, permissions)
        self.server.watches.recheck(self, permissions)

    def _start_request(self, rid: int, args: RequestArgs) -> None:
        """Run the request's handler now, up to its first real suspension (``eager_ops``).

        Most requests on the embedded store finish without ever waiting (a ``get`` is a dict
        lookup); a task per request would cost more than the request itself. So the handler
        coroutine is started eagerly, and only if it suspends is the rest handed to a task
        (Python 3.12's eager task factory, by hand). Cancellation reaches the suspended part.
        Only for ops the handler declared safe: code that needs a current task (``asyncio.
        timeout``) cannot run in the eager part.
        """
        coro = self._serve(rid, args)
        if args.OP not in self.server.eager_ops:
            self.tasks[rid] = self.server.track(asyncio.create_task(coro, name=f"link-req-{rid}"))
            return
        try:
            pending = coro.send(None)
        except StopIteration:
            return
        except BaseException:
            coro.close()
            raise
        self.tasks[rid] = self.server.track(
            asyncio.create_task(_resume(coro, pending), name=f"link-req-{rid}")
        )

    async def _serve(self, rid: int, args: RequestArgs) -> None:
        conn = self.conn
        assert conn is not None and self.peer is not None
        try:
            try:
                result = await self.server.handler(self.peer, args)
            except asyncio.CancelledError:
                self._answer_error(rid, CANCELLED, "cancelled")
                return
            except GatewayError as exc:
                self._answer_error(rid, exc.code, exc.message)
                return
            except Exception as exc:
                log.exception("link: %s from %s failed", args.OP, self._who())
                self._answer_error(rid, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
                return
            try:
                conn.send_response(rid, result)
            except LocalProtocolError as exc:  # FRAME_TOO_LARGE (or a value msgpack refuses)
                self._answer_error(rid, exc.code, f"the result of {args.OP} cannot be sent: {exc.message}")
            except LinkClosed:
                pass
        finally:
            self.tasks.pop(rid, None)
            self.kick()

    def _answer_error(self, rid: int, code: str, message: str) -> None:
        conn = self.conn
        if conn is None or conn.state is not State.OPEN or rid not in conn.open_request_ids():
            return
        with contextlib.suppress(LinkClosed, LocalProtocolError):
            conn.send_error(rid, code, message[:4096])

    def on_lost(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.server.watches.drop_link(self)
        self.server.links.discard(self)
        if self.peer is not None:
            event = self.close_event
            log.info(
                "link: peer %s disconnected (%s)",
                self._who(), f"{event.code}: {event.reason}" if event else "lost",
            )  # fmt: skip


class LinkServer:
    """The federation listener (see the module docstring).

    Args:
        handler: serves every op except ``watch``.
        identity: this gateway's private key; ``server_id`` the id it announces.
        peers: the authorized-peers directory; ``peers_file`` where :meth:`reload_peers` reads it.
        history: the store's change history (watches are refused without one).
        tls: a server SSL context (see :func:`server_tls_context`); ``cert_hash`` the sha256 of
            our certificate (DER), which clients bind the handshake to.
        eager_ops: ops whose handler may start outside a task (it must not need one).
    """

    def __init__(
        self,
        *,
        handler: RequestHandler,
        identity: Ed25519PrivateKey,
        peers: PeerDirectory,
        metrics: Metrics | None = None,
        server_id: str = "iii-gateway",
        host: str = "127.0.0.1",
        port: int = 0,
        history: ChangeHistory | None = None,
        peers_file: str | None = None,
        tls: ssl.SSLContext | None = None,
        cert_hash: bytes | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        heartbeat_interval: float = 20.0,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 5.0,
        close_timeout: float = 5.0,
        progress_interval: float = 5.0,
        max_watch_buffer: int = 10_000,
        max_outbound_bytes: int = 16 * 1024 * 1024,
        rate_limiter: AuthRateLimiter | None = None,
        eager_ops: frozenset[str] = frozenset(),
    ) -> None:
        self.handler = handler
        self.eager_ops = eager_ops
        self.identity = identity
        self.peers = peers
        self.metrics = metrics
        self.server_id = server_id
        self.host = host
        self.port = port
        self.history = history
        self.peers_file = peers_file
        self.tls = tls
        self.cert_hash = cert_hash
        self.max_frame_size = max_frame_size
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.replay_cache = ReplayCache()
        self.rate_limiter = rate_limiter or AuthRateLimiter()
        self.links: set[_ServerLink] = set()
        self.watches = WatchHub(
            history,
            progress_interval=progress_interval,
            max_buffer=max_watch_buffer,
            max_outbound_bytes=max_outbound_bytes,
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.auth_failures_total = 0
        self.forbidden_total = 0

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free port; :attr:`port` is the bound one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerLink(self), self.host, self.port, ssl=self.tls, reuse_address=True
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self.watches.start()
        log.info(
            "link listening on %s:%d (%s, %d authorized peers)",
            self.host, self.port, "tls" if self.tls else "tcp", len(self.peers),
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop accepting, let requests in flight answer, close every link with GOING_AWAY."""
        if self._server is not None:
            self._server.close()
            self._server = None
        links = list(self.links)
        for link in links:
            if link.transport is not None:
                link.transport.pause_reading()
        pending = [t for link in links for t in link.tasks.values()]
        if pending:
            await asyncio.wait(pending, timeout=_DRAIN_ON_STOP)
        await self.watches.stop()
        for link in links:
            link.close(GOING_AWAY, "the upstream is shutting down")
            if link.transport is not None and not link.transport.is_closing():
                link.transport.resume_reading()  # to read the peer's answering Close
        await asyncio.gather(*(link.wait_closed(self.close_timeout) for link in links))
        leftovers = list(self._tasks)  # also those of links that closed earlier, still ending
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    def track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Own a request task until it ends (stop() cancels and awaits whatever is left)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- admission --------------------------------------------------------------------------

    def auth_failed(self, link: _ServerLink, reason: AuthFailure, message: str) -> None:
        self.auth_failures_total += 1
        if self.metrics is not None:
            self.metrics.auth_failures.labels(reason.value).inc()
        if reason is not AuthFailure.RATE_LIMITED:
            self.rate_limiter.record_failure(link.address)
        log.warning("link: handshake from %s refused: %s (%s)", link.address, reason.value, message)

    def metrics_forbidden(self, op: str) -> None:
        self.forbidden_total += 1
        if self.metrics is not None:
            self.metrics.forbidden.labels(op).inc()

    # -- peers ------------------------------------------------------------------------------

    def reload_peers(self, peers: PeerDirectory | None = None) -> PeerDirectory:
        """Swap in a new directory (read from ``peers_file`` when not given) and apply it.

        Raises :class:`ConfigError` (and keeps the old directory) when the file is invalid.
        """
        if peers is None:
            if self.peers_file is None:
                raise ConfigError("no authorized-peers file to reload", key="link.authorized_peers")
            peers = load_authorized_peers(self.peers_file)
        self.peers = peers
        revoked = changed = 0
        for link in list(self.links):
            if link.peer is None or link.peer_key is None:
                continue
            entry = peers.lookup(link.peer_key)
            if entry is None:
                revoked += 1
                log.warning("link: key of peer %s was removed; closing its link", link.peer.name)
                link.close(UNAUTHORIZED, "revoked")
            elif entry.permissions != link.peer.permissions:
                changed += 1
                link.update_permissions(entry.permissions)
        log.info(
            "link: authorized peers reloaded: %d peers, %d links closed, %d links with new permissions",
            len(peers), revoked, changed,
        )  # fmt: skip
        return peers

    def statistics(self) -> dict[str, float]:
        """Live gauges (``iii_gateway_<name>``)."""
        opened = sum(1 for link in self.links if link.conn is not None and link.conn.state is State.OPEN)
        stats: dict[str, float] = {
            "link_peers_connected": opened,
            "link_connections": len(self.links),
            "link_requests_in_flight": sum(len(link.tasks) for link in self.links),
            "link_authorized_peers": len(self.peers),
        }
        stats.update(self.watches.statistics())
        return stats
