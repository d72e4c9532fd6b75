"""The worker protocol codec against frames captured from the real SDKs, and its error paths."""

from __future__ import annotations

import json

import pytest

from gateway.errors import RemoteProtocolError
from gateway.protocol import (
    ABSENT,
    Action,
    ErrorFrame,
    FrameError,
    Ignored,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    WorkerRegistered,
    decode,
    encode,
)

# Worker -> engine frames as Python 0.25 and Node 0.22 send them (captures, ids shortened).
HELLO = (
    '{"function_id":"engine::workers::register","data":{"runtime":"python","version":"0.25.0",'
    '"name":"capture-worker","os":"Linux 6.18 (x86_64)","pid":15304,"isolation":null,"namespace":null,'
    '"telemetry":{"language":"C","project_name":"capture","framework":"iii-py"},'
    '"features":["observe.v1","local-dispatch.v1","large-messages.v1"]},"action":{"type":"void"},'
    '"type":"invokefunction"}'
)
CAPTURED = [
    (
        '{"id":"demo::on_state","description":"state listener","type":"registerfunction"}',
        RegisterFunction("demo::on_state", description="state listener"),
    ),
    ('{"type":"registerfunction","id":"node::on_state"}', RegisterFunction("node::on_state")),
    ('{"id":"u::fn","type":"unregisterfunction"}', UnregisterFunction("u::fn")),
    (
        '{"id":"8e0f4960","trigger_type":"state","function_id":"demo::on_state",'
        '"config":{"scope":"users","key":"alice","condition_function_id":"demo::cond"},'
        '"metadata":{"note":"trigger-meta"},"type":"registertrigger"}',
        RegisterTrigger(
            "8e0f4960",
            "state",
            "demo::on_state",
            {"scope": "users", "key": "alice", "condition_function_id": "demo::cond"},
            metadata={"note": "trigger-meta"},
        ),
    ),
    (
        '{"type":"registertrigger","function_id":"node::on_state","config":{"scope":"orders","key":"o1"},'
        '"id":"1aa0b728","message_type":"registertrigger","trigger_type":"state"}',
        RegisterTrigger("1aa0b728", "state", "node::on_state", {"scope": "orders", "key": "o1"}),
    ),
    (
        '{"id":"07e8","trigger_type":"state","function_id":"ord::fn","config":{"scope":"o"},'
        '"namespace":"orders","type":"registertrigger"}',
        RegisterTrigger("07e8", "state", "ord::fn", {"scope": "o"}, namespace="orders"),
    ),
    (
        '{"id":"1f6f4abd","type":"unregistertrigger","trigger_type":"cron"}',
        UnregisterTrigger("1f6f4abd", "cron"),
    ),
    ('{"id":"1f6f4abd","type":"unregistertrigger"}', UnregisterTrigger("1f6f4abd")),
    (
        '{"function_id":"state::set","data":{"scope":"users","key":"alice","value":{"n":1}},'
        '"invocation_id":"564a8cac","type":"invokefunction"}',
        InvokeFunction(
            "state::set", {"scope": "users", "key": "alice", "value": {"n": 1}}, invocation_id="564a8cac"
        ),
    ),
    (
        '{"function_id":"state::set","data":{"scope":"users","key":"alice","value":{"n":2}},'
        '"action":{"type":"void"},"type":"invokefunction"}',
        InvokeFunction(
            "state::set", {"scope": "users", "key": "alice", "value": {"n": 2}}, action=Action("void")
        ),
    ),
    (
        '{"function_id":"demo::cond","data":{},"invocation_id":"88b8154a",'
        '"action":{"type":"enqueue","queue":"jobs"},"type":"invokefunction"}',
        InvokeFunction("demo::cond", {}, invocation_id="88b8154a", action=Action("enqueue", "jobs")),
    ),
    (
        '{"function_id":"state::get","data":{"scope":"o","key":"k"},"invocation_id":"1e84",'
        '"namespace":"orders","traceparent":"00-ab-cd-03","type":"invokefunction"}',
        InvokeFunction(
            "state::get",
            {"scope": "o", "key": "k"},
            invocation_id="1e84",
            namespace="orders",
            traceparent="00-ab-cd-03",
        ),
    ),
    (
        '{"invocation_id":"0760","function_id":"demo::cond","result":true,"traceparent":"00-ea-16-03",'
        '"type":"invocationresult"}',
        InvocationResult("0760", "demo::cond", result=True, traceparent="00-ea-16-03"),
    ),
    (
        '{"invocation_id":"739d","function_id":"demo::boom","error":{"code":"invocation_failed",'
        '"message":"kaboom","stacktrace":"Traceback"},"type":"invocationresult"}',
        InvocationResult(
            "739d",
            "demo::boom",
            error={"code": "invocation_failed", "message": "kaboom", "stacktrace": "Traceback"},
        ),
    ),
    (
        '{"type":"reattach","previous_worker_id":"6418aacc","reattach_token":"c5e5d4e6"}',
        Reattach("6418aacc", "c5e5d4e6"),
    ),
    (
        '{"id":"webhook","description":"demo type","type":"registertriggertype"}',
        RegisterTriggerType("webhook", "demo type"),
    ),
    (
        '{"type":"triggerregistrationresult","id":"3ae9","trigger_type":"webhook","function_id":"w::fn",'
        '"error":{"code":"trigger_registration_failed","message":"bad config"}}',
        TriggerRegistrationResult(
            "3ae9", "webhook", "w::fn", {"code": "trigger_registration_failed", "message": "bad config"}
        ),
    ),
    ('{"type":"ping"}', Ping()),
    ('{"type":"pong"}', Pong()),
]


@pytest.mark.parametrize(("frame", "expected"), CAPTURED)
def test_captured_frames_decode(frame: str, expected: object) -> None:
    assert decode(frame) == expected
    assert decode(frame.encode()) == expected  # binary frames holding JSON are accepted too


def test_hello_decodes_as_a_void_call() -> None:
    msg = decode(HELLO)
    assert isinstance(msg, InvokeFunction)
    assert msg.is_void and msg.invocation_id is None
    assert isinstance(msg.data, dict) and msg.data["namespace"] is None


def test_result_null_differs_from_no_result() -> None:
    null = decode('{"type":"invocationresult","invocation_id":"a","result":null}')
    missing = decode('{"type":"invocationresult","invocation_id":"a"}')
    assert isinstance(null, InvocationResult) and null.result is None
    assert isinstance(missing, InvocationResult) and missing.result is ABSENT
    assert json.loads(encode(null)) == {"type": "invocationresult", "invocation_id": "a", "result": None}
    assert json.loads(encode(missing)) == {"type": "invocationresult", "invocation_id": "a"}


def test_a_falsy_error_means_success_as_in_the_sdk() -> None:
    msg = decode('{"type":"invocationresult","invocation_id":"a","error":null,"result":1}')
    assert isinstance(msg, InvocationResult) and msg.error is None and msg.result == 1


@pytest.mark.parametrize(
    ("msg", "wire"),
    [
        (
            WorkerRegistered("w-1", "t-1"),
            '{"reattach_token":"t-1","type":"workerregistered","worker_id":"w-1"}',
        ),
        (
            InvokeFunction(
                "demo::on_state", {"z": 1, "a": {"y": 2, "b": 3}}, invocation_id="i-1", metadata={"note": 1}
            ),
            '{"data":{"a":{"b":3,"y":2},"z":1},"function_id":"demo::on_state","invocation_id":"i-1",'
            '"metadata":{"note":1},"type":"invokefunction"}',
        ),
        (
            InvocationResult("i-2", "state::set", result={"old_value": None, "new_value": {"n": 1}}),
            '{"function_id":"state::set","invocation_id":"i-2","result":{"new_value":{"n":1},"old_value":null},'
            '"type":"invocationresult"}',
        ),
        (
            InvocationResult("i-3", "nope::nope", error={"code": "function_not_found", "message": "m"}),
            '{"error":{"code":"function_not_found","message":"m"},"function_id":"nope::nope","invocation_id":"i-3",'
            '"type":"invocationresult"}',
        ),
        (
            ErrorFrame("PROTOCOL_ERROR", "bad"),
            '{"error":{"code":"PROTOCOL_ERROR","message":"bad"},"type":"error"}',
        ),
        (Pong(), '{"type":"pong"}'),
    ],
)
def test_encode_is_compact_with_sorted_keys(msg: object, wire: str) -> None:
    assert encode(msg) == wire  # type: ignore[arg-type]
    assert decode(wire) == msg


def test_encode_refuses_non_json() -> None:
    with pytest.raises(ValueError):
        encode(InvocationResult("i", result=float("nan")))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "bad_json"),
        ("{", "bad_json"),
        ("NaN", "bad_json"),
        ('{"type":"ping","x":Infinity}', "bad_json"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
        ("[]", "not_object"),
        ('"registerfunction"', "not_object"),
        ("{}", "missing_type"),
        ('{"type":7}', "missing_type"),
        ('{"type":"registerfunction"}', "bad_field"),
        ('{"type":"registerfunction","id":null}', "bad_field"),
        ('{"type":"registerfunction","id":"x","description":5}', "bad_field"),
        ('{"type":"registertrigger","id":"t","function_id":"f"}', "bad_field"),
        ('{"type":"invokefunction","function_id":"f","action":"void"}', "bad_field"),
        ('{"type":"invokefunction","function_id":"f","action":{"type":"later"}}', "bad_field"),
        ('{"type":"invokefunction","function_id":"f","action":{"type":"enqueue"}}', "bad_field"),
        ('{"type":"invocationresult","result":1}', "bad_field"),
        ('{"type":"reattach"}', "bad_field"),
        ('{"type":"error","error":"x"}', "bad_field"),
        (b"\xc3\x28", "bad_utf8"),
    ],
)
def test_malformed_frames_raise_frame_error_with_a_reason(frame: str | bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode(frame)
    assert info.value.reason == reason
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.message


def test_a_broken_call_keeps_its_invocation_id_for_the_answer() -> None:
    with pytest.raises(FrameError) as info:
        decode('{"type":"invokefunction","function_id":["x"],"invocation_id":"inv-9"}')
    assert info.value.invocation_id == "inv-9"
    assert info.value.function_id is None
    with pytest.raises(FrameError) as info:
        decode('{"type":"invokefunction","function_id":"f","invocation_id":"inv-8","namespace":3}')
    assert (info.value.invocation_id, info.value.function_id) == ("inv-8", "f")


def test_size_limit() -> None:
    frame = '{"type":"ping","pad":"' + "x" * 100 + '"}'
    assert decode(frame, max_bytes=1000) == Ping()
    with pytest.raises(FrameError) as info:
        decode(frame, max_bytes=50)
    assert info.value.reason == "too_large"
    with pytest.raises(FrameError):
        decode(frame.encode(), max_bytes=50)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"OTLP\x00\x01binary", "telemetry"),
        (b"LOGS{}", "telemetry"),
        (b"MTRC{}", "telemetry"),
        ('{"type":"localinvocationstats","window_ms":866,"functions":[]}', "unsupported_type"),
        ('{"type":"observe","id":"o"}', "unsupported_type"),
        ('{"type":"somethingnew","x":1}', "unknown_type"),
    ],
)
def test_frames_that_are_ignored(frame: str | bytes, reason: str) -> None:
    result = decode(frame)
    assert isinstance(result, Ignored) and result.reason == reason
