"""Fuzzing the worker protocol core: whatever a peer sends, the codec and the session either
decode it (into a message or an ignore decision) or raise RemoteProtocolError, nothing else;
and what they decode survives an encode/decode round trip.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import RemoteProtocolError
from gateway.protocol import (
    FrameError,
    Ignored,
    InvocationResult,
    Outgoing,
    SessionState,
    WorkerSession,
    decode,
    encode,
)
from gateway.protocol.messages import ErrorFrame, Pong, WorkerRegistered

TYPES = [
    "registerfunction",
    "unregisterfunction",
    "registertrigger",
    "unregistertrigger",
    "registertriggertype",
    "unregistertriggertype",
    "reattach",
    "triggerregistrationresult",
    "invokefunction",
    "invocationresult",
    "ping",
    "pong",
    "workerregistered",
    "error",
    "observe",
    "nonsense",
]
FIELDS = [
    "id",
    "function_id",
    "trigger_type",
    "config",
    "metadata",
    "namespace",
    "data",
    "invocation_id",
    "action",
    "result",
    "error",
    "previous_worker_id",
    "reattach_token",
    "worker_id",
    "description",
    "traceparent",
    "queue",
    "type",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
actions = (
    st.none()
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["void", "enqueue", "x"])}, optional={"queue": json_values}
    )
    | json_values
)
messages = st.builds(
    lambda t, fields, action: {"type": t, **fields, **({"action": action} if action is not None else {})},
    st.sampled_from(TYPES) | json_scalars,
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(max_size=12), max_size=8),
    actions,
)
frames = (
    st.text(max_size=200)
    | st.binary(max_size=200)
    | messages.map(json.dumps)
    | messages.map(lambda m: json.dumps(m).encode())
    | st.builds(
        lambda p, b: p + b, st.sampled_from([b"OTLP", b"LOGS", b"MTRC", b"OTL"]), st.binary(max_size=50)
    )
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(frames)
def test_decode_returns_a_message_or_raises_remote_protocol_error(frame: str | bytes) -> None:
    try:
        msg = decode(frame, max_bytes=1 << 20)
    except RemoteProtocolError as exc:
        assert isinstance(exc, FrameError) and exc.reason and exc.message
        return
    if isinstance(msg, Ignored):
        assert msg.reason
        return
    # Whatever decoded encodes again, and decodes to the same message.
    assert decode(encode(msg)) == msg


@FUZZ
@given(st.lists(frames, max_size=10))
def test_session_survives_any_sequence_of_frames(sequence: list[str | bytes]) -> None:
    session = WorkerSession(max_protocol_errors=1_000_000)
    session.initiate()
    invocation_id, _ = session.begin_call("w::fn", {"x": 1})
    errors = 0
    for frame in sequence:
        try:
            events = session.receive_frame(frame)
        except RemoteProtocolError as exc:
            errors += 1
            assert isinstance(exc, FrameError)
            for reply in session.error_frames(exc):
                assert isinstance(decode(reply), ErrorFrame | InvocationResult)
            continue
        for event in events:
            if isinstance(event, Outgoing):
                assert decode(event.frame) == Pong()
    assert session.protocol_errors == errors
    assert session.state in (SessionState.CONNECTING, SessionState.REGISTERED)
    # The engine's own call is still tracked unless the fuzz answered it by id (it cannot guess it).
    assert session.pending_calls == 1
    answer = session.receive_frame(
        json.dumps({"type": "invocationresult", "invocation_id": invocation_id, "result": 1})
    )
    assert answer == [InvocationResult(invocation_id, result=1)]
    assert session.close() == []


@FUZZ
@given(st.text(max_size=40), st.text(max_size=40), json_values)
def test_engine_frames_round_trip(worker_id: str, token: str, value: Any) -> None:
    assert decode(encode(WorkerRegistered(worker_id, token))) == WorkerRegistered(worker_id, token)
    session = WorkerSession()
    session.initiate()
    invocation_id, wire = session.begin_call("w::fn", value, value)
    call = decode(wire)
    assert call.data == value and call.metadata == value and call.invocation_id == invocation_id  # type: ignore[union-attr]
