"""Real ``iii-sdk`` workers against the gateway: functions, calls, errors, namespaces, failover."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from iii import TriggerAction

from tests.integration.sdk_helpers import (
    Inbox,
    call,
    connect_worker,
    disconnect,
    expect_error,
    roundtrip,
    running_gateway,
    shutdown,
)


async def test_worker_calls_a_function_hosted_by_another_worker() -> None:
    async with running_gateway() as gw:
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function("math::add", lambda data: {"sum": data["a"] + data["b"]})
            await roundtrip(host)
            assert await call(caller, "math::add", {"a": 2, "b": 40}) == {"sum": 42}
            # The host's hello reached the builtin: the gateway knows who it is.
            names = {w["name"] for w in gw.hub.workers()}
            assert {"host", "caller"} <= names
            assert [w["functions"] for w in gw.hub.workers() if w["name"] == "host"] == [["math::add"]]
        finally:
            await shutdown(host, caller)


async def test_errors_arrive_as_invocation_error_with_reference_codes() -> None:
    async with running_gateway() as gw:
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")

        def boom(data: Any) -> Any:
            raise ValueError("kaboom")

        try:
            host.register_function("demo::boom", boom)
            await roundtrip(host)

            missing = await expect_error(caller, "nope::nope", {})
            assert missing.code == "function_not_found"
            assert missing.message == "Function nope::nope not found in namespace default."

            failed = await expect_error(caller, "demo::boom", {"x": 1})
            assert failed.code == "invocation_failed"
            assert failed.message == "kaboom"
            assert failed.stacktrace is not None and "ValueError: kaboom" in failed.stacktrace

            queued = await expect_error(caller, "demo::boom", {}, action=TriggerAction.Enqueue(queue="jobs"))
            assert queued.code == "enqueue_error"
        finally:
            await shutdown(host, caller)


async def test_void_call_runs_the_function_and_returns_none_at_once() -> None:
    async with running_gateway() as gw:
        inbox = Inbox()
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function("demo::record", inbox.recorder({"ignored": True}))
            await roundtrip(host)
            assert await call(caller, "demo::record", {"n": 1}, action=TriggerAction.Void()) is None
            data, _ = await inbox.get()
            assert data == {"n": 1}
            # A void call of a missing function is dropped quietly; the connection stays usable.
            assert await call(caller, "nope::x", {}, action=TriggerAction.Void()) is None
            assert await call(caller, "demo::record", {"n": 2}) == {"ignored": True}
        finally:
            await shutdown(host, caller)


async def test_none_result_and_metadata_reach_the_caller_and_the_handler() -> None:
    async with running_gateway() as gw:
        inbox = Inbox()
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function("demo::none", inbox.recorder(None))
            await roundtrip(host)
            assert await call(caller, "demo::none", {"k": "v"}, metadata={"tenant": "t1"}) is None
            data, metadata = await inbox.get()
            assert data == {"k": "v"}
            assert metadata == {"tenant": "t1"}
        finally:
            await shutdown(host, caller)


async def test_invocation_stopped_when_the_hosting_worker_leaves_mid_call() -> None:
    async with running_gateway() as gw:
        started = threading.Event()
        release = threading.Event()

        def hang(data: Any) -> Any:
            started.set()
            release.wait(30)
            return "too late"

        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function("demo::hang", hang)
            await roundtrip(host)
            pending = asyncio.create_task(expect_error(caller, "demo::hang", {}))
            assert await asyncio.to_thread(started.wait, 10)
            await shutdown(host)
            err = await pending
            assert err.code == "invocation_stopped"
            assert err.message == "Invocation stopped"
            # Its functions left with it.
            gone = await expect_error(caller, "demo::hang", {})
            assert gone.code == "function_not_found"
        finally:
            release.set()
            await shutdown(caller)


async def test_namespaced_worker_functions_live_in_its_namespace() -> None:
    async with running_gateway() as gw:
        inbox = Inbox()
        orders = await connect_worker(gw.worker_url, "orders-worker", namespace="orders")
        plain = await connect_worker(gw.worker_url, "plain")
        try:
            orders.register_function("ord::fn", inbox.recorder("from orders"))
            await roundtrip(orders)
            # The namespaced worker reaches its own function (the SDK sends namespace=orders) ...
            assert await call(orders, "ord::fn", {}) == "from orders"
            # ... a default-namespace caller does not, unless it names the namespace.
            miss = await expect_error(plain, "ord::fn", {})
            assert miss.code == "function_not_found"
            assert "namespace default" in miss.message
            assert await call(plain, "ord::fn", {}, namespace="orders") == "from orders"
            assert [w["namespace"] for w in gw.hub.workers() if w["name"] == "orders-worker"] == ["orders"]
        finally:
            await shutdown(orders, plain)


async def test_newest_registration_serves_and_the_previous_one_takes_over() -> None:
    async with running_gateway() as gw:
        first = await connect_worker(gw.worker_url, "first")
        second = await connect_worker(gw.worker_url, "second")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            first.register_function("dup::fn", lambda data: "first")
            await roundtrip(first)
            second.register_function("dup::fn", lambda data: "second")
            await roundtrip(second)
            assert await call(caller, "dup::fn", {}) == "second"
            await disconnect(gw, second)
            assert await call(caller, "dup::fn", {}) == "first"
        finally:
            await shutdown(first, caller)


async def test_unregistering_a_function_removes_it() -> None:
    async with running_gateway() as gw:
        host = await connect_worker(gw.worker_url, "host")
        try:
            ref = host.register_function("tmp::fn", lambda data: 1)
            await roundtrip(host)
            assert await call(host, "tmp::fn", {}) == 1
            ref.unregister()
            await roundtrip(host)
            assert (await expect_error(host, "tmp::fn", {})).code == "function_not_found"
        finally:
            await shutdown(host)


async def test_large_messages_one_frame_and_fragmented() -> None:
    """5 MB goes as one frame, 20 MB as a fragmented message (the SDK splits above 16 MiB)."""
    async with running_gateway() as gw:
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function(
                "big::len", lambda data: {"len": len(data["blob"]), "tail": data["blob"][-3:]}
            )
            await roundtrip(host)
            for size in (5_000_000, 20_000_000):
                blob = "x" * (size - 3) + "end"
                assert await call(caller, "big::len", {"blob": blob}, timeout_ms=60_000) == {
                    "len": size,
                    "tail": "end",
                }
        finally:
            await shutdown(host, caller)


async def test_handler_calls_back_into_the_gateway_nested() -> None:
    async with running_gateway() as gw:
        host = await connect_worker(gw.worker_url, "host")
        caller = await connect_worker(gw.worker_url, "caller")
        try:
            host.register_function("n::inner", lambda data: data * 2)

            async def outer(data: Any) -> Any:
                return {"inner": await host.trigger_async({"function_id": "n::inner", "payload": data + 1})}

            host.register_function("n::outer", outer)
            await roundtrip(host)
            assert await call(caller, "n::outer", 20) == {"inner": 42}
        finally:
            await shutdown(host, caller)
