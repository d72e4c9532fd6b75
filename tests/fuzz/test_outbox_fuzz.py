"""Fuzz the outbox decoder: any bytes give intact records, a torn tail, or CORRUPT_DATA."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bridge.outbox import QueuedWrite, decode_records, encode_ack, encode_write
from gateway.errors import CorruptDataError

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_writes = st.builds(
    lambda seq, op, scope, key, payload: QueuedWrite(seq, op, scope, key, payload, f"e:{seq}", 1.5, 0),
    st.integers(1, 2**40),
    st.sampled_from(["set", "delete", "update"]),
    st.text(min_size=1, max_size=6),
    st.text(min_size=1, max_size=6),
    _json,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_writes | st.integers(0, 2**40), max_size=6), st.data())
def test_a_file_cut_anywhere_decodes_to_a_prefix_of_its_records(records: list[QueuedWrite | int],
                                                                 data: st.DataObject) -> None:  # fmt: skip
    chunks = [encode_ack(r) if isinstance(r, int) else encode_write(r) for r in records]
    blob = b"".join(chunks)
    cut = data.draw(st.integers(0, len(blob)))
    decoded, intact = decode_records(blob[:cut])
    assert intact <= cut
    assert len(decoded) <= len(records)
    for got, want in zip(decoded, records, strict=False):
        if isinstance(want, int):
            assert got == want
        else:
            assert isinstance(got, QueuedWrite)
            assert (got.seq, got.op, got.scope, got.key, got.payload) == (
                want.seq, want.op, want.scope, want.key, want.payload,
            )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(blob: bytes) -> None:
    try:
        decoded, intact = decode_records(blob)
    except CorruptDataError:
        return
    assert 0 <= intact <= len(blob)
    assert all(isinstance(r, (int, QueuedWrite)) for r in decoded)
