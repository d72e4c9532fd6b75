"""Hostile bytes against the link's byte layer and both ends of a connection.

Invariants (the h11 fuzz invariant, plus chunking independence):

* whatever bytes arrive, ``FrameDecoder`` and ``LinkConnection`` either produce frames/events or
  raise :class:`RemoteProtocolError`, never any other exception;
* feeding the same bytes whole, byte by byte or in random chunks gives the same frames or
  events, the same error code and the same bytes queued for the peer.

Inputs mix raw garbage with well-formed frames of every type carrying plausible and
implausible field values, before and after a real handshake, so the fuzzing reaches deep
states (matching request ids, live watches) and not only the frame parser.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import RemoteProtocolError
from gateway.link import (
    NEED_DATA,
    DeleteArgs,
    GetArgs,
    LinkConnection,
    ListGroupsArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
    WatchArgs,
)
from gateway.link.frames import FrameDecoder
from gateway.link.requests import OPS
from tests.helpers.link_pair import LinkPair

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers(min_value=-3, max_value=8)
    | st.floats(allow_nan=True)
    | st.text(max_size=6)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
VALID_ARGS: list[RequestArgs] = [
    GetArgs("s", "k"),
    SetArgs("orders:1", "k", {"a": [1, None]}, origin="o", idem="i"),
    DeleteArgs("s", "k"),
    UpdateArgs("s", "k", ({"type": "increment", "path": "n", "by": 1},)),
    WatchArgs(("orders:*",), 3),
    SnapshotArgs(("*",)),
    ListGroupsArgs(),
]
TAGS = ["hello", "challenge", "auth", "auth_ok", "req", "res", "err", "cancel", "event", "backlog_end"]
TAGS += ["progress", "ping", "pong", "close", "nope"]
FIELDS = ["id", "op", "args", "result", "code", "message", "sub", "scope", "key", "event_type", "old_value"]
FIELDS += ["new_value", "revision", "origin", "epoch", "nonce", "reason", "v", "sig", "perms"]


@st.composite
def plausible_frame(draw: st.DrawFn, tags: list[str]) -> dict[str, Any]:
    """A frame, mostly of a type in ``tags``, with mostly right-typed fields."""
    tag = draw(
        st.sampled_from(tags) if draw(st.integers(min_value=0, max_value=4)) else st.sampled_from(TAGS)
    )
    small_id = st.sampled_from([0, 1, 2, 2, 2, 3, 4, 7])  # 2 is the live watch, 3 cancelled
    body: dict[str, Any] = {"type": tag}
    if tag == "req":
        if draw(st.booleans()):
            typed = draw(st.sampled_from(VALID_ARGS))
            op, args = typed.OP, typed.to_wire()
        else:
            op = draw(st.sampled_from([*sorted(OPS), "bogus"]))
            args = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "scope": st.sampled_from(["s", "orders:1", ""]) | VALUES,
                        "key": st.just("k") | VALUES,
                        "value": VALUES,
                        "ops": st.lists(st.dictionaries(st.text(max_size=3), VALUES, max_size=2), max_size=2),
                        "patterns": st.lists(st.sampled_from(["*", "s", "orders:*", "a?"]), max_size=3)
                        | VALUES,
                        "from_revision": st.none() | small_id | VALUES,
                    },
                )
            )
        body |= {"id": draw(small_id), "op": op, "args": args}
    elif tag in ("res", "err", "cancel"):
        body |= {"id": draw(small_id), "result": draw(VALUES), "code": "X", "message": "m"}
    elif tag in ("event", "backlog_end", "progress"):
        body |= {
            "sub": draw(small_id),
            "scope": "s",
            "key": "k",
            "event_type": draw(st.sampled_from(["state:created", "state:updated", "bad"])),
            "old_value": None,
            "new_value": draw(VALUES),
            "revision": draw(small_id),
            "origin": "o",
            "epoch": "e",
        }
    elif tag in ("ping", "pong"):
        body["nonce"] = draw(small_id)
    elif tag == "close":
        body |= {"code": draw(st.sampled_from(["NORMAL", "UNAUTHORIZED"])), "reason": "r"}
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        body[draw(st.sampled_from(FIELDS))] = draw(VALUES)  # spoil a field, now and then
    return body


def encoded(body: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


def stream(tags: list[str]) -> st.SearchStrategy[bytes]:
    """Mostly frames a peer in this role could send: garbage ends a stream at once, frames of
    the right types reach the deeper states (matched ids, live watches, authorization)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        parts = draw(st.lists(plausible_frame(tags).map(encoded), max_size=8))
        if draw(st.integers(min_value=0, max_value=2)) == 0:
            parts.insert(draw(st.integers(min_value=0, max_value=len(parts))), draw(st.binary(max_size=24)))
        return b"".join(parts)

    return build()


STREAMS = stream(TAGS)
TO_SERVER = stream(["req", "req", "req", "cancel", "ping", "pong", "close"])
TO_CLIENT = stream(["res", "err", "event", "event", "backlog_end", "progress", "ping", "pong", "close"])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def decode_all(chunks: Iterable[bytes]) -> tuple[list[str], str | None]:
    decoder = FrameDecoder(max_frame_size=4096)
    frames: list[str] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                frames.append(repr(frame))
    except RemoteProtocolError as exc:
        return frames, exc.code
    return frames, None


@FUZZ
@given(STREAMS, st.lists(st.integers(min_value=0), max_size=6))
def test_frame_decoder_is_total_and_chunking_independent(data: bytes, cuts: list[int]) -> None:
    whole = decode_all([data])
    assert decode_all(bytes([b]) for b in data) == whole
    assert decode_all(chunked(data, cuts)) == whole


def feed(conn: LinkConnection, chunks: Iterable[bytes]) -> tuple[list[str], str | None, bytes]:
    """Events (as reprs: NaN != NaN), the protocol error code if any, the bytes queued."""
    events: list[str] = []
    try:
        for chunk in chunks:
            if not chunk:
                continue  # b"" would mean EOF
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(repr(event))
    except RemoteProtocolError as exc:
        return events, exc.code, conn.data_to_send()
    return events, None, conn.data_to_send()


def fresh_server() -> LinkConnection:
    pair = LinkPair()
    pair.server.start()
    return pair.server


def open_pair() -> LinkPair:
    pair = LinkPair()
    pair.handshake()
    pair.client.send_request(GetArgs("s", "k"))  # id 1
    pair.client.send_request(WatchArgs(("*",)))  # id 2: a live watch
    pair.client.send_request(GetArgs("s", "k"))  # id 3
    pair.client.cancel(3)
    pair.pump()
    pair.server.send_response(1, None)  # the server still holds 2 and 3 open
    pair.to_client()
    return pair


@FUZZ
@given(STREAMS, st.lists(st.integers(min_value=0), max_size=6))
def test_a_server_before_auth_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    whole = feed(fresh_server(), [data])
    assert feed(fresh_server(), (bytes([b]) for b in data)) == whole
    assert feed(fresh_server(), chunked(data, cuts)) == whole


@FUZZ
@given(TO_SERVER, st.lists(st.integers(min_value=0), max_size=6))
def test_an_open_server_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    whole = feed(open_pair().server, [data])
    assert feed(open_pair().server, (bytes([b]) for b in data)) == whole
    assert feed(open_pair().server, chunked(data, cuts)) == whole


@FUZZ
@given(TO_CLIENT, st.lists(st.integers(min_value=0), max_size=6))
def test_an_open_client_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    whole = feed(open_pair().client, [data])
    assert feed(open_pair().client, (bytes([b]) for b in data)) == whole
    assert feed(open_pair().client, chunked(data, cuts)) == whole


@FUZZ
@given(st.binary(max_size=64))
def test_a_client_during_the_handshake_survives_any_bytes(data: bytes) -> None:
    def fresh_client() -> LinkConnection:
        pair = LinkPair()
        pair.client.start()
        pair.client.data_to_send()
        return pair.client

    whole = feed(fresh_client(), [data])
    assert feed(fresh_client(), (bytes([b]) for b in data)) == whole
