"""The kv log-record codec and the in-memory table (pure code, no files)."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest

from adapters.kv.records import (
    HEADER_SIZE,
    NEED_DATA,
    Op,
    Record,
    RecordDecoder,
    decode_at,
    decode_chunk,
    decode_value,
    encode_chunk,
    encode_delete,
    encode_put,
    encode_record,
    encode_value,
)
from adapters.kv.table import KvTable
from gateway.errors import CorruptDataError, InputError


def test_put_and_delete_round_trip() -> None:
    data = encode_put(7, "scope", "key", encode_value({"a": [1, 2]})) + encode_delete(8, "", "\x00")
    first = decode_at(data, 0)
    assert isinstance(first, tuple)
    record, end = first
    assert record == Record(Op.PUT, 7, "scope", "key", encode_value({"a": [1, 2]}))
    assert decode_value(record.value or b"") == {"a": [1, 2]}
    second = decode_at(data, end)
    assert second == (Record(Op.DELETE, 8, "", "\x00", None), len(data))


def test_layout_is_crc_length_revision_body() -> None:
    data = encode_delete(2**40, "s", "k")
    crc, length, revision = struct.unpack_from("<IIQ", data)
    assert (length, revision) == (len(data) - HEADER_SIZE, 2**40)
    assert crc == zlib.crc32(data[4:])
    assert msgpack.unpackb(data[HEADER_SIZE:]) == [Op.DELETE, "s", "k", None]


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, 10**40, -(10**40), [2**70, {"x": 2**65}], "\ud800 lone surrogate", 2**64 - 1],
)
def test_values_outside_plain_msgpack_round_trip(value: object) -> None:
    assert decode_value(encode_value(value)) == value


def test_non_json_values_are_input_errors() -> None:
    with pytest.raises(InputError):
        encode_value({1, 2})
    with pytest.raises(InputError):
        encode_value(object())


def test_every_prefix_needs_data_and_every_flip_is_detected() -> None:
    data = encode_put(3, "sc", "ke", encode_value({"v": "x" * 20}))
    for cut in range(len(data)):
        assert decode_at(data[:cut], 0) is NEED_DATA
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        try:
            result = decode_at(bytes(damaged), 0)
        except CorruptDataError as exc:
            assert exc.offset == 0
        else:  # a flipped length byte can only make the record look longer
            assert result is NEED_DATA and i in range(4, 8)


def test_valid_crc_over_a_bad_body_is_corrupt() -> None:
    def frame(body: bytes) -> bytes:
        length_rev = struct.pack("<IQ", len(body), 1)
        return struct.pack("<I", zlib.crc32(length_rev + body)) + length_rev + body

    bad_bodies = [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([1, "s", "k"]),
        msgpack.packb([1, "s", 5, b"v"]),
        msgpack.packb([1, "s", "k", None]),  # PUT without value
        msgpack.packb([2, "s", "k", b"x"]),  # DELETE with value
        msgpack.packb([9, "s", "k", None]),
        msgpack.packb({"op": 1}),
        msgpack.packb([1, "s", "k", b"v"]) + b"\x00",  # trailing bytes
    ]
    for body in bad_bodies:
        with pytest.raises(CorruptDataError):
            decode_at(frame(body), 0)


def test_streaming_decoder_byte_by_byte() -> None:
    records = [encode_put(i, f"s{i}", f"k{i}", encode_value(i)) for i in range(1, 6)]
    decoder = RecordDecoder()
    got = []
    for byte in b"".join(records):
        decoder.feed(bytes([byte]))
        while (record := decoder.next_record()) is not NEED_DATA:
            assert isinstance(record, Record)
            got.append(record.revision)
    assert got == [1, 2, 3, 4, 5] and decoder.buffered == 0


def test_streaming_decoder_reports_stream_offsets() -> None:
    good = encode_delete(1, "s", "k")
    bad = bytearray(encode_delete(2, "s", "k"))
    bad[-1] ^= 1
    decoder = RecordDecoder()
    decoder.feed(good + bytes(bad))
    assert isinstance(decoder.next_record(), Record)
    with pytest.raises(CorruptDataError) as info:
        decoder.next_record()
    assert info.value.offset == len(good)


def test_chunk_round_trip_and_validation() -> None:
    data = encode_chunk(9, "s", ["a", "b"], [1, 2], [b"\x01", b"\x02"])
    result = decode_at(data, 0)
    assert isinstance(result, tuple)
    record = result[0]
    assert record.op is Op.SNAPSHOT_CHUNK and record.scope == "s"
    assert decode_chunk(record) == (["a", "b"], [1, 2], [b"\x01", b"\x02"])
    payload: object
    for payload in ([["a"], [1], []], [["a"], ["1"], [b""]], [[1], [1], [b""]], "x", [[], []]):
        bad = Record(Op.SNAPSHOT_CHUNK, 9, "s", "", msgpack.packb(payload))
        with pytest.raises(CorruptDataError):
            decode_chunk(bad)
    begin = Record(Op.SNAPSHOT_BEGIN, 3, "", "", None)
    assert decode_at(encode_record(begin), 0) == (begin, len(encode_record(begin)))


def test_table_keeps_insertion_order_and_drops_empty_scopes() -> None:
    table = KvTable()
    for key in "cabd":
        table.put("s", key, (1, key.encode()))
    assert table.put("s", "a", (2, b"A")) == (1, b"a")  # overwrite keeps position
    assert table.remove("s", "c") == (1, b"c")
    table.put("s", "c", (3, b"C"))  # re-set moves to the end
    assert [k for k, _ in table.slots("s")] == ["a", "b", "d", "c"]
    assert table.key_count == 4
    assert table.remove("s", "missing") is None and table.remove("nope", "x") is None
    for key in "abdc":
        table.remove("s", key)
    assert table.groups() == [] and table.key_count == 0 and table.scope_count == 0


def test_table_image_is_unaffected_by_later_writes() -> None:
    table = KvTable()
    table.put("s", "a", (1, b"1"))
    image = table.image()
    table.put("s", "a", (2, b"2"))
    table.put("s", "b", (3, b"3"))
    table.remove("s", "a")
    assert image == [("s", {"a": (1, b"1")})]


def test_table_bulk_load_counts_new_keys() -> None:
    table = KvTable()
    assert table.load("s", ["a", "b"], [(1, b""), (2, b"")]) == 2
    assert table.load("s", ["b"], [(3, b"")]) == 0  # duplicate
    assert table.load("t", [], []) == 0
    assert table.groups() == ["s"] and table.key_count == 2
