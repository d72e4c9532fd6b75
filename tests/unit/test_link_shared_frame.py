"""SharedFrame: a fan-out frame encoded once must decode exactly like a frame encoded per watcher."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import LocalProtocolError
from gateway.link.frames import FrameDecoder, SharedFrame, encode_frame
from gateway.link.messages import WatchEvent, decode_message
from gateway.state.adapter import Change, ChangeKind

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)


def decode_one(data: bytes) -> dict[str, Any]:
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None and decoder.next_frame() is None
    return frame


@settings(max_examples=150, deadline=None)
@given(
    body=st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: k != "sub"), json_values, max_size=20
    ),
    sub=st.integers(0, 2**32),
)
def test_shared_frame_equals_a_per_watcher_encoding(body: dict[str, Any], sub: int) -> None:
    shared = SharedFrame(body, "sub")
    assert decode_one(shared.frame(sub)) == decode_one(encode_frame({**body, "sub": sub}))


def test_watch_event_shared_frame_decodes_to_the_same_message_for_every_watcher() -> None:
    change = Change("orders", "o1", ChangeKind.UPDATED, {"n": 1}, {"n": 2}, 42, "edge-1")
    shared = WatchEvent.shared_frame(change, epoch="ep")
    for sub in (1, 7, 70_000):
        msg = decode_message(decode_one(shared.frame(sub)))
        assert isinstance(msg, WatchEvent)
        assert msg.sub_id == sub
        assert msg.to_change() == change


def test_shared_frame_enforces_the_frame_size_limit_and_rejects_its_own_field() -> None:
    shared = SharedFrame({"blob": "x" * 1000}, "sub")
    with pytest.raises(LocalProtocolError) as err:
        shared.frame(1, max_frame_size=100)
    assert err.value.code == "FRAME_TOO_LARGE"
    with pytest.raises(ValueError):
        SharedFrame({"sub": 1}, "sub")
    with pytest.raises(LocalProtocolError):
        SharedFrame({"x": object()}, "sub")
