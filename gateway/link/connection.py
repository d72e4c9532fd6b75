"""The sans-IO federation link: bytes in, events out; method calls in, bytes out.

:class:`LinkConnection` owns everything about one link except the socket: framing, the mutual
Ed25519 handshake, scope authorization of every request, the request-id table, watch streams,
heartbeats and the closing handshake. It never does I/O, never sleeps and never reads the real
clock unless given it, so every behaviour is unit-tested and fuzzed without sockets (the h11
model). A driver (the asyncio transport) runs this loop::

    conn.start(); send(conn.data_to_send())
    while True:
        event = conn.next_event()          # RemoteProtocolError: flush, close, stop
        if event is NEED_DATA:
            conn.receive_data(await read())   # b"" at EOF
        else:
            handle(event)                  # may call conn.send_* methods
        send(conn.data_to_send())
    # and, on a timer: delay = conn.tick(); send(conn.data_to_send()); stop if conn.state is CLOSED

States (:class:`State`) and their legal transitions are the data table :data:`TRANSITIONS`;
which frames each side accepts in each phase is :data:`ACCEPTS`. Rules:

1. Only frames legal for the role and phase are accepted; anything else (a ``Request`` before
   authentication: ``NOT_AUTHENTICATED``; any other misplaced frame: ``UNEXPECTED_FRAME``),
   any malformed frame, an oversized one, a response to an unknown id, an event for an unknown
   watch: ``next_event`` raises :class:`RemoteProtocolError` with that ``code``, the state
   becomes ERROR, and a ``Close`` with the code is queued for the driver to flush (best effort).
2. Refused handshakes are not exceptions: ``HandshakeFailed`` then ``ConnectionClosed`` events,
   state CLOSED, the refusal (``Close`` with code ``UNAUTHORIZED``/``VERSION_MISMATCH`` and the
   reason label) already queued. ``handshake_failure`` holds the reason, also after a protocol
   error during the handshake (``malformed``), for the auth-failure metric.
3. The server answers every request exactly once. Requests with bad ``args``, unknown ops,
   scopes the peer may not touch (``FORBIDDEN``) or over ``max_open_requests`` are answered by
   the connection itself (``RequestRejected`` tells the driver, for metrics); the driver only
   ever sees typed, authorized requests.
4. A cancelled request's late answer and its late watch events are swallowed on the client,
   so after ``cancel(id)`` nothing more about ``id`` surfaces.
5. Local misuse (sending before OPEN, answering an id that is not open) raises
   :class:`LocalProtocolError` and changes nothing; sending once the link is closing or closed
   raises :class:`LinkClosed`. A frame over the peer's limit raises ``LocalProtocolError``
   with code ``FRAME_TOO_LARGE`` and sends nothing, so a server can answer with an error.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import AuthError, GatewayError, LinkClosed, LocalProtocolError, RemoteProtocolError
from gateway.link.acl import Permissions
from gateway.link.auth import AuthFailure, ClientHandshake, ServerHandshake
from gateway.link.events import (
    NEED_DATA,
    BacklogEndReceived,
    CancelReceived,
    ConnectionClosed,
    ErrorReceived,
    EventReceived,
    HandshakeComplete,
    HandshakeFailed,
    LinkEvent,
    NeedData,
    PingReceived,
    PongReceived,
    ProgressReceived,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
)
from gateway.link.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    PRE_AUTH_MAX_FRAME_SIZE,
    FrameDecoder,
    SharedFrame,
    encode_frame,
    new_packer,
)
from gateway.link.messages import (
    Auth,
    AuthOk,
    BacklogEnd,
    Cancel,
    Challenge,
    Close,
    ErrorResponse,
    Hello,
    Message,
    Ping,
    Pong,
    Progress,
    Request,
    Response,
    WatchEvent,
    decode_message,
)
from gateway.link.requests import OPS, RequestArgs
from gateway.link.states import (
    ACCEPTS,
    CONNECTION_LOST,
    IDLE_TIMEOUT,
    NORMAL,
    NOT_AUTHENTICATED,
    POST_AUTH,
    TRANSITIONS,
    UNAUTHORIZED,
    UNEXPECTED_FRAME,
    VERSION_MISMATCH,
    Phase,
    Role,
    State,
)
from gateway.link.tables import ClientRequests, ServerRequests
from gateway.link.wire import MAX_U64, check_json

__all__ = ["LinkConnection", "Role", "State"]

_MAX_CLOSE_REASON: Final = 512
_MAX_OUTSTANDING_PINGS: Final = 4


class LinkConnection:
    """One end of a link. The role follows from the handshake object given.

    Args:
        handshake: a :class:`ClientHandshake` (we dial) or :class:`ServerHandshake` (we accept).
        max_frame_size: the largest frame we accept after the handshake (advertised to the peer;
            we send at most what the peer advertised). Before it: 4 KiB.
        heartbeat_interval: ping when nothing was received for this long (seconds).
        idle_timeout: close with ``IDLE_TIMEOUT`` when nothing was received for this long.
        handshake_timeout: give up a handshake (``timeout``) not done after this long.
        close_timeout: stop waiting for the peer's Close after this long.
        max_open_requests: server: requests open at once before ``TOO_MANY_REQUESTS``.
        clock: monotonic seconds (``time.monotonic``), for timers and RTT.
    """

    def __init__(
        self,
        handshake: ClientHandshake | ServerHandshake,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        heartbeat_interval: float = 20.0,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 5.0,
        close_timeout: float = 5.0,
        max_open_requests: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_frame_size < PRE_AUTH_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be at least {PRE_AUTH_MAX_FRAME_SIZE}")
        self._client_hs = handshake if isinstance(handshake, ClientHandshake) else None
        self._server_hs = handshake if isinstance(handshake, ServerHandshake) else None
        self.role = Role.CLIENT if self._client_hs is not None else Role.SERVER
        self.max_frame_size = max_frame_size
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.max_open_requests = max_open_requests
        self._clock = clock

        self._phase = Phase.START
        self._state = State.CONNECTING  # self._phase.state, kept here: read on every call
        self._accepts: frozenset[type] = frozenset()
        # Frame types with a fast path in the current phase: the hot frames of an open link
        # skip the message dataclass and the dispatch; they fall back to the full decode
        # (which raises the precise error) on anything unexpected.
        self._fast: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._decoder = FrameDecoder(PRE_AUTH_MAX_FRAME_SIZE)
        self._send_limit = PRE_AUTH_MAX_FRAME_SIZE
        self._peer_limit = DEFAULT_MAX_FRAME_SIZE  # what the peer advertised in the handshake
        self._out: list[bytes] = []
        self._packer = new_packer()
        self._events: deque[LinkEvent] = deque()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._close_sent: Close | None = None

        self.peer: HandshakeComplete | None = None
        self.handshake_failure: AuthFailure | None = None
        self.permissions: Permissions | None = None  # server: what the peer may do

        self._pending = ClientRequests()
        self._open = ServerRequests(max_open_requests)

        now = clock()
        self._started_at = now
        self._last_rx = now
        self._last_ping = now
        self._closing_at = now
        self._ping_nonce = 0
        self._pings: dict[int, float] = {}  # nonce -> sent at

    # -- introspection ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> RemoteProtocolError | None:
        """The protocol error that moved us to ERROR, if any."""
        return self._error

    @property
    def send_limit(self) -> int:
        """The largest frame we may send now (the peer's advertised limit once OPEN)."""
        return self._send_limit

    def pending_request_ids(self) -> list[int]:
        """Client: our requests (and watches) not answered yet, cancelled ones included."""
        return self._pending.ids()

    def open_request_ids(self) -> list[int]:
        """Server: requests (and watches) we received and have not answered yet."""
        return self._open.ids()

    def statistics(self) -> dict[str, float]:
        return {
            "pending_requests": len(self._pending),
            "open_requests": len(self._open),
            "buffered_bytes": self._decoder.buffered,
            "outbound_bytes": sum(len(b) for b in self._out),
        }

    def __repr__(self) -> str:
        peer = self.peer.peer_id if self.peer else "?"
        return f"<LinkConnection {self.role.value} {self.state.value} peer={peer!r}>"

    # -- bytes in, events out ---------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake: the client queues HELLO, the server starts its timer."""
        if self._phase is not Phase.START:
            raise LocalProtocolError(f"start() in state {self.state.value}")
        self._started_at = self._last_rx = self._clock()
        if self._client_hs is not None:
            self._set_phase(Phase.AWAIT_CHALLENGE)
            self._queue(self._client_hs.hello(self.max_frame_size))
        else:
            self._set_phase(Phase.AWAIT_HELLO)

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` means the peer closed its side (EOF)."""
        if self._phase in (Phase.CLOSED, Phase.ERROR):
            return
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        self._last_rx = self._clock()
        if data:
            self._decoder.feed(data)
        else:
            self._eof = True

    def next_event(self) -> LinkEvent | NeedData:
        """The next event, or :data:`NEED_DATA` when the buffered bytes hold no more.

        Raises :class:`RemoteProtocolError` (state ERROR) when the peer broke the protocol.
        """
        if self._events:
            return self._events.popleft()
        if self._phase is Phase.ERROR:
            assert self._error is not None
            raise self._error
        if self._phase is Phase.START:
            raise LocalProtocolError("call start() before next_event()")
        while self._phase is not Phase.CLOSED:
            try:
                frame = self._decoder.next_frame()
                if frame is None:
                    if self._eof:
                        self._on_eof()
                    break
                tag = frame.get("type")
                fast = self._fast.get(tag) if type(tag) is str else None
                if fast is not None:
                    fast(frame)
                else:
                    self._handle(decode_message(frame), frame)
            except RemoteProtocolError as exc:
                self._fail(exc)
                raise
            if self._events:
                return self._events.popleft()
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (b"" if nothing)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # -- frame handling ---------------------------------------------------------------------

    def _handle(self, msg: Message, frame: dict[str, Any]) -> None:
        if type(msg) not in self._accepts:
            self._unexpected(msg)
        match msg:
            case Request():
                self._on_request(msg)
            case Response() | ErrorResponse():
                self._on_answer(msg)
            case WatchEvent():
                if self._pending.watch_live(msg.sub_id):
                    self._events.append(EventReceived(msg))
            case BacklogEnd():
                if self._pending.watch_live(msg.sub_id):
                    self._events.append(BacklogEndReceived(msg.sub_id, msg.revision, msg.epoch))
            case Progress():
                if self._pending.watch_live(msg.sub_id):
                    self._events.append(ProgressReceived(msg.sub_id, msg.revision))
            case Cancel():
                if self._phase is Phase.OPEN and msg.id in self._open:
                    self._events.append(CancelReceived(msg.id))
            case Ping():
                if self._phase is Phase.OPEN:
                    self._queue(Pong(msg.nonce))
                self._events.append(PingReceived(msg.nonce))
            case Pong():
                sent = self._pings.pop(msg.nonce, None)
                rtt = None if sent is None else self._clock() - sent
                self._events.append(PongReceived(msg.nonce, rtt))
            case Close():
                self._on_close(msg)
            case Hello():
                self._on_hello(msg, frame)
            case Challenge():
                self._on_challenge(msg, frame)
            case Auth():
                self._on_auth(msg)
            case AuthOk():
                self._on_auth_ok(msg)

    # Fast paths (OPEN only): the same checks as the message codecs and ``_handle``, inline.

    def _fast_request(self, frame: dict[str, Any]) -> None:
        rid, op, args = frame.get("id"), frame.get("op"), frame.get("args", {})
        if (
            type(rid) is not int
            or not 0 <= rid <= MAX_U64
            or type(op) is not str
            or len(op) > 64
            or type(args) is not dict
        ):
            self._handle(decode_message(frame), frame)  # raises the precise error
            return
        self._on_request(Request(rid, op, args))

    def _fast_response(self, frame: dict[str, Any]) -> None:
        rid = frame.get("id")
        if type(rid) is not int or not 0 <= rid <= MAX_U64 or "result" not in frame:
            self._handle(decode_message(frame), frame)  # raises the precise error
            return
        result = frame["result"]
        check_json(result, "res.result")
        op = self._pending.answered(rid)
        if op is not None:
            self._events.append(ResponseReceived(rid, op, result))

    def _fast_event(self, frame: dict[str, Any]) -> None:
        msg = WatchEvent.from_wire(frame)
        if self._pending.watch_live(msg.sub_id):
            self._events.append(EventReceived(msg))

    def _unexpected(self, msg: Message) -> None:
        if self.state is State.HANDSHAKE and type(msg) in POST_AUTH:
            raise RemoteProtocolError(f"{msg.TYPE!r} frame before authentication", code=NOT_AUTHENTICATED)
        raise RemoteProtocolError(
            f"{msg.TYPE!r} frame not allowed for a {self.role.value} in state {self.state.value}",
            code=UNEXPECTED_FRAME,
        )

    def _on_hello(self, msg: Hello, frame: dict[str, Any]) -> None:
        assert self._server_hs is not None
        try:
            challenge = self._server_hs.on_hello(msg, frame, self.max_frame_size)
        except AuthError as exc:
            self._auth_failed(AuthFailure(exc.reason), exc.message, remote=False)
            return
        self._peer_limit = msg.max_frame_size or DEFAULT_MAX_FRAME_SIZE
        self._queue(challenge)
        self._set_phase(Phase.AWAIT_AUTH)

    def _on_challenge(self, msg: Challenge, frame: dict[str, Any]) -> None:
        assert self._client_hs is not None
        try:
            auth = self._client_hs.on_challenge(msg, frame)
        except AuthError as exc:
            self._auth_failed(AuthFailure(exc.reason), exc.message, remote=False)
            return
        self._peer_limit = msg.max_frame_size or DEFAULT_MAX_FRAME_SIZE
        self._queue(auth)
        self._set_phase(Phase.AWAIT_AUTH_OK)

    def _on_auth(self, msg: Auth) -> None:
        hs = self._server_hs
        assert hs is not None
        try:
            ok = hs.on_auth(msg)
        except AuthError as exc:
            self._auth_failed(AuthFailure(exc.reason), exc.message, remote=False)
            return
        assert hs.hello is not None and hs.challenge is not None and hs.peer is not None
        self._queue(ok)
        self.permissions = hs.peer.permissions
        self._opened(
            HandshakeComplete(
                peer_id=hs.hello.client_id,
                peer_key=hs.hello.client_pub,
                permissions=hs.peer.permissions,
                session=hs.challenge.session,
                version=hs.challenge.version,
                peer_name=hs.peer.name,
            )
        )

    def _on_auth_ok(self, msg: AuthOk) -> None:
        hs = self._client_hs
        assert hs is not None and hs.challenge is not None
        try:
            hs.on_auth_ok(msg)
        except AuthError as exc:
            self._auth_failed(AuthFailure(exc.reason), exc.message, remote=False)
            return
        perms = None if msg.permissions is None else Permissions.from_wire(msg.permissions)
        ch = hs.challenge
        self._opened(HandshakeComplete(ch.server_id, ch.server_pub, perms, ch.session, ch.version))

    def _opened(self, event: HandshakeComplete) -> None:
        self._set_phase(Phase.OPEN)
        self._decoder.max_frame_size = self.max_frame_size
        self._send_limit = self._peer_limit
        self._last_ping = self._clock()
        self.peer = event
        self._events.append(event)

    def _on_request(self, msg: Request) -> None:
        if self._phase is not Phase.OPEN:
            return  # we sent Close: we may not answer any more, the client fails it on our Close
        assert self.permissions is not None
        admitted = self._open.admit(msg, self.permissions)
        if isinstance(admitted, GatewayError):
            self._queue(ErrorResponse(msg.id, admitted.code, admitted.message))
            op = msg.op if msg.op in OPS else "unknown"  # the event's op is a metric label: bounded
            self._events.append(RequestRejected(msg.id, op, admitted.code, admitted.message))
        else:
            self._events.append(RequestReceived(msg.id, admitted))

    def _on_answer(self, msg: Response | ErrorResponse) -> None:
        op = self._pending.answered(msg.id)
        if op is None:
            return
        if isinstance(msg, Response):
            self._events.append(ResponseReceived(msg.id, op, msg.result))
        else:
            self._events.append(ErrorReceived(msg.id, op, msg.code, msg.message))

    def _on_close(self, msg: Close) -> None:
        if self.state is State.HANDSHAKE:
            if msg.code in (UNAUTHORIZED, VERSION_MISMATCH):
                try:
                    reason = AuthFailure(msg.reason)
                except ValueError:
                    reason = AuthFailure.VERSION if msg.code == VERSION_MISMATCH else AuthFailure.DENIED
                self.handshake_failure = reason
                self._events.append(
                    HandshakeFailed(reason, f"refused by the peer: {msg.reason}", remote=True)
                )
            self._closed(msg.code, msg.reason, remote=True)
        elif self._phase is Phase.OPEN:
            self._queue(Close(msg.code, msg.reason))  # the closing handshake: echo it
            self._closed(msg.code, msg.reason, remote=True)
        else:  # CLOSING: the peer's answer to our Close
            ours = self._close_sent
            assert ours is not None
            self._closed(ours.code, ours.reason, remote=False)

    def _on_eof(self) -> None:
        if self._phase is Phase.CLOSING and self._close_sent is not None:
            self._closed(self._close_sent.code, self._close_sent.reason, remote=False)
            return
        reason = "the peer ended the connection without a Close"
        if self._decoder.buffered:
            reason += f" ({self._decoder.buffered} bytes of an incomplete frame)"
        self._closed(CONNECTION_LOST, reason, remote=True)

    # -- state changes ----------------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        old, new = self._phase.state, phase.state
        if old is not new and new not in TRANSITIONS[old]:
            raise LocalProtocolError(f"illegal transition {old.value} -> {new.value}")
        self._phase = phase
        self._state = new
        self._accepts = ACCEPTS.get((self.role, phase), frozenset())  # looked up once per phase
        if phase is not Phase.OPEN:
            self._fast = {}
        elif self.role is Role.SERVER:
            self._fast = {Request.TYPE: self._fast_request}
        else:
            self._fast = {Response.TYPE: self._fast_response, WatchEvent.TYPE: self._fast_event}

    def _closed(self, code: str, reason: str, *, remote: bool) -> None:
        self._set_phase(Phase.CLOSED)
        self._events.append(ConnectionClosed(code, reason, remote))

    def _auth_failed(self, reason: AuthFailure, message: str, *, remote: bool) -> None:
        self.handshake_failure = reason
        code = VERSION_MISMATCH if reason is AuthFailure.VERSION else UNAUTHORIZED
        if not remote:
            self._queue(Close(code, reason.value))
        self._events.append(HandshakeFailed(reason, message, remote))
        self._closed(code, reason.value, remote=remote)

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self._phase in (Phase.ERROR, Phase.CLOSED):
            return
        if self.state is State.HANDSHAKE:
            self.handshake_failure = AuthFailure.MALFORMED
        if self._phase is not Phase.CLOSING:
            self._out.append(encode_frame(Close(exc.code, exc.message[:_MAX_CLOSE_REASON]).to_wire()))
        self._error = exc
        self._set_phase(Phase.ERROR)

    def _queue(self, msg: Message) -> None:
        self._out.append(encode_frame(msg.to_wire(), self._send_limit, self._packer))

    # -- method calls in, bytes out ---------------------------------------------------------

    def _require_open(self, what: str, role: Role) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"a {self.role.value} cannot {what}")
        if self._phase is Phase.OPEN:
            return
        if self._phase in (Phase.CLOSING, Phase.CLOSED, Phase.ERROR):
            raise LinkClosed(f"cannot {what}: the link is {self.state.value}")
        raise LocalProtocolError(f"cannot {what} before the handshake completes")

    def send_request(self, args: RequestArgs) -> int:
        """Client: queue a request; returns its id (for a watch, also the subscription id)."""
        self._require_open("send a request", Role.CLIENT)
        body = {"type": Request.TYPE, "id": self._pending.next_id, "op": args.OP, "args": args.to_wire()}
        data = encode_frame(body, self._send_limit, self._packer)  # FRAME_TOO_LARGE: nothing recorded
        self._out.append(data)
        return self._pending.add(args.OP)

    def cancel(self, request_id: int) -> bool:
        """Client: abandon a pending request or end a watch. Nothing about it surfaces after.

        Returns False when ``request_id`` is not pending (already answered, or cancelled).
        """
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client cancels requests")
        if not self._pending.can_cancel(request_id) or self._phase not in (Phase.OPEN, Phase.CLOSING):
            return False
        if self._phase is Phase.OPEN:  # CLOSING: we may not send, but still swallow its answer
            self._queue(Cancel(request_id))
        self._pending.cancel(request_id)
        return True

    def _answer(self, request_id: int, body: dict[str, Any], what: str) -> None:
        self._require_open(what, Role.SERVER)
        self._open.check_open(request_id, what)
        data = encode_frame(body, self._send_limit, self._packer)  # may raise FRAME_TOO_LARGE: id stays open
        self._open.finish(request_id)
        self._out.append(data)

    def send_response(self, request_id: int, result: Any) -> None:
        """Server: answer request ``request_id`` (for a watch: end its stream normally)."""
        self._answer(
            request_id, {"type": Response.TYPE, "id": request_id, "result": result}, "send a response"
        )

    def send_error(self, request_id: int, code: str, message: str) -> None:
        """Server: fail request ``request_id`` (for a watch: end its stream with this error)."""
        body = {"type": ErrorResponse.TYPE, "id": request_id, "code": code, "message": message}
        self._answer(request_id, body, "send an error")

    def _stream(self, sub_id: int, msg: WatchEvent | BacklogEnd | Progress) -> None:
        self._require_open("send on a watch", Role.SERVER)
        self._open.check_watch(sub_id)
        self._queue(msg)

    def send_event(self, event: WatchEvent) -> None:
        """Server: stream one change on the open watch ``event.sub_id``."""
        self._stream(event.sub_id, event)

    def send_shared_event(self, sub_id: int, frame: SharedFrame) -> None:
        """Server: stream one change on the open watch ``sub_id``, from a frame encoded once
        for every watch the change goes to (:meth:`WatchEvent.shared_frame`, fan-out)."""
        self._require_open("send on a watch", Role.SERVER)
        self._open.check_watch(sub_id)
        self._out.append(frame.frame(sub_id, self._send_limit))

    def send_backlog_end(self, sub_id: int, revision: int, epoch: str) -> None:
        self._stream(sub_id, BacklogEnd(sub_id, revision, epoch))

    def send_progress(self, sub_id: int, revision: int) -> None:
        self._stream(sub_id, Progress(sub_id, revision))

    def ping(self) -> int:
        """Queue a Ping now (``tick`` also does it when the link is quiet); returns its nonce."""
        if self._phase is not Phase.OPEN:
            raise LinkClosed(f"cannot ping: the link is {self.state.value}")
        self._ping_nonce += 1
        now = self._clock()
        self._pings[self._ping_nonce] = now
        while len(self._pings) > _MAX_OUTSTANDING_PINGS:
            del self._pings[next(iter(self._pings))]
        self._last_ping = now
        self._queue(Ping(self._ping_nonce))
        return self._ping_nonce

    def close(self, code: str = NORMAL, reason: str = "") -> None:
        """Start closing: queue Close and wait for the peer's (OPEN), or just stop (handshake)."""
        if self._phase in (Phase.CLOSING, Phase.CLOSED, Phase.ERROR):
            return
        if self._phase is Phase.START:
            self._set_phase(Phase.CLOSED)
            return
        msg = Close(code, reason[:_MAX_CLOSE_REASON])
        self._queue(msg)
        if self._phase is Phase.OPEN:
            self._close_sent = msg
            self._closing_at = self._clock()
            self._set_phase(Phase.CLOSING)
        else:
            self._closed(code, reason, remote=False)

    def refuse(self, reason: AuthFailure, message: str = "") -> None:
        """Server: refuse the handshake now (e.g. ``rate_limited`` for this address)."""
        if self.role is not Role.SERVER or self._phase not in (
            Phase.START,
            Phase.AWAIT_HELLO,
            Phase.AWAIT_AUTH,
        ):
            raise LocalProtocolError(f"refuse() in state {self.state.value}")
        self._auth_failed(reason, message or reason.value, remote=False)

    def tick(self) -> float | None:
        """Run the timers: handshake and close deadlines, heartbeats, idle timeout.

        May queue a Ping or a Close (flush ``data_to_send()``) and may close the link (state
        CLOSED, events queued). Returns the seconds until the next deadline, None when closed.
        """
        phase = self._phase
        if phase in (Phase.START, Phase.CLOSED, Phase.ERROR):
            return None
        now = self._clock()
        if phase.state is State.HANDSHAKE:
            deadline = self._started_at + self.handshake_timeout
            if now >= deadline:
                self._auth_failed(AuthFailure.TIMEOUT, "the handshake did not finish in time", remote=False)
                return None
            return deadline - now
        if phase is Phase.CLOSING:
            deadline = self._closing_at + self.close_timeout
            if now >= deadline:
                assert self._close_sent is not None
                self._closed(self._close_sent.code, self._close_sent.reason, remote=False)
                return None
            return deadline - now
        idle_deadline = self._last_rx + self.idle_timeout
        if now >= idle_deadline:
            reason = f"nothing received for {self.idle_timeout:g} s"
            self._queue(Close(IDLE_TIMEOUT, reason))
            self._closed(IDLE_TIMEOUT, reason, remote=False)
            return None
        ping_due = max(self._last_rx, self._last_ping) + self.heartbeat_interval
        if now >= ping_due:
            self.ping()
            ping_due = now + self.heartbeat_interval
        return min(ping_due, idle_deadline) - now
