"""Invariant: whatever bytes the kv store reads, it gets records, "need more data", or a
CorruptDataError, never any other exception (h11's fuzzing rule applied to our log format)."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kv.files import replay_segments, segment_path
from adapters.kv.records import (
    NEED_DATA,
    Op,
    Record,
    RecordDecoder,
    decode_at,
    decode_chunk,
    decode_value,
    encode_put,
    encode_value,
)
from adapters.kv.snapshot import read_snapshot
from adapters.kv.table import KvTable
from gateway.errors import CorruptDataError

FUZZ = settings(max_examples=300, deadline=None)


def framed(body: bytes, revision: int = 1) -> bytes:
    """A record with a correct CRC around any body: gets past the checksum to the body checks."""
    length_rev = struct.pack("<IQ", len(body), revision)
    return struct.pack("<I", zlib.crc32(length_rev + body)) + length_rev + body


msgpack_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=8,
).map(lambda v: msgpack.packb(v, default=str))


@FUZZ
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=50))
def test_decode_at_arbitrary_bytes(data: bytes, offset: int) -> None:
    try:
        result = decode_at(data, offset)
    except CorruptDataError as exc:
        assert exc.offset == offset
        return
    if result is not NEED_DATA:
        assert isinstance(result, tuple) and isinstance(result[0], Record)
        assert result[1] <= len(data)


@FUZZ
@given(st.one_of(st.binary(max_size=64), msgpack_ish))
def test_decode_at_bodies_behind_a_valid_crc(body: bytes) -> None:
    try:
        result = decode_at(framed(body), 0)
    except CorruptDataError:
        return
    assert isinstance(result, tuple) and isinstance(result[0], Record)
    if result[0].op is Op.SNAPSHOT_CHUNK:
        try:
            decode_chunk(result[0])
        except CorruptDataError:
            pass


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_streaming_decoder_arbitrary_chunks(chunks: list[bytes]) -> None:
    decoder = RecordDecoder()
    valid = encode_put(1, "s", "k", encode_value([1]))
    try:
        for chunk in [valid, *chunks]:
            decoder.feed(chunk)
            while isinstance(decoder.next_record(), Record):
                pass
    except CorruptDataError as exc:
        assert exc.offset is not None and exc.offset >= len(valid)


@FUZZ
@given(st.binary(max_size=64))
def test_decode_value_arbitrary_bytes(data: bytes) -> None:
    try:
        decode_value(data)
    except CorruptDataError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=3))
def test_replay_and_snapshot_files_of_arbitrary_bytes(garbage: bytes, good_records: int) -> None:
    prefix = b"".join(encode_put(i + 1, "s", f"k{i}", encode_value(i)) for i in range(good_records))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        segment = segment_path(directory, 1)
        segment.write_bytes(prefix + garbage)
        table = KvTable()
        try:
            replay = replay_segments(table, [(1, segment)], 0)
        except CorruptDataError as exc:
            assert exc.path == str(segment)
        else:
            assert replay.revision >= good_records and table.key_count >= good_records
            assert segment.stat().st_size >= len(prefix)
        snapshot = directory / "snap.snap"
        snapshot.write_bytes(garbage)
        try:
            read_snapshot(snapshot, 1, KvTable())
        except CorruptDataError as exc:
            assert exc.path == str(snapshot)
