"""Pure encoding and decoding of worker protocol frames (JSON text, one message per frame).

``decode`` turns one WebSocket frame (text, or bytes holding UTF-8 JSON, as the reference
engine accepts) into a :mod:`message <gateway.protocol.messages>` or an :class:`Ignored`
decision, and raises :class:`FrameError` for anything malformed. It never raises anything
else, whatever the input (the fuzz tests hold it to that). Unknown fields are ignored and
unknown ``type`` values are dropped, as the reference's serde does; the SDKs send extra
fields (Node adds ``message_type``; Python 0.25 adds ``observe``/``caller``).

``encode`` produces compact JSON with sorted object keys (:func:`gateway.jsonutil.dumps`), the
way the reference engine returns objects. Optional fields that are ``None`` are left out,
except ``InvocationResult.result``, where JSON ``null`` and "no result" differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import RemoteProtocolError
from gateway.jsonutil import dumps
from gateway.protocol.messages import (
    ABSENT,
    Action,
    ErrorFrame,
    Ignored,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
)

__all__ = ["TELEMETRY_PREFIXES", "FrameError", "decode", "encode"]

#: Binary frames with these 4-byte prefixes are OpenTelemetry exports, not protocol messages.
TELEMETRY_PREFIXES: Final = (b"OTLP", b"LOGS", b"MTRC")

#: Types the 0.25 SDK speaks only to an engine that advertises ``observe.v1`` (we do not), plus
#: the engine-bound ``registerservice`` no SDK sends. Dropped without counting as errors.
_UNSUPPORTED_TYPES: Final = frozenset(
    {
        "observe",
        "unobserve",
        "observeresult",
        "observerstatechanged",
        "functionregistered",
        "observeradded",
        "observerremoved",
        "observerack",
        "invocationsobserved",
        "localinvocationstats",
        "registerservice",
        "registrationrejected",
    }
)


class FrameError(RemoteProtocolError):
    """A frame the peer should not have sent. ``reason`` is a bounded metrics label.

    When the broken frame was recognisably a call (an ``invokefunction`` with a usable
    ``invocation_id``), ``invocation_id``/``function_id`` are set so the engine can answer that
    call with an error instead of leaving the caller to time out.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        invocation_id: str | None = None,
        function_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.invocation_id = invocation_id
        self.function_id = function_id


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def decode(frame: str | bytes, *, max_bytes: int | None = None) -> Message | Ignored:
    """Decode one frame. Raises :class:`FrameError` (and nothing else) on malformed input."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raw = bytes(frame)
        if raw[:4] in TELEMETRY_PREFIXES:
            return Ignored("telemetry", "telemetry bytes on the control socket")
        if max_bytes is not None and len(raw) > max_bytes:
            raise FrameError(f"message of {len(raw)} bytes exceeds {max_bytes}", reason="too_large")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError(f"binary frame is not UTF-8 JSON: {exc.reason}", reason="bad_utf8") from None
    elif isinstance(frame, str):
        text = frame
        if max_bytes is not None and len(text) > max_bytes:
            raise FrameError(f"message of {len(text)} characters exceeds {max_bytes}", reason="too_large")
    else:
        raise FrameError(f"unsupported frame type {type(frame).__name__}", reason="bad_frame")
    try:
        obj = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else "nesting too deep"
        raise FrameError(f"invalid JSON: {detail}"[:300], reason="bad_json") from None
    if not isinstance(obj, dict):
        raise FrameError(f"a message must be a JSON object, got {_kind(obj)}", reason="not_object")
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        raise FrameError("message has no string 'type' field", reason="missing_type")
    parser = _PARSERS.get(mtype)
    if parser is None:
        if mtype in _UNSUPPORTED_TYPES:
            return Ignored("unsupported_type", mtype)
        return Ignored("unknown_type", mtype[:64])
    return parser(obj)


# -- field helpers ----------------------------------------------------------------------


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _req_str(obj: dict[str, Any], name: str, mtype: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str):
        what = "missing" if v is None else f"a {_kind(v)}, expected a string"
        raise FrameError(f"{mtype}.{name} is {what}", reason="bad_field")
    return v


def _opt_str(obj: dict[str, Any], name: str, mtype: str) -> str | None:
    v = obj.get(name)
    if v is None or isinstance(v, str):
        return v
    raise FrameError(f"{mtype}.{name} is a {_kind(v)}, expected a string", reason="bad_field")


# -- parsers, one per type -------------------------------------------------------------


def _register_function(o: dict[str, Any]) -> RegisterFunction:
    t = "registerfunction"
    return RegisterFunction(
        id=_req_str(o, "id", t),
        description=_opt_str(o, "description", t),
        request_format=o.get("request_format"),
        response_format=o.get("response_format"),
        metadata=o.get("metadata"),
        invocation=o.get("invocation"),
    )


def _unregister_function(o: dict[str, Any]) -> UnregisterFunction:
    return UnregisterFunction(id=_req_str(o, "id", "unregisterfunction"))


def _register_trigger(o: dict[str, Any]) -> RegisterTrigger:
    t = "registertrigger"
    return RegisterTrigger(
        id=_req_str(o, "id", t),
        trigger_type=_req_str(o, "trigger_type", t),
        function_id=_req_str(o, "function_id", t),
        config=o.get("config"),
        metadata=o.get("metadata"),
        namespace=_opt_str(o, "namespace", t),
        trigger_namespace=_opt_str(o, "trigger_namespace", t),
    )


def _unregister_trigger(o: dict[str, Any]) -> UnregisterTrigger:
    t = "unregistertrigger"
    return UnregisterTrigger(id=_req_str(o, "id", t), trigger_type=_opt_str(o, "trigger_type", t))


def _register_trigger_type(o: dict[str, Any]) -> RegisterTriggerType:
    t = "registertriggertype"
    return RegisterTriggerType(id=_req_str(o, "id", t), description=_opt_str(o, "description", t))


def _unregister_trigger_type(o: dict[str, Any]) -> UnregisterTriggerType:
    return UnregisterTriggerType(id=_req_str(o, "id", "unregistertriggertype"))


def _reattach(o: dict[str, Any]) -> Reattach:
    t = "reattach"
    return Reattach(
        previous_worker_id=_req_str(o, "previous_worker_id", t),
        reattach_token=_opt_str(o, "reattach_token", t),
    )


def _trigger_registration_result(o: dict[str, Any]) -> TriggerRegistrationResult:
    t = "triggerregistrationresult"
    error = o.get("error")
    return TriggerRegistrationResult(
        id=_req_str(o, "id", t),
        trigger_type=_opt_str(o, "trigger_type", t),
        function_id=_opt_str(o, "function_id", t),
        error=error if isinstance(error, dict) else None,
    )


def _action(v: Any, mtype: str) -> Action | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise FrameError(f"{mtype}.action is a {_kind(v)}, expected an object", reason="bad_field")
    kind = v.get("type")
    if kind == "void":
        return Action("void")
    if kind == "enqueue":
        queue = v.get("queue")
        if not isinstance(queue, str):
            raise FrameError(f"{mtype}.action.queue must be a string", reason="bad_field")
        return Action("enqueue", queue)
    raise FrameError(f"{mtype}.action.type {str(kind)[:40]!r} is not void or enqueue", reason="bad_field")


def _invoke_function(o: dict[str, Any]) -> InvokeFunction:
    t = "invokefunction"
    raw_id = o.get("invocation_id")
    raw_fn = o.get("function_id")
    try:
        return InvokeFunction(
            function_id=_req_str(o, "function_id", t),
            data=o.get("data"),
            invocation_id=_opt_str(o, "invocation_id", t),
            action=_action(o.get("action"), t),
            metadata=o.get("metadata"),
            traceparent=_opt_str(o, "traceparent", t),
            baggage=_opt_str(o, "baggage", t),
            namespace=_opt_str(o, "namespace", t),
        )
    except FrameError as exc:
        # Keep what identifies the call, so the caller gets an answer instead of a timeout.
        if isinstance(raw_id, str):
            exc.invocation_id = raw_id
            exc.function_id = raw_fn if isinstance(raw_fn, str) else None
        raise


def _invocation_result(o: dict[str, Any]) -> InvocationResult:
    t = "invocationresult"
    error = o.get("error")
    return InvocationResult(
        invocation_id=_req_str(o, "invocation_id", t),
        function_id=_opt_str(o, "function_id", t),
        result=o.get("result", ABSENT),
        error=error if error else None,  # the SDK rule: a falsy error means success
        traceparent=_opt_str(o, "traceparent", t),
    )


def _worker_registered(o: dict[str, Any]) -> WorkerRegistered:
    t = "workerregistered"
    return WorkerRegistered(
        worker_id=_req_str(o, "worker_id", t), reattach_token=_req_str(o, "reattach_token", t)
    )


def _error_frame(o: dict[str, Any]) -> ErrorFrame:
    err = o.get("error")
    if not isinstance(err, dict):
        raise FrameError("error.error must be an object", reason="bad_field")
    return ErrorFrame(code=str(err.get("code", "")), message=str(err.get("message", "")))


_PARSERS: Final[dict[str, Callable[[dict[str, Any]], Message]]] = {
    "registerfunction": _register_function,
    "unregisterfunction": _unregister_function,
    "registertrigger": _register_trigger,
    "unregistertrigger": _unregister_trigger,
    "registertriggertype": _register_trigger_type,
    "unregistertriggertype": _unregister_trigger_type,
    "reattach": _reattach,
    "triggerregistrationresult": _trigger_registration_result,
    "invokefunction": _invoke_function,
    "invocationresult": _invocation_result,
    "ping": lambda o: Ping(),
    "pong": lambda o: Pong(),
    "workerregistered": _worker_registered,
    "error": _error_frame,
}


# -- encoding ----------------------------------------------------------------------------


def _put(d: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        d[name] = value


def _to_wire(msg: Message) -> dict[str, Any]:
    """The JSON object for one message (optional ``None`` fields omitted)."""
    d: dict[str, Any] = {"type": msg.type}
    if isinstance(msg, InvocationResult):
        d["invocation_id"] = msg.invocation_id
        _put(d, "function_id", msg.function_id)
        if msg.error is not None:
            d["error"] = msg.error
        elif msg.result is not ABSENT:
            d["result"] = msg.result
        _put(d, "traceparent", msg.traceparent)
    elif isinstance(msg, InvokeFunction):
        d["function_id"] = msg.function_id
        d["data"] = msg.data
        _put(d, "invocation_id", msg.invocation_id)
        if msg.action is not None:
            d["action"] = {"type": msg.action.type}
            _put(d["action"], "queue", msg.action.queue)
        for name in ("metadata", "traceparent", "baggage", "namespace"):
            _put(d, name, getattr(msg, name))
    elif isinstance(msg, ErrorFrame):
        d["error"] = {"code": msg.code, "message": msg.message}
    elif isinstance(msg, Ping | Pong):
        pass
    else:
        for name in msg.__dataclass_fields__:
            if name != "type":
                _put(d, name, getattr(msg, name))
    return d


def encode(msg: Message) -> str:
    """Compact JSON text with sorted keys. Raises ValueError/TypeError for non-JSON values."""
    return dumps(_to_wire(msg))
