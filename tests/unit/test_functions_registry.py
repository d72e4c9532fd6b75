"""FunctionRegistry: resolution by namespace, invocation errors, timeouts, owners."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import InputError, InvocationError
from gateway.functions import NO_RESULT, FunctionRegistry
from gateway.metrics import Metrics


async def echo(payload: Any, metadata: Any) -> Any:
    return {"payload": payload, "metadata": metadata}


async def test_builtin_resolves_in_every_namespace() -> None:
    reg = FunctionRegistry()
    reg.register_builtin("state::get", echo)
    assert reg.resolve("state::get", "orders") is not None
    assert await reg.invoke("state::get", 1, namespace="orders") == {"payload": 1, "metadata": None}


async def test_worker_functions_are_keyed_by_namespace() -> None:
    reg = FunctionRegistry()
    reg.register("orders::f", echo, namespace="orders", owner="w1")
    assert reg.resolve("orders::f", "orders") is not None
    assert reg.resolve("orders::f") is None
    with pytest.raises(InvocationError) as err:
        await reg.invoke("orders::f", {})
    assert err.value.code == "function_not_found"
    assert err.value.message == "Function orders::f not found in namespace default."


async def test_unregister_owner_removes_only_that_owner() -> None:
    reg = FunctionRegistry()
    reg.register("a", echo, owner="w1")
    reg.register("b", echo, owner="w2")
    gone = reg.unregister_owner("w1")
    assert [f.id for f in gone] == ["a"]
    assert reg.resolve("a") is None and reg.resolve("b") is not None
    # an owner cannot remove a function another worker re-registered since
    reg.register("b", echo, owner="w3")
    assert reg.unregister("b", owner="w2") is False
    assert reg.resolve("b") is not None


async def test_timeout_is_an_invocation_error_with_code_timeout() -> None:
    reg = FunctionRegistry(default_timeout=0.05)
    never = asyncio.Event()

    async def hang(payload: Any, metadata: Any) -> Any:
        await never.wait()

    reg.register("hang", hang, owner="w")
    with pytest.raises(InvocationError) as err:
        await reg.invoke("hang", None)
    assert err.value.code == "timeout"


async def test_handler_errors_pass_through_or_wrap() -> None:
    metrics = Metrics()
    reg = FunctionRegistry(metrics=metrics)

    async def bad_input(payload: Any, metadata: Any) -> Any:
        raise InputError("missing field `scope`")

    async def bug(payload: Any, metadata: Any) -> Any:
        raise ZeroDivisionError("boom")

    reg.register_builtin("x::input", bad_input)
    reg.register_builtin("x::bug", bug)
    with pytest.raises(InputError):
        await reg.invoke("x::input", {})
    with pytest.raises(InvocationError) as err:
        await reg.invoke("x::bug", {})
    assert err.value.code == "invocation_failed" and "boom" in err.value.message
    assert (
        metrics.registry.get_sample_value(
            "iii_gateway_invocations_total", {"kind": "builtin", "outcome": "error"}
        )
        == 2
    )


async def test_no_result_is_falsy_singleton() -> None:
    reg = FunctionRegistry()

    async def nothing(payload: Any, metadata: Any) -> Any:
        return NO_RESULT

    reg.register_builtin("n", nothing)
    assert await reg.invoke("n", None) is NO_RESULT
    assert not NO_RESULT
