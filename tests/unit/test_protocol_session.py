"""The sans-IO worker session: state table, call bookkeeping, hello, replies, error handling."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from gateway.errors import LocalProtocolError
from gateway.protocol import (
    ABSENT,
    Action,
    FrameError,
    Ignored,
    InvocationResult,
    InvokeFunction,
    NamespaceDeclared,
    Outgoing,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    SessionState,
    WorkerSession,
)


def make_session(**kwargs: Any) -> WorkerSession:
    counter = itertools.count(1)
    session = WorkerSession(new_id=lambda: f"id-{next(counter)}", **kwargs)
    return session


def started(**kwargs: Any) -> WorkerSession:
    session = make_session(**kwargs)
    session.initiate()
    return session


def frame(**obj: Any) -> str:
    return json.dumps(obj)


def test_initiate_sends_workerregistered_first() -> None:
    session = make_session()
    assert session.state is SessionState.NEW
    assert json.loads(session.initiate()) == {
        "type": "workerregistered",
        "worker_id": "id-1",
        "reattach_token": "id-2",
    }
    assert session.state is SessionState.CONNECTING
    with pytest.raises(LocalProtocolError):
        session.initiate()


def test_nothing_but_close_before_initiate() -> None:
    session = make_session()
    with pytest.raises(LocalProtocolError):
        session.begin_call("f", {})
    assert not session.can_call
    assert session.close() == []
    assert session.state is SessionState.CLOSED


def test_registrations_and_calls_pass_through_in_order() -> None:
    session = started()
    events = [
        *session.receive_frame(frame(type="registerfunction", id="a::f")),
        *session.receive_frame(
            frame(type="registertrigger", id="t", trigger_type="state", function_id="a::f", config={})
        ),
        *session.receive_frame(frame(type="invokefunction", function_id="a::f", data=1, invocation_id="c1")),
    ]
    assert events == [
        RegisterFunction("a::f"),
        RegisterTrigger("t", "state", "a::f", {}),
        InvokeFunction("a::f", 1, invocation_id="c1"),
    ]
    assert session.state is SessionState.CONNECTING


def test_hello_declares_the_namespace_once() -> None:
    session = started()
    hello = frame(
        type="invokefunction",
        function_id="engine::workers::register",
        data={"name": "w", "runtime": "python", "namespace": "orders", "_caller_worker_id": "x"},
        action={"type": "void"},
    )
    events = session.receive_frame(hello)
    assert events[0] == NamespaceDeclared(None, "orders")
    assert isinstance(events[1], InvokeFunction) and events[1].function_id == "engine::workers::register"
    assert session.state is SessionState.REGISTERED
    assert session.namespace == "orders"
    assert session.worker_info == {"name": "w", "runtime": "python", "namespace": "orders"}
    # Saying it again changes nothing; a null namespace keeps the default.
    assert len(session.receive_frame(hello)) == 1
    other = started()
    other.receive_frame(hello.replace('"orders"', "null"))
    assert other.namespace is None and other.state is SessionState.REGISTERED


def test_calls_to_the_worker_are_matched_by_invocation_id() -> None:
    session = started()
    invocation_id, wire = session.begin_call("w::fn", {"x": 1}, {"meta": True})
    assert json.loads(wire) == {
        "type": "invokefunction",
        "function_id": "w::fn",
        "data": {"x": 1},
        "invocation_id": invocation_id,
        "metadata": {"meta": True},
    }
    assert session.pending_calls == 1
    stray = session.receive_frame(frame(type="invocationresult", invocation_id="other", result=1))
    assert stray == [Ignored("unknown_invocation", "other")]
    events = session.receive_frame(frame(type="invocationresult", invocation_id=invocation_id, result=None))
    assert events == [InvocationResult(invocation_id, result=None)]
    assert session.pending_calls == 0
    # A second answer to the same call is a stray.
    again = session.receive_frame(frame(type="invocationresult", invocation_id=invocation_id, result=2))
    assert isinstance(again[0], Ignored)


def test_abandoned_calls_ignore_late_answers_and_close_reports_the_rest() -> None:
    session = started()
    first, _ = session.begin_call("w::a", None)
    second, _ = session.begin_call("w::b", None)
    assert session.abandon_call(first)
    assert not session.abandon_call(first)
    assert isinstance(session.receive_frame(frame(type="invocationresult", invocation_id=first))[0], Ignored)
    assert session.close() == [second]
    assert session.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError):
        session.begin_call("w::c", None)


def test_begin_call_refuses_payloads_that_are_not_json() -> None:
    session = started()
    with pytest.raises(ValueError):
        session.begin_call("w::a", float("inf"))
    assert session.pending_calls == 0


def test_replies() -> None:
    session = started()
    sync = InvokeFunction("f", None, invocation_id="c1")
    assert json.loads(session.reply(sync, result={"b": 1, "a": 2}) or "") == {
        "type": "invocationresult",
        "invocation_id": "c1",
        "function_id": "f",
        "result": {"a": 2, "b": 1},
    }
    assert json.loads(session.reply(sync, result=ABSENT) or "") == {
        "type": "invocationresult",
        "invocation_id": "c1",
        "function_id": "f",
    }
    err = {"code": "function_not_found", "message": "no"}
    assert json.loads(session.reply(sync, error=err) or "")["error"] == err
    bad = json.loads(session.reply(sync, result=float("nan")) or "")
    assert bad["error"]["code"] == "serialization_error"
    void = InvokeFunction("f", None, action=Action("void"))
    assert session.reply(void, result=1) is None
    assert session.reply(InvokeFunction("f"), result=1) is None  # no invocation_id: nobody waits
    session.close()
    assert session.reply(sync, result=1) is None  # the worker is gone


def test_ping_answers_pong_and_misc_frames_are_ignored() -> None:
    session = started()
    assert session.receive_frame(frame(type="ping")) == [Outgoing('{"type":"pong"}')]
    for wire, reason in [
        (frame(type="pong"), "unexpected"),
        (frame(type="workerregistered", worker_id="a", reattach_token="b"), "unexpected"),
        (frame(type="registertriggertype", id="webhook"), "trigger_type_provider"),
        (frame(type="triggerregistrationresult", id="t"), "unexpected"),
        (frame(type="observerack", id="o"), "unsupported_type"),
    ]:
        events = session.receive_frame(wire)
        assert len(events) == 1 and isinstance(events[0], Ignored) and events[0].reason == reason
    assert session.receive_frame(frame(type="reattach", previous_worker_id="p", reattach_token="t")) == [
        Reattach("p", "t")
    ]


def test_malformed_frames_raise_and_leave_the_state_alone() -> None:
    session = started(max_protocol_errors=3)
    for _ in range(2):
        with pytest.raises(FrameError):
            session.receive_frame("{nope")
    assert session.state is SessionState.CONNECTING and session.close_reason is None
    with pytest.raises(FrameError) as info:
        session.receive_frame(frame(type="invokefunction", function_id=1, invocation_id="c9"))
    assert session.close_reason is not None and session.close_reason[0] == 1008
    frames = [json.loads(f) for f in session.error_frames(info.value)]
    assert frames[0]["type"] == "error" and frames[0]["error"]["code"] == "PROTOCOL_ERROR"
    assert frames[1] == {
        "type": "invocationresult",
        "invocation_id": "c9",
        "error": {"code": "deserialization_error", "message": info.value.message},
    }
    assert session.protocol_errors == 3


def test_closing_keeps_answers_and_drops_new_requests() -> None:
    session = started()
    invocation_id, _ = session.begin_call("w::fn", None)
    session.start_close(1001, "bye")
    assert session.state is SessionState.CLOSING and session.close_reason == (1001, "bye")
    assert not session.can_call
    assert session.receive_frame(frame(type="registerfunction", id="late")) == [
        Ignored("closing", "registerfunction")
    ]
    answer = session.receive_frame(frame(type="invocationresult", invocation_id=invocation_id, result=1))
    assert answer == [InvocationResult(invocation_id, result=1)]
    session.start_close()  # idempotent
    assert session.close() == []
    assert session.receive_frame(frame(type="ping")) == [Ignored("closed", "frame after close")]
