"""Wire codecs of every link frame and of every request op's args."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from gateway.errors import (
    AuthError,
    ForbiddenError,
    GatewayError,
    HistoryGone,
    InputError,
    RemoteProtocolError,
)
from gateway.link.frames import FrameDecoder, encode_frame
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
    check_json,
    decode_message,
    error_from_wire,
)
from gateway.link.requests import (
    OPS,
    DeleteArgs,
    GetArgs,
    InfoArgs,
    ItemsArgs,
    ListArgs,
    ListGroupsArgs,
    PingArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
    WatchArgs,
    parse_args,
)
from gateway.state.adapter import Change, ChangeKind

MESSAGES: list[Message] = [
    Hello((1,), "edge-1", b"k" * 32, b"n" * 32, 1_700_000_000_000),
    Hello((1, 2), "", b"k" * 32, b"n" * 32, 0, cert_hash=b"c" * 32, max_frame_size=65536),
    Challenge(1, "central", b"s" * 32, b"m" * 32, 5, b"x" * 16),
    Challenge(1, "central", b"s" * 32, b"m" * 32, 5, b"x" * 16, max_frame_size=1 << 20),
    Auth(b"g" * 64),
    AuthOk(b"g" * 64, {"read": ["*"], "write": [], "watch": ["a?"]}),
    AuthOk(b"g" * 64, None),
    Request(1, "get", {"scope": "s", "key": "k"}),
    Request(2**64 - 1, "ping", {}),
    Response(3, {"value": [1, 2.5, "x", None, True, {"n": {}}], "revision": 9}),
    Response(4, None),
    ErrorResponse(5, "HISTORY_GONE", "compacted"),
    Cancel(6),
    WatchEvent(7, "s", "k", "state:created", None, {"a": 1}, 12, "edge-1"),
    WatchEvent(7, "", "", "state:deleted", [1], None, 0, "", epoch="e1"),
    BacklogEnd(7, 12, "e1"),
    Progress(7, 40),
    Ping(0),
    Pong(2**63),
    Close("NORMAL"),
    Close("IDLE_TIMEOUT", "nothing received for 60 s"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_a_frame(msg: Message) -> None:
    wire = msg.to_wire()
    assert wire["type"] == msg.TYPE
    assert decode_message(wire) == msg
    decoder = FrameDecoder()
    decoder.feed(encode_frame(wire))
    frame = decoder.next_frame()
    assert frame is not None
    assert decode_message(frame) == msg


def test_every_frame_type_is_covered_above() -> None:
    assert {type(m) for m in MESSAGES} == set(Message.__args__)


def test_unknown_extra_keys_are_tolerated() -> None:
    wire = Ping(5).to_wire() | {"future_field": [1, 2]}
    assert decode_message(wire) == Ping(5)


def malformed(frame: dict[str, Any]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(frame)
    assert info.value.code == "MALFORMED_FRAME"
    return info.value


def with_field(msg: Message, **changes: Any) -> dict[str, Any]:
    wire = msg.to_wire()
    for key, value in changes.items():
        if value is _MISSING:
            del wire[key]
        else:
            wire[key] = value
    return wire


_MISSING = object()


@pytest.mark.parametrize(
    ("msg", "field", "value"),
    [
        (MESSAGES[0], "v", []),
        (MESSAGES[0], "v", [0]),
        (MESSAGES[0], "v", "1"),
        (MESSAGES[0], "v", list(range(1, 40))),
        (MESSAGES[0], "client_id", 7),
        (MESSAGES[0], "client_id", "x" * 257),
        (MESSAGES[0], "client_pub", b"short"),
        (MESSAGES[0], "client_pub", "k" * 32),
        (MESSAGES[0], "nc", b"n" * 31),
        (MESSAGES[0], "t", -1),
        (MESSAGES[0], "t", True),
        (MESSAGES[0], "t", 1.5),
        (MESSAGES[0], "ch", b"c" * 31),
        (MESSAGES[0], "mf", 100),
        (MESSAGES[0], "nc", _MISSING),
        (MESSAGES[2], "session", b"x" * 15),
        (MESSAGES[2], "server_pub", None),
        (MESSAGES[2], "v", "1"),
        (MESSAGES[4], "sig", b"g" * 63),
        (MESSAGES[5], "perms", ["*"]),
        (MESSAGES[5], "perms", {"read": "*"}),
        (MESSAGES[5], "perms", {"read": [1]}),
        (MESSAGES[7], "id", -1),
        (MESSAGES[7], "id", 2**64),
        (MESSAGES[7], "op", None),
        (MESSAGES[7], "args", [1]),
        (MESSAGES[9], "result", b"bytes are not JSON"),
        (MESSAGES[9], "result", {"a": {"b": [b"\x00"]}}),
        (MESSAGES[9], "result", msgpack.Timestamp(1, 0)),
        (MESSAGES[9], "result", {"a": {1: 2}}),
        (MESSAGES[9], "result", [1.0, float("nan")]),
        (MESSAGES[9], "result", {"x": float("-inf")}),
        (MESSAGES[9], "result", _MISSING),
        (MESSAGES[11], "code", 5),
        (MESSAGES[11], "message", None),
        (MESSAGES[13], "event_type", "state:exploded"),
        (MESSAGES[13], "revision", "12"),
        (MESSAGES[13], "new_value", b"\x00"),
        (MESSAGES[13], "epoch", 3),
        (MESSAGES[13], "sub", None),
        (MESSAGES[15], "epoch", None),
        (MESSAGES[16], "revision", -5),
        (MESSAGES[17], "nonce", "x"),
        (MESSAGES[19], "code", None),
        (MESSAGES[19], "reason", "x" * 2000),
    ],
)
def test_bad_fields_are_malformed_and_named(msg: Message, field: str, value: Any) -> None:
    error = malformed(with_field(msg, **{field: value}))
    assert msg.TYPE in error.message  # names the frame type ...
    assert repr(field) in error.message or f".{field}" in error.message  # ... and the field


@pytest.mark.parametrize("tag", [None, 5, "nope", b"ping"])
def test_unknown_frame_types_are_malformed(tag: Any) -> None:
    malformed({"type": tag, "nonce": 1})
    malformed({"nonce": 1})


def test_json_check_accepts_deep_plain_data_and_names_where_it_fails() -> None:
    deep: Any = "leaf"
    for _ in range(5000):  # deeper than the Python recursion limit: the walk is iterative
        deep = [deep]
    check_json(deep, "x")
    check_json({"a": [1, -2, 3.5, True, None, "s", {}]}, "x")
    with pytest.raises(RemoteProtocolError, match=r"res\.result: bytes"):
        check_json([[b"x"]], "res.result")


def test_watch_event_converts_to_and_from_a_change() -> None:
    change = Change("s", "k", ChangeKind.UPDATED, {"a": 1}, {"a": 2}, 17, "edge-2")
    event = WatchEvent.from_change(9, change, epoch="e")
    assert event.event_type == "state:updated" and event.sub_id == 9 and event.epoch == "e"
    assert event.to_change() == change


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("FORBIDDEN", ForbiddenError),
        ("HISTORY_GONE", HistoryGone),
        ("UNAUTHORIZED", AuthError),
        ("deserialization_error", InputError),
    ],
)
def test_error_codes_map_to_the_error_tree(code: str, cls: type[GatewayError]) -> None:
    error = error_from_wire(code, "why")
    assert isinstance(error, cls) and error.code == code and error.message == "why"


def test_unknown_error_codes_are_kept_verbatim() -> None:
    error = ErrorResponse(1, "SET_ERROR", "disk").to_exception()
    assert type(error) is GatewayError and error.code == "SET_ERROR"


# -- request args ---------------------------------------------------------------------------

ARGS: list[RequestArgs] = [
    GetArgs("s", "k"),
    SetArgs("s", "k", {"v": [1, None]}),
    SetArgs("", "", None, origin="edge-1", idem="abc"),
    DeleteArgs("s", "k"),
    DeleteArgs("s", "k", origin="o", idem="i"),
    UpdateArgs("s", "k", ({"type": "set", "path": "", "value": 1}, {"increment": {"field": "n", "by": 2}})),
    UpdateArgs("s", "k", (), origin="o", idem="i"),
    UpdateArgs("s", "k", (), max_value_bytes=1024),
    ListArgs("s"),
    ItemsArgs("s"),
    ListGroupsArgs(),
    WatchArgs(("orders:*", "a?"), 0),
    WatchArgs(("*",)),
    WatchArgs(("*",), 17, epoch="epoch-1"),
    SnapshotArgs(("x",)),
    PingArgs(),
    InfoArgs(),
]


@pytest.mark.parametrize("args", ARGS, ids=lambda a: a.OP)
def test_request_args_round_trip(args: RequestArgs) -> None:
    wire = msgpack.unpackb(msgpack.packb(args.to_wire()))  # through msgpack: tuples become lists
    assert parse_args(args.OP, wire) == args


def test_every_op_is_covered() -> None:
    assert {a.OP for a in ARGS} == OPS


@pytest.mark.parametrize(
    ("op", "args", "field"),
    [
        ("get", {"scope": "s"}, "key"),
        ("get", {"scope": 1, "key": "k"}, "scope"),
        ("set", {"scope": "s", "key": "k"}, "value"),
        ("set", {"scope": "s", "key": "k", "value": b"x"}, "value"),
        ("set", {"scope": "s", "key": "k", "value": 1, "origin": 5}, "origin"),
        ("delete", {"scope": "s", "key": "k", "idem": []}, "idem"),
        ("update", {"scope": "s", "key": "k", "ops": {"type": "set"}}, "ops"),
        ("update", {"scope": "s", "key": "k", "ops": [1]}, "ops"),
        ("update", {"scope": "s", "key": "k"}, "ops"),
        ("list", {}, "scope"),
        ("watch", {"patterns": []}, "patterns"),
        ("watch", {"patterns": "*"}, "patterns"),
        ("watch", {"patterns": [1]}, "patterns"),
        ("watch", {"patterns": ["*"], "from_revision": -1}, "from_revision"),
        ("watch", {"patterns": ["*"], "from_revision": True}, "from_revision"),
        ("watch", {"patterns": ["*"], "epoch": 5}, "epoch"),
        ("update", {"scope": "s", "key": "k", "ops": [], "max_value_bytes": -1}, "max_value_bytes"),
        ("snapshot", {"patterns": ["*"] * 2000}, "patterns"),
    ],
)
def test_bad_args_are_input_errors_naming_the_field(op: str, args: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_args(op, args)
    assert info.value.code == "deserialization_error"
    assert f"{op}." in info.value.message or f"{op}:" in info.value.message
    assert field in info.value.message


def test_unknown_op() -> None:
    with pytest.raises(InputError) as info:
        parse_args("unwatch", {})
    assert info.value.code == "UNKNOWN_OP"
