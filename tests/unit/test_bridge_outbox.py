"""The outbox file: order and acks survive reopening, torn tails are cut, limits refuse writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.bridge.outbox import Outbox, OutboxFull, decode_records, encode_ack
from gateway.errors import CorruptDataError


def _open(path: Path, **limits: int) -> Outbox:
    box = Outbox(str(path), max_entries=limits.get("entries", 100), max_bytes=limits.get("bytes", 1 << 20),
                 engine_id="edge-1")  # fmt: skip
    box.open()
    return box


def test_queued_writes_come_back_in_order_with_their_keys_after_reopening(tmp_path: Path) -> None:
    box = _open(tmp_path)
    a = box.append("set", "s", "k", {"n": 1})
    b = box.append("update", "s", "k", [[{"type": "set", "path": "n", "value": 2}], None])
    c = box.append("delete", "s", "k", None)
    box.close()
    again = _open(tmp_path)
    assert [(w.seq, w.op, w.payload, w.idem) for w in again.pending] == [
        (a.seq, "set", {"n": 1}, a.idem),
        (b.seq, "update", b.payload, b.idem),
        (c.seq, "delete", None, c.idem),
    ]
    assert len({a.idem, b.idem, c.idem}) == 3 and a.idem.startswith("edge-1:")
    assert again.bytes == a.size + b.size + c.size


def test_acknowledged_writes_are_not_replayed_and_an_empty_queue_empties_the_file(tmp_path: Path) -> None:
    box = _open(tmp_path)
    for i in range(3):
        box.append("set", "s", f"k{i}", i)
    box.ack_first()
    box.close()
    again = _open(tmp_path)
    assert [w.key for w in again.pending] == ["k1", "k2"]
    again.ack_first()
    again.ack_first()
    assert again.replayed_total == 2 and again.bytes == 0
    again.close()
    assert (tmp_path / "outbox.log").stat().st_size == 0
    after = _open(tmp_path)
    assert len(after) == 0
    assert after.append("set", "s", "x", 1).seq >= 1


def test_a_torn_tail_is_cut_and_the_queue_goes_on(tmp_path: Path) -> None:
    box = _open(tmp_path)
    box.append("set", "s", "a", 1)
    box.append("set", "s", "b", 2)
    box.close()
    log = tmp_path / "outbox.log"
    data = log.read_bytes()
    log.write_bytes(data[:-3])  # a crash in the middle of the second append
    again = _open(tmp_path)
    assert [w.key for w in again.pending] == ["a"]
    assert log.stat().st_size == again.pending[0].size
    again.append("set", "s", "c", 3)
    again.close()
    assert [w.key for w in _open(tmp_path).pending] == ["a", "c"]


def test_damage_before_intact_records_refuses_to_open(tmp_path: Path) -> None:
    box = _open(tmp_path)
    box.append("set", "s", "a", 1)
    box.append("set", "s", "b", 2)
    box.close()
    log = tmp_path / "outbox.log"
    data = bytearray(log.read_bytes())
    data[10] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError):
        _open(tmp_path)


def test_a_full_outbox_refuses_with_outbox_full(tmp_path: Path) -> None:
    box = _open(tmp_path, entries=2)
    box.append("set", "s", "a", 1)
    box.append("set", "s", "b", 2)
    with pytest.raises(OutboxFull) as info:
        box.append("set", "s", "c", 3)
    assert info.value.code == "OUTBOX_FULL" and len(box) == 2
    small = _open(tmp_path / "small", bytes=120)
    small.append("set", "s", "a", "x")
    with pytest.raises(OutboxFull):
        small.append("set", "s", "b", "y" * 100)
    assert len(small) == 1


def test_an_ack_record_alone_decodes() -> None:
    assert decode_records(encode_ack(7)) == ([7], len(encode_ack(7)))
