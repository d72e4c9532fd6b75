"""The worker protocol on the wire, with a raw aiohttp WebSocket client as the worker.

These pin what an SDK cannot easily provoke: exact frames, malformed and oversized input,
reattach, close codes, and that one misbehaving connection never disturbs another.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.integration.sdk_helpers import (
    RunningGateway,
    call,
    connect_worker,
    expect_error,
    roundtrip,
    running_gateway,
    shutdown,
)

TIMEOUT = 10.0


class RawWorker:
    """A hand-driven worker connection."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.registered: dict[str, Any] = {}

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=TIMEOUT)
        assert msg.type == WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        return frame

    async def call(self, function_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
        invocation_id = str(uuid.uuid4())
        await self.send(
            {
                "type": "invokefunction",
                "function_id": function_id,
                "data": data,
                "invocation_id": invocation_id,
                **extra,
            }
        )
        frame = await self.recv()
        assert frame["type"] == "invocationresult" and frame["invocation_id"] == invocation_id, frame
        return frame


@asynccontextmanager
async def raw_worker(gw: RunningGateway, **kwargs: Any) -> AsyncIterator[RawWorker]:
    async with aiohttp.ClientSession() as http, http.ws_connect(gw.worker_url + "/", **kwargs) as ws:
        worker = RawWorker(ws)
        worker.registered = await worker.recv()
        yield worker


async def test_first_frame_is_workerregistered_and_deflate_is_negotiated() -> None:
    async with running_gateway() as gw, raw_worker(gw, compress=15) as w:
        frame = w.registered
        assert frame["type"] == "workerregistered"
        assert set(frame) == {"type", "worker_id", "reattach_token"}  # no "features" (observe stays off)
        uuid.UUID(frame["worker_id"])
        uuid.UUID(frame["reattach_token"])
        assert w.ws.compress == 15
        assert gw.hub.connection(frame["worker_id"]) is not None


async def test_json_ping_ws_ping_and_unknown_types() -> None:
    async with running_gateway() as gw, raw_worker(gw, autoping=False) as w:
        await w.send({"type": "ping"})
        assert await w.recv() == {"type": "pong"}
        await w.ws.ping(b"hi")
        pong = await w.ws.receive(timeout=TIMEOUT)
        assert pong.type == WSMsgType.PONG and pong.data == b"hi"
        # Unknown types and unknown fields are ignored; the connection stays usable.
        await w.send({"type": "observe", "id": "x"})
        await w.send({"type": "frobnicate", "x": 1})
        answer = await w.call("nope::x", {}, message_type="invokefunction", caller={"any": 1})
        assert answer["error"]["code"] == "function_not_found"
        assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="unknown_type") == 1


async def test_malformed_frames_get_error_frames_and_are_counted() -> None:
    async with running_gateway() as gw, raw_worker(gw) as w:
        for bad, reason in [
            ("not json", "bad_json"),
            ("[1, 2]", "not_object"),
            ('{"no": "type"}', "missing_type"),
            ('{"type": "registerfunction", "id": 7}', "bad_field"),
            ("NaN", "bad_json"),
        ]:
            await w.send(bad)
            frame = await w.recv()
            assert frame["type"] == "error", (bad, frame)
            assert frame["error"]["code"] == "PROTOCOL_ERROR"
            assert frame["error"]["message"]
            assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason=reason) >= 1

        # A broken call that still names its invocation_id gets an answer, not a timeout.
        await w.send({"type": "invokefunction", "function_id": 5, "invocation_id": "abc"})
        assert (await w.recv())["type"] == "error"
        answer = await w.recv()
        assert answer == {
            "type": "invocationresult",
            "invocation_id": "abc",
            "error": {
                "code": "deserialization_error",
                "message": "invokefunction.function_id is a number, expected a string",
            },
        }
        # Still fine afterwards.
        assert (await w.call("nope::x"))["error"]["code"] == "function_not_found"


async def test_binary_frames_json_and_telemetry() -> None:
    async with running_gateway() as gw, raw_worker(gw) as w:
        await w.ws.send_bytes(b"OTLP" + b"\x00\x01")  # telemetry on the wrong socket: dropped
        await w.ws.send_bytes(b"\xff\xfe")  # not UTF-8
        frame = await w.recv()
        assert frame["type"] == "error"
        await w.ws.send_bytes(
            json.dumps(
                {
                    "type": "invokefunction",
                    "function_id": "state::get",
                    "data": {"scope": "s", "key": "k"},
                    "invocation_id": "i-1",
                }
            ).encode()
        )
        answer = await w.recv()
        # A missing key: the result is "no result" (omitted), which the SDK reads as None.
        assert answer == {"type": "invocationresult", "invocation_id": "i-1", "function_id": "state::get"}
        assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="telemetry") == 1
        assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="bad_utf8") == 1


async def test_oversized_message_closes_only_that_connection() -> None:
    async with running_gateway(max_message_bytes=4096) as gw, raw_worker(gw) as good, raw_worker(gw) as bad:
        conn = gw.hub.connection(bad.registered["worker_id"])
        assert conn is not None
        await bad.send({"type": "registerfunction", "id": "x" * 8000})
        closing = await bad.ws.receive(timeout=TIMEOUT)
        assert closing.type == WSMsgType.CLOSE
        assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
        assert (await good.call("nope::x"))["error"]["code"] == "function_not_found"
        assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="too_large") == 1


async def test_a_flood_of_garbage_ends_in_a_policy_close() -> None:
    async with running_gateway() as gw, raw_worker(gw) as w:
        for _ in range(1000):
            await w.send("}")
        codes = []
        while True:
            msg = await w.ws.receive(timeout=TIMEOUT)
            if msg.type != WSMsgType.TEXT:
                codes.append(msg.data)
                break
        assert codes == [aiohttp.WSCloseCode.POLICY_VIOLATION]
        assert gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="bad_json") == 1000


async def test_trigger_registration_failure_frame() -> None:
    async with running_gateway() as gw, raw_worker(gw) as w:
        await w.send(
            {
                "type": "registertrigger",
                "id": "t1",
                "trigger_type": "cron",
                "function_id": "f",
                "config": {"expression": "nope"},
            }
        )
        frame = await w.recv()
        assert frame["type"] == "triggerregistrationresult"
        assert (frame["id"], frame["trigger_type"], frame["function_id"]) == ("t1", "cron", "f")
        assert frame["error"]["code"] == "trigger_registration_failed"
        assert "nope" in frame["error"]["message"]
        assert len(gw.triggers) == 0


async def test_reattach_retires_the_previous_connection() -> None:
    async with running_gateway() as gw, raw_worker(gw) as old:
        await old.send({"type": "registerfunction", "id": "re::fn"})
        await old.send(
            {
                "type": "registertrigger",
                "id": "t1",
                "trigger_type": "state",
                "function_id": "re::fn",
                "config": {"scope": "s"},
            }
        )
        await old.call("nope::barrier")
        old_id, token = old.registered["worker_id"], old.registered["reattach_token"]
        async with raw_worker(gw) as impostor:
            await impostor.send({"type": "reattach", "previous_worker_id": old_id, "reattach_token": "wrong"})
            await impostor.call("nope::barrier")
            assert gw.hub.connection(old_id) is not None
            assert (
                gw.counter("iii_gateway_protocol_errors_total", protocol="worker", reason="bad_reattach") == 1
            )
        async with raw_worker(gw) as new:
            await new.send({"type": "reattach", "previous_worker_id": old_id, "reattach_token": token})
            await new.send({"type": "registerfunction", "id": "re::fn"})
            await new.send(
                {
                    "type": "registertrigger",
                    "id": "t1",
                    "trigger_type": "state",
                    "function_id": "re::fn",
                    "config": {"scope": "s"},
                }
            )
            await new.call("nope::barrier")
            closing = await old.ws.receive(timeout=TIMEOUT)
            assert closing.type == WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
            assert gw.hub.connection(old_id) is None
            info = gw.functions.resolve("re::fn")
            assert info is not None and info.owner == new.registered["worker_id"]
            trigger = gw.triggers.get("t1")
            assert trigger is not None and trigger.owner == new.registered["worker_id"]


async def test_engine_to_worker_calls_and_stray_results() -> None:
    async with running_gateway() as gw, raw_worker(gw) as host:
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            await host.send({"type": "registerfunction", "id": "raw::fn"})
            await host.call("nope::barrier")
            pending = asyncio.create_task(call(caller, "raw::fn", {"q": 1}, metadata={"m": 2}))
            invoke = await host.recv()
            assert invoke["type"] == "invokefunction" and invoke["function_id"] == "raw::fn"
            assert invoke["data"] == {"q": 1} and invoke["metadata"] == {"m": 2}
            uuid.UUID(invoke["invocation_id"])
            # A result nobody waits for is dropped and counted; then the real answer.
            await host.send({"type": "invocationresult", "invocation_id": str(uuid.uuid4()), "result": 0})
            await host.send(
                {
                    "type": "invocationresult",
                    "invocation_id": invoke["invocation_id"],
                    "result": {"b": 1, "a": 2},
                }
            )
            assert await pending == {"a": 2, "b": 1}
            assert (
                gw.counter(
                    "iii_gateway_protocol_errors_total", protocol="worker", reason="unknown_invocation"
                )
                == 1
            )
            # An error body that is not an object still reaches the caller as an error.
            pending = asyncio.create_task(expect_error(caller, "raw::fn", {}))
            invoke = await host.recv()
            await host.send(
                {"type": "invocationresult", "invocation_id": invoke["invocation_id"], "error": "broken"}
            )
            err = await pending
            assert (err.code, err.message) == ("invocation_failed", "broken")
        finally:
            await shutdown(caller)


async def test_a_misbehaving_worker_does_not_disturb_another() -> None:
    async with running_gateway() as gw, raw_worker(gw) as bad:
        good = await connect_worker(gw.worker_url, "good")
        try:
            good.register_function("good::echo", lambda data: data)
            await roundtrip(good)
            await bad.send({"type": "registerfunction", "id": "bad::never"})
            await bad.call("nope::barrier")
            # A call into the silent worker times out on the caller's side only ...
            stuck = await expect_error(good, "bad::never", {}, timeout_ms=300)
            assert stuck.code == "TIMEOUT"
            # ... while the bad worker sprays garbage, the good one keeps working.
            for i in range(50):
                await bad.send("{garbage" if i % 2 else json.dumps({"type": 42}))
                assert await call(good, "good::echo", {"i": i}) == {"i": i}
            assert gw.hub.statistics()["workers_connected"] == 2
        finally:
            await shutdown(good)


async def test_close_sends_going_away_and_otel_is_drained() -> None:
    async with (
        running_gateway() as gw,
        aiohttp.ClientSession() as http,
        http.ws_connect(gw.worker_url + "/otel") as otel,
    ):
        await otel.send_bytes(b"OTLP{}")
        await otel.send_bytes(b"LOGS{}")
        async with raw_worker(gw) as w:
            await w.call("nope::barrier")
            await gw.hub.close()
            closing = await w.ws.receive(timeout=TIMEOUT)
            assert closing.type == WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
            closing = await otel.receive(timeout=TIMEOUT)
            assert closing.type == WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
            assert gw.hub.statistics()["workers_connected"] == 0
