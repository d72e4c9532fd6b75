"""LinkConnection: whole conversations between two sans-IO ends, and every way to break one."""

from __future__ import annotations

import msgpack
import pytest

from gateway.errors import ForbiddenError, HistoryGone, LinkClosed, LocalProtocolError, RemoteProtocolError
from gateway.link import (
    CANCELLED,
    NEED_DATA,
    PRE_AUTH_MAX_FRAME_SIZE,
    AuthFailure,
    BacklogEndReceived,
    CancelReceived,
    ConnectionClosed,
    DeleteArgs,
    ErrorReceived,
    EventReceived,
    FrameDecoder,
    GetArgs,
    HandshakeComplete,
    HandshakeFailed,
    InfoArgs,
    LinkConnection,
    ListGroupsArgs,
    Permissions,
    PingReceived,
    PongReceived,
    ProgressReceived,
    ReplayCache,
    RequestArgs,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    Role,
    SetArgs,
    State,
    UpdateArgs,
    WatchArgs,
    WatchEvent,
    encode_frame,
    format_public_key,
    public_key_bytes,
)
from gateway.link.states import ACCEPTS, TRANSITIONS, Phase
from tests.helpers.link_pair import LinkPair, drain, fixed_key


def open_pair(**kwargs: object) -> LinkPair:
    pair = LinkPair(**kwargs)  # type: ignore[arg-type]
    pair.handshake()
    return pair


def state(conn: LinkConnection) -> State:
    """The state, read through a call so mypy does not narrow it across actions."""
    return conn.state


def frame(**body: object) -> bytes:
    return encode_frame(body)


# -- tables ---------------------------------------------------------------------------------


def test_transition_table_is_closed_and_terminal_states_are_final() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.CLOSED] == frozenset()
    assert TRANSITIONS[State.ERROR] == frozenset()
    for targets in TRANSITIONS.values():
        assert targets <= set(State)
    # every non-terminal state can fail or close
    for state in (State.CONNECTING, State.HANDSHAKE, State.OPEN, State.CLOSING):
        assert {State.ERROR, State.CLOSED} <= TRANSITIONS[state]


def test_accept_table_covers_every_live_phase_of_both_roles() -> None:
    live = [p for p in Phase if p.state in (State.HANDSHAKE, State.OPEN, State.CLOSING)]
    for phase in live:
        roles = {role for role, ph in ACCEPTS if ph is phase}
        assert roles, phase
    # the client never accepts a request, the server never accepts a response
    for (role, _), kinds in ACCEPTS.items():
        names = {k.__name__ for k in kinds}
        if role is Role.CLIENT:
            assert "Request" not in names
        else:
            assert "Response" not in names


# -- the handshake ----------------------------------------------------------------------------


def test_handshake_authenticates_both_sides_and_shares_a_session() -> None:
    pair = LinkPair(permissions=Permissions(read=("*",), write=("orders:*",), watch=("orders:*",)))
    client_done, server_done = pair.handshake()
    assert client_done.peer_id == "central"
    assert client_done.peer_key == public_key_bytes(pair.server_key)
    assert server_done.peer_id == "edge-1"
    assert server_done.peer_name == "edge-1"
    assert server_done.peer_key_text == format_public_key(pair.client_key)
    assert client_done.session == server_done.session and len(client_done.session) == 16
    assert client_done.version == server_done.version == 1
    assert server_done.permissions == pair.permissions
    assert client_done.permissions == pair.permissions  # told to the client
    assert pair.client.peer is client_done and pair.server.peer is server_done


def test_the_client_cannot_send_before_open_and_the_server_cannot_send_requests() -> None:
    pair = LinkPair()
    with pytest.raises(LocalProtocolError):
        pair.client.send_request(GetArgs("s", "k"))
    pair.start()
    with pytest.raises(LocalProtocolError):
        pair.client.send_request(GetArgs("s", "k"))
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.server.send_request(GetArgs("s", "k"))
    with pytest.raises(LocalProtocolError):
        pair.client.send_response(1, None)


def assert_refused(pair: LinkPair, reason: AuthFailure, code: str = "UNAUTHORIZED") -> None:
    """The refusing side and the refused side both report ``reason`` and end CLOSED."""
    client_events, server_events = pair.pump()
    assert pair.client.state is State.CLOSED
    assert pair.server.state is State.CLOSED
    assert pair.client.handshake_failure is reason
    assert pair.server.handshake_failure is reason
    for events in (client_events, server_events):
        failed, closed = events
        assert isinstance(failed, HandshakeFailed) and failed.reason is reason
        assert isinstance(closed, ConnectionClosed) and closed.code == code
        assert closed.reason == reason.value


def test_unknown_client_key_is_refused_after_the_signature() -> None:
    pair = LinkPair(authorize_client=False)
    pair.start()
    pair.to_server()  # HELLO: not refused yet, so key authorization is not disclosed to non-holders
    assert pair.server.state is State.HANDSHAKE
    pair.to_client()
    assert_refused(pair, AuthFailure.UNKNOWN_KEY)


def test_bad_client_signature_is_refused() -> None:
    pair = LinkPair()
    pair.start()
    pair.to_server()
    pair.to_client()

    def flip_last_signature_byte(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    failed, closed = pair.to_server(tamper=flip_last_signature_byte)
    assert isinstance(failed, HandshakeFailed) and failed.reason is AuthFailure.BAD_SIGNATURE
    assert not failed.remote and isinstance(closed, ConnectionClosed)
    assert pair.server.state is State.CLOSED
    [client_failed, _] = pair.to_client()
    assert isinstance(client_failed, HandshakeFailed) and client_failed.remote
    assert pair.client.handshake_failure is AuthFailure.BAD_SIGNATURE


def test_bad_server_signature_is_refused_by_the_client() -> None:
    pair = LinkPair()
    pair.start()
    pair.to_server()
    pair.to_client()
    pair.to_server()  # AUTH ok; server opens and queues AUTH_OK
    body = msgpack.unpackb(pair.server.data_to_send()[4:])
    body["sig"] = bytes(64)
    pair.client.receive_data(encode_frame(body))
    failed, closed = drain(pair.client)
    assert isinstance(failed, HandshakeFailed) and failed.reason is AuthFailure.BAD_SIGNATURE
    assert isinstance(closed, ConnectionClosed) and not closed.remote
    assert pair.client.state is State.CLOSED


def test_wrong_upstream_key_is_refused_before_signing() -> None:
    pair = LinkPair(pinned_server_key=fixed_key("someone else"))
    pair.start()
    pair.to_server()
    pair.to_client()
    sent = pair.client.data_to_send()
    body = msgpack.unpackb(sent[4:])
    assert body == {"type": "close", "code": "UNAUTHORIZED", "reason": "bad_server_key"}  # no AUTH
    assert pair.client.handshake_failure is AuthFailure.BAD_SERVER_KEY
    pair.server.receive_data(sent)
    [failed, closed] = drain(pair.server)
    assert isinstance(failed, HandshakeFailed) and failed.remote
    assert failed.reason is AuthFailure.BAD_SERVER_KEY
    assert isinstance(closed, ConnectionClosed) and closed.remote


def test_replayed_hello_is_refused_on_another_connection() -> None:
    cache = ReplayCache()
    first = LinkPair(replay_cache=cache)
    first.start()
    hello = first.client.data_to_send()
    first.server.receive_data(hello)
    assert drain(first.server) == []
    second = LinkPair(replay_cache=cache)
    second.server.start()
    second.server.receive_data(hello)  # an attacker replays the captured HELLO
    failed, closed = drain(second.server)
    assert isinstance(failed, HandshakeFailed) and failed.reason is AuthFailure.REPLAY
    assert isinstance(closed, ConnectionClosed) and closed.code == "UNAUTHORIZED"


@pytest.mark.parametrize(("skew", "ok"), [(29.9, True), (-29.9, True), (30.5, False), (-31.0, False)])
def test_timestamp_window(skew: float, ok: bool) -> None:
    pair = LinkPair()
    pair.client_wall.advance(skew)
    pair.start()
    if ok:
        pair.pump()
        assert pair.server.state is State.OPEN
    else:
        assert_refused(pair, AuthFailure.EXPIRED)


def test_version_mismatch_closes_with_version_mismatch() -> None:
    pair = LinkPair(client_versions=(2, 3))
    pair.start()
    assert_refused(pair, AuthFailure.VERSION, code="VERSION_MISMATCH")


def test_channel_binding_mismatch_is_refused() -> None:
    pair = LinkPair(
        client_hs_kwargs={"cert_hash": b"\x01" * 32}, server_hs_kwargs={"cert_hash": b"\x02" * 32}
    )
    pair.start()
    assert_refused(pair, AuthFailure.CHANNEL_BINDING)


def test_matching_channel_binding_is_accepted() -> None:
    pair = LinkPair(
        client_hs_kwargs={"cert_hash": b"\x01" * 32}, server_hs_kwargs={"cert_hash": b"\x01" * 32}
    )
    pair.handshake()


def test_handshake_timeout_on_both_sides() -> None:
    pair = LinkPair()
    pair.start()
    assert pair.server.tick() == pytest.approx(5.0)
    pair.clock.advance(5.0)
    assert pair.server.tick() is None
    assert pair.client.tick() is None
    assert pair.server.handshake_failure is AuthFailure.TIMEOUT
    assert pair.server.state is State.CLOSED and pair.client.state is State.CLOSED
    failed, closed = drain(pair.server)
    assert isinstance(failed, HandshakeFailed) and failed.reason is AuthFailure.TIMEOUT
    assert isinstance(closed, ConnectionClosed)


def test_server_refuses_a_rate_limited_address_before_any_hello() -> None:
    pair = LinkPair()
    pair.start()
    pair.server.refuse(AuthFailure.RATE_LIMITED)
    assert pair.server.state is State.CLOSED
    _, server_events = pair.pump()
    assert isinstance(server_events[0], HandshakeFailed)
    assert pair.client.handshake_failure is AuthFailure.RATE_LIMITED
    with pytest.raises(LocalProtocolError):
        pair.server.refuse(AuthFailure.RATE_LIMITED)


def test_oversize_frame_before_auth_is_refused_from_its_header() -> None:
    pair = LinkPair()
    pair.server.start()
    pair.server.receive_data((PRE_AUTH_MAX_FRAME_SIZE + 1).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "FRAME_TOO_LARGE"
    assert pair.server.state is State.ERROR
    assert pair.server.handshake_failure is AuthFailure.MALFORMED
    close = msgpack.unpackb(pair.server.data_to_send()[4:])
    assert close["type"] == "close" and close["code"] == "FRAME_TOO_LARGE"
    with pytest.raises(RemoteProtocolError):  # stays failed
        pair.server.next_event()


def test_garbage_before_the_handshake_is_malformed() -> None:
    pair = LinkPair()
    pair.server.start()
    pair.server.receive_data(b"\x00\x00\x00\x03GET")
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "MALFORMED_FRAME"


def test_request_before_auth_is_not_authenticated() -> None:
    pair = LinkPair()
    pair.server.start()
    pair.server.receive_data(frame(type="req", id=1, op="get", args={"scope": "s", "key": "k"}))
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "NOT_AUTHENTICATED"


def test_a_second_hello_is_unexpected() -> None:
    pair = LinkPair()
    pair.start()
    hello = pair.client.data_to_send()
    pair.server.receive_data(hello + hello)
    with pytest.raises(RemoteProtocolError) as info:
        drain(pair.server)
    assert info.value.code == "UNEXPECTED_FRAME"


# -- after the handshake --------------------------------------------------------------------


def test_pipelined_requests_answered_out_of_order() -> None:
    pair = open_pair()
    ids = [pair.client.send_request(GetArgs("s", f"k{i}")) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert sorted(pair.client.pending_request_ids()) == ids
    received = pair.to_server()
    assert [e.request_id for e in received if isinstance(e, RequestReceived)] == ids
    for rid in reversed(ids):
        pair.server.send_response(rid, {"value": rid, "revision": rid})
    answers = pair.to_client()
    assert [(a.request_id, a.op, a.result["value"]) for a in answers if isinstance(a, ResponseReceived)] == [
        (rid, "get", rid) for rid in reversed(ids)
    ]
    assert pair.client.pending_request_ids() == [] and pair.server.open_request_ids() == []


def test_request_args_arrive_typed() -> None:
    pair = open_pair()
    sent: list[RequestArgs] = [
        SetArgs("s", "k", {"a": [1, 2.5, None, True]}, origin="edge-1", idem="op-1"),
        UpdateArgs("s", "k", ({"type": "increment", "path": "n", "by": 1},)),
        DeleteArgs("s", "k"),
        ListGroupsArgs(),
        InfoArgs(),
    ]
    for args in sent:
        pair.client.send_request(args)
    received = pair.to_server()
    assert [e.args for e in received if isinstance(e, RequestReceived)] == sent
    assert [e.op for e in received if isinstance(e, RequestReceived)] == [
        "set",
        "update",
        "delete",
        "list_groups",
        "info",
    ]


def test_error_responses_map_to_gateway_errors() -> None:
    pair = open_pair()
    rid = pair.client.send_request(GetArgs("s", "k"))
    pair.to_server()
    pair.server.send_error(rid, "SET_ERROR", "disk full")
    [err] = pair.to_client()
    assert isinstance(err, ErrorReceived) and (err.code, err.message, err.op) == (
        "SET_ERROR",
        "disk full",
        "get",
    )
    assert err.to_exception().code == "SET_ERROR"


def test_forbidden_requests_are_answered_by_the_connection() -> None:
    pair = open_pair(permissions=Permissions(read=("orders:*",), write=("orders:eu-*",), watch=("orders:*",)))
    allowed = pair.client.send_request(SetArgs("orders:eu-1", "k", 1))
    denied_write = pair.client.send_request(SetArgs("orders:us-1", "k", 1))
    denied_read = pair.client.send_request(GetArgs("users", "k"))
    denied_watch = pair.client.send_request(WatchArgs(("orders*",)))
    events = pair.to_server()
    assert [e.request_id for e in events if isinstance(e, RequestReceived)] == [allowed]
    rejected = [e for e in events if isinstance(e, RequestRejected)]
    assert [(e.request_id, e.op, e.code) for e in rejected] == [
        (denied_write, "set", "FORBIDDEN"),
        (denied_read, "get", "FORBIDDEN"),
        (denied_watch, "watch", "FORBIDDEN"),
    ]
    errors = pair.to_client()
    assert [e.request_id for e in errors if isinstance(e, ErrorReceived)] == [
        denied_write,
        denied_read,
        denied_watch,
    ]
    assert all(isinstance(e, ErrorReceived) and isinstance(e.to_exception(), ForbiddenError) for e in errors)
    assert pair.server.open_request_ids() == [allowed]


def test_bad_args_and_unknown_ops_are_request_errors_not_link_errors() -> None:
    pair = open_pair()
    pair.server.receive_data(frame(type="req", id=100, op="get", args={"scope": 1}))
    pair.server.receive_data(frame(type="req", id=101, op="frobnicate", args={}))
    events = drain(pair.server)
    assert [(e.request_id, e.op, e.code) for e in events if isinstance(e, RequestRejected)] == [
        (100, "get", "deserialization_error"),
        (101, "unknown", "UNKNOWN_OP"),  # a peer cannot invent metric label values
    ]
    assert pair.server.state is State.OPEN
    decoder = FrameDecoder()
    decoder.feed(pair.server.data_to_send())
    assert [(f["type"], f["id"], f["code"]) for f in decoder] == [
        ("err", 100, "deserialization_error"),
        ("err", 101, "UNKNOWN_OP"),
    ]


def test_too_many_open_requests_are_refused() -> None:
    pair = open_pair(server_kwargs={"max_open_requests": 2})
    for i in range(3):
        pair.client.send_request(GetArgs("s", str(i)))
    events = pair.to_server()
    assert [type(e) for e in events] == [RequestReceived, RequestReceived, RequestRejected]
    assert isinstance(events[2], RequestRejected) and events[2].code == "TOO_MANY_REQUESTS"


def test_duplicate_open_request_id_is_a_protocol_error() -> None:
    pair = open_pair()
    body = frame(type="req", id=7, op="ping", args={})
    pair.server.receive_data(body + body)
    with pytest.raises(RemoteProtocolError) as info:
        drain(pair.server)
    assert info.value.code == "DUPLICATE_REQUEST_ID"


def test_answer_to_an_unknown_id_is_a_protocol_error() -> None:
    pair = open_pair()
    pair.client.receive_data(frame(type="res", id=42, result=None))
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.next_event()
    assert info.value.code == "UNKNOWN_REQUEST_ID"
    assert pair.client.state is State.ERROR


def test_server_must_answer_only_open_requests() -> None:
    pair = open_pair()
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(1, None)
    rid = pair.client.send_request(GetArgs("s", "k"))
    pair.to_server()
    pair.server.send_response(rid, None)
    with pytest.raises(LocalProtocolError):  # exactly once
        pair.server.send_error(rid, "X", "y")
    with pytest.raises(LocalProtocolError):  # not a watch
        pair.server.send_progress(rid, 1)


def test_a_response_over_the_peers_limit_is_refused_locally_and_the_id_stays_open() -> None:
    pair = open_pair(client_kwargs={"max_frame_size": 8192})
    assert pair.server.send_limit == 8192
    rid = pair.client.send_request(GetArgs("s", "k"))
    pair.to_server()
    with pytest.raises(LocalProtocolError) as info:
        pair.server.send_response(rid, "x" * 10_000)
    assert info.value.code == "FRAME_TOO_LARGE"
    assert pair.server.data_to_send() == b""
    pair.server.send_error(rid, "FRAME_TOO_LARGE", "result too large")
    [err] = pair.to_client()
    assert isinstance(err, ErrorReceived) and err.code == "FRAME_TOO_LARGE"


def test_frames_over_our_limit_after_auth_are_refused() -> None:
    pair = open_pair(client_kwargs={"max_frame_size": 8192})
    pair.client.receive_data((8193).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.next_event()
    assert info.value.code == "FRAME_TOO_LARGE"
    assert pair.client.handshake_failure is None  # not an auth failure: the link was open


# -- watch streams ----------------------------------------------------------------------------


def test_watch_backlog_live_events_progress_and_end() -> None:
    pair = open_pair()
    sub = pair.client.send_request(WatchArgs(("orders:*",), from_revision=10))
    [req] = pair.to_server()
    assert isinstance(req, RequestReceived) and req.args == WatchArgs(("orders:*",), 10)
    ev = WatchEvent(sub, "orders:1", "k", "state:updated", 1, 2, 11, "central", "ep")
    pair.server.send_event(ev)
    pair.server.send_backlog_end(sub, 11, "ep")
    pair.server.send_progress(sub, 15)
    pair.server.send_response(sub, {"revision": 15})
    events = pair.to_client()
    assert events == [
        EventReceived(ev),
        BacklogEndReceived(sub, 11, "ep"),
        ProgressReceived(sub, 15),
        ResponseReceived(sub, "watch", {"revision": 15}),
    ]
    assert pair.client.pending_request_ids() == []


def test_watch_can_end_with_history_gone() -> None:
    pair = open_pair()
    sub = pair.client.send_request(WatchArgs(("*",), from_revision=1))
    pair.to_server()
    pair.server.send_error(sub, "HISTORY_GONE", "compacted up to 50")
    [err] = pair.to_client()
    assert isinstance(err, ErrorReceived) and isinstance(err.to_exception(), HistoryGone)


def test_event_for_an_unknown_or_non_watch_id_is_a_protocol_error() -> None:
    pair = open_pair()
    rid = pair.client.send_request(GetArgs("s", "k"))
    ev = WatchEvent(rid, "s", "k", "state:created", None, 1, 1, "o")
    pair.client.receive_data(encode_frame(ev.to_wire()))
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.next_event()
    assert info.value.code == "UNKNOWN_SUBSCRIPTION"


def test_cancel_swallows_late_events_and_the_final_answer() -> None:
    pair = open_pair()
    sub = pair.client.send_request(WatchArgs(("*",)))
    pair.to_server()
    pair.server.send_event(WatchEvent(sub, "s", "k", "state:created", None, 1, 1, "o"))
    assert pair.client.cancel(sub) is True
    assert pair.client.cancel(sub) is False  # already cancelled
    [cancel] = pair.to_server()  # the server sees the Cancel ...
    assert cancel == CancelReceived(sub)
    pair.server.send_event(WatchEvent(sub, "s", "k", "state:updated", 1, 2, 2, "o"))  # ... after this
    pair.server.send_error(sub, CANCELLED, "cancelled")
    assert pair.to_client() == []  # neither the in-flight events nor the answer surface
    assert pair.client.pending_request_ids() == []
    assert pair.client.cancel(sub) is False  # answered: nothing to cancel


def test_cancel_of_an_answered_request_is_ignored_by_the_server() -> None:
    pair = open_pair()
    rid = pair.client.send_request(GetArgs("s", "k"))
    pair.to_server()
    pair.server.send_response(rid, None)
    pair.client.cancel(rid)  # crossed on the wire with the answer
    assert pair.to_server() == []
    assert pair.to_client() == []


# -- heartbeats, closing ----------------------------------------------------------------------


def test_ping_is_answered_automatically_and_pong_carries_rtt() -> None:
    pair = open_pair()
    nonce = pair.client.ping()
    assert pair.to_server() == [PingReceived(nonce)]
    pair.clock.advance(0.25)
    [pong] = pair.to_client()
    assert isinstance(pong, PongReceived) and pong.nonce == nonce and pong.rtt == pytest.approx(0.25)


def test_tick_pings_a_quiet_link_and_closes_an_idle_one() -> None:
    pair = open_pair(client_kwargs={"heartbeat_interval": 10.0, "idle_timeout": 30.0})
    assert pair.client.tick() == pytest.approx(10.0)
    pair.clock.advance(10.0)
    assert pair.client.tick() == pytest.approx(10.0)  # pinged; the next one in 10 s
    assert isinstance(pair.to_server()[0], PingReceived)
    pair.clock.advance(5.0)
    [pong] = pair.to_client()  # the answer resets the idle timer
    assert isinstance(pong, PongReceived)
    pair.clock.advance(29.0)
    pair.client.tick()
    assert state(pair.client) is State.OPEN
    pair.server.close()  # a dead peer: nothing reaches the client any more
    pair.server.data_to_send()
    pair.clock.advance(1.0)
    assert pair.client.tick() is None
    assert state(pair.client) is State.CLOSED
    [closed] = drain(pair.client)
    assert closed == ConnectionClosed("IDLE_TIMEOUT", "nothing received for 30 s", remote=False)


def test_clean_close_from_the_client() -> None:
    pair = open_pair()
    rid = pair.client.send_request(GetArgs("s", "k"))
    pair.to_server()
    pair.client.close("GOING_AWAY", "shutting down")
    assert pair.client.state is State.CLOSING
    with pytest.raises(LinkClosed):
        pair.client.send_request(GetArgs("s", "k"))
    pair.server.send_response(rid, 1)  # answered before the server sees the Close
    server_events = pair.to_server()
    assert server_events == [ConnectionClosed("GOING_AWAY", "shutting down", remote=True)]
    client_events = pair.to_client()
    assert client_events == [
        ResponseReceived(rid, "get", 1),
        ConnectionClosed("GOING_AWAY", "shutting down", remote=False),
    ]
    assert state(pair.client) is State.CLOSED and state(pair.server) is State.CLOSED
    with pytest.raises(LinkClosed):
        pair.server.send_response(rid, 1)


def test_closing_times_out_when_the_peer_never_answers() -> None:
    pair = open_pair()
    pair.server.close()
    pair.clock.advance(5.0)
    assert pair.server.tick() is None
    assert drain(pair.server) == [ConnectionClosed("NORMAL", "", remote=False)]


def test_eof_without_close_is_connection_lost() -> None:
    pair = open_pair()
    pair.client.receive_data(b"\x00\x00")
    pair.client.receive_data(b"")
    [closed] = drain(pair.client)
    assert isinstance(closed, ConnectionClosed) and closed.code == "CONNECTION_LOST" and closed.remote
    assert "incomplete frame" in closed.reason
    assert pair.client.next_event() is NEED_DATA


def test_eof_while_closing_is_a_clean_close() -> None:
    pair = open_pair()
    pair.client.close()
    pair.client.receive_data(b"")
    assert drain(pair.client) == [ConnectionClosed("NORMAL", "", remote=False)]


def test_garbage_after_the_handshake_errors_and_queues_a_close() -> None:
    pair = open_pair()
    pair.server.receive_data(b"\x00\x00\x00\x01\xc1")
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "MALFORMED_FRAME"
    assert pair.server.state is State.ERROR
    pair.server.receive_data(b"more")  # ignored once failed
    [closed] = pair.to_client()
    assert isinstance(closed, ConnectionClosed) and closed.code == "MALFORMED_FRAME" and closed.remote


def test_a_full_conversation() -> None:
    """Handshake, pipelined requests answered out of order, a watch, ping/pong, close."""
    pair = LinkPair(permissions=Permissions(read=("*",), write=("orders:*",), watch=("orders:*",)))
    client_done, server_done = pair.handshake()
    assert isinstance(client_done, HandshakeComplete) and isinstance(server_done, HandshakeComplete)
    w = pair.client.send_request(WatchArgs(("orders:*",), from_revision=0))
    s = pair.client.send_request(SetArgs("orders:1", "a", {"n": 1}))
    g = pair.client.send_request(GetArgs("orders:1", "a"))
    ping = pair.client.ping()
    server_events = pair.to_server()
    assert [type(e) for e in server_events] == [
        RequestReceived,
        RequestReceived,
        RequestReceived,
        PingReceived,
    ]
    pair.server.send_backlog_end(w, 0, "epoch-1")
    pair.server.send_response(g, None)  # the get overtakes the set
    pair.server.send_response(s, {"existed": False, "old_value": None, "new_value": {"n": 1}, "revision": 1})
    pair.server.send_event(
        WatchEvent(w, "orders:1", "a", "state:created", None, {"n": 1}, 1, "edge-1", "epoch-1")
    )
    events = pair.to_client()
    assert [type(e) for e in events] == [
        PongReceived,
        BacklogEndReceived,
        ResponseReceived,
        ResponseReceived,
        EventReceived,
    ]
    assert isinstance(events[0], PongReceived) and events[0].nonce == ping
    assert [e.request_id for e in events if isinstance(e, ResponseReceived)] == [g, s]
    pair.client.close()
    client_events, server_events = pair.pump()
    assert client_events == [ConnectionClosed("NORMAL", "", remote=False)]
    assert server_events == [ConnectionClosed("NORMAL", "", remote=True)]
    assert pair.server.open_request_ids() == [w]  # the server driver drops its watch on close
