"""FrameDecoder / encode_frame / canonical_pack: the byte layer of the link."""

from __future__ import annotations

import msgpack
import pytest

from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.link.frames import FrameDecoder, canonical_pack, encode_frame


def raw_frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def test_round_trip_of_several_frames_in_one_chunk() -> None:
    frames = [{"type": "ping", "nonce": i} for i in range(3)] + [{"a": [1, "x", None, 2.5, b"\x00"]}]
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(f) for f in frames))
    assert list(decoder) == frames
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_a_frame_split_across_feeds_waits_for_its_last_byte() -> None:
    data = encode_frame({"k": "v" * 100})
    decoder = FrameDecoder()
    for byte in data[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    assert decoder.next_frame() == {"k": "v" * 100}


def test_encoding_is_length_prefixed_msgpack() -> None:
    data = encode_frame({"a": 1})
    assert data[:4] == (len(data) - 4).to_bytes(4, "big")
    assert msgpack.unpackb(data[4:]) == {"a": 1}


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.feed((101).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "FRAME_TOO_LARGE"
    assert "101" in info.value.message


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    body = msgpack.packb({"x": "y" * 90})
    decoder = FrameDecoder(max_frame_size=len(body))
    decoder.feed(raw_frame(body))
    assert decoder.next_frame() == {"x": "y" * 90}


def test_the_limit_can_be_raised_between_frames() -> None:
    small, big = encode_frame({"a": 1}), encode_frame({"b": "z" * 200})
    decoder = FrameDecoder(max_frame_size=64)
    decoder.feed(small + big)
    assert decoder.next_frame() == {"a": 1}
    decoder.max_frame_size = 1024
    assert decoder.next_frame() == {"b": "z" * 200}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty body"),
        (b"\xc1", "reserved msgpack byte"),
        (msgpack.packb([1, 2]), "an array, not a map"),
        (msgpack.packb("text"), "a string"),
        (msgpack.packb({"a": 1}) + b"\x00", "trailing bytes"),
        (b"\x81\xa1a\xa2\xff\xfe", "invalid utf-8 string"),
        (msgpack.packb({1: 2}), "an integer key"),
        (msgpack.packb({b"k": 1}, use_bin_type=True), "a bytes key"),
        (msgpack.packb({"a": msgpack.ExtType(5, b"x")}), "an ext type"),
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "an array claiming more items than the body holds"),
        (b"\x91" * 5000 + b"\xc0", "nesting deeper than msgpack allows"),
    ],
)
def test_malformed_bodies(body: bytes, why: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(body))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "MALFORMED_FRAME", why


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame(b"\xc1") + encode_frame({"ok": True}))
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_frame()
    with pytest.raises(RemoteProtocolError) as second:
        decoder.next_frame()
    assert second.value is first.value
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"more")


def test_encode_refuses_a_body_over_the_limit_and_what_msgpack_cannot_encode() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame({"x": "y" * 100}, max_frame_size=50)
    assert info.value.code == "FRAME_TOO_LARGE"
    with pytest.raises(LocalProtocolError) as info:
        encode_frame({"x": object()})
    assert info.value.code == "MALFORMED_FRAME"


def test_the_decoder_releases_consumed_bytes() -> None:
    decoder = FrameDecoder()
    for _ in range(100):
        decoder.feed(encode_frame({"n": 1}) + b"\x00")
        assert decoder.next_frame() == {"n": 1}
        assert decoder.next_frame() is None
        assert decoder.buffered == 1
        decoder.feed(b"\x00\x00\x04\x81\xa1n")  # completes the header begun above
        decoder.feed(b"\x02")
        assert decoder.next_frame() == {"n": 2}
    assert len(decoder._buf) < 64  # compacted, not growing with the stream


def test_canonical_pack_ignores_map_order_at_every_depth() -> None:
    a = {"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": b"\x00"}}
    b = {"a": {"x": b"\x00", "y": [1, {"p": 2, "q": 1}]}, "b": 1}
    assert canonical_pack(a) == canonical_pack(b)
    assert msgpack.unpackb(canonical_pack(a)) == a
    assert canonical_pack({"a": 1}) != canonical_pack({"a": 2})


def test_canonical_pack_orders_mixed_key_types() -> None:
    assert canonical_pack({b"b": 1, "a": 2}) == canonical_pack({"a": 2, b"b": 1})


def test_invalid_max_frame_size() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_size=0)
