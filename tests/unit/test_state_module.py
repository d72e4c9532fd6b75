"""The six state functions, checked against the reference engine's behaviour.

Runs the real StateModule on the real kv adapter (in memory) and the real state trigger type.
The reference tests each case mirrors are named in the docstrings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.kv.store import KvAdapter
from gateway.config.settings import KvSettings
from gateway.errors import GatewayError, InputError
from gateway.functions import NO_RESULT, FunctionRegistry
from gateway.metrics import Metrics
from gateway.state.adapter import Change
from gateway.state.module import StateModule


class Env:
    def __init__(self, adapter: KvAdapter, module: StateModule, functions: FunctionRegistry) -> None:
        self.adapter = adapter
        self.module = module
        self.functions = functions
        self.changes: list[Change] = []
        adapter.subscribe(self.changes.append)

    async def call(self, fn: str, payload: Any) -> Any:
        return await self.functions.invoke(f"state::{fn}", payload)


async def make_env(max_value_bytes: int | None = None) -> AsyncIterator[Env]:
    metrics = Metrics()
    adapter = KvAdapter(KvSettings(store_method="in_memory"), engine_id="engine-1", metrics=metrics)
    await adapter.start()
    functions = FunctionRegistry(metrics=metrics)
    module = StateModule(adapter, max_value_bytes=max_value_bytes, metrics=metrics)
    module.register(functions)
    try:
        yield Env(adapter, module, functions)
    finally:
        await adapter.close()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in make_env():
        yield e


@pytest.fixture
async def small_env() -> AsyncIterator[Env]:
    async for e in make_env(max_value_bytes=10):
        yield e


# -- set / get (state.rs 1237-1274, structs.rs 90-97) -----------------------------------------


async def test_set_then_get_round_trip(env: Env) -> None:
    res = await env.call("set", {"scope": "users", "key": "u1", "value": {"name": "Alice"}})
    assert res["old_value"] is None and res["new_value"] == {"name": "Alice"}
    assert isinstance(res["revision"], int) and res["revision"] > 0
    assert await env.call("get", {"scope": "users", "key": "u1"}) == {"name": "Alice"}


async def test_data_is_an_alias_of_value(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "data": 7})
    assert await env.call("get", {"scope": "s", "key": "k"}) == 7


async def test_value_and_data_together_is_a_duplicate_field(env: Env) -> None:
    with pytest.raises(InputError) as err:
        await env.call("set", {"scope": "s", "key": "k", "value": 1, "data": 2})
    assert err.value.code == "deserialization_error"
    assert err.value.message == "Failed to deserialize input for state::set: duplicate field `value`"


async def test_overwrite_reports_old_value_and_updated_event(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": 1})
    res = await env.call("set", {"scope": "s", "key": "k", "value": 2})
    assert (res["old_value"], res["new_value"]) == (1, 2)
    assert [c.kind.value for c in env.changes] == ["state:created", "state:updated"]
    assert env.changes[1].revision == res["revision"] > env.changes[0].revision


async def test_get_missing_is_no_result_and_stored_null_is_null(env: Env) -> None:
    assert await env.call("get", {"scope": "s", "key": "nope"}) is NO_RESULT
    await env.call("set", {"scope": "s", "key": "n", "value": None})
    assert await env.call("get", {"scope": "s", "key": "n"}) is None
    res = await env.call("set", {"scope": "s", "key": "n", "value": 1})
    assert res["old_value"] is None
    assert env.changes[-1].kind.value == "state:updated"  # a stored null exists


async def test_same_value_set_still_fires(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": 1})
    await env.call("set", {"scope": "s", "key": "k", "value": 1})
    assert len(env.changes) == 2


# -- delete (state.rs 1314, 1346) ------------------------------------------------------------------


async def test_delete_returns_old_value_and_removes(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": {"a": 1}})
    assert await env.call("delete", {"scope": "s", "key": "k"}) == {"a": 1}
    assert await env.call("get", {"scope": "s", "key": "k"}) is NO_RESULT
    last = env.changes[-1]
    assert (last.kind.value, last.old_value, last.new_value) == ("state:deleted", {"a": 1}, None)


async def test_delete_missing_succeeds_and_still_fires(env: Env) -> None:
    assert await env.call("delete", {"scope": "s", "key": "ghost"}) is NO_RESULT
    assert [(c.kind.value, c.old_value) for c in env.changes] == [("state:deleted", None)]


# -- list / list_groups (state.rs 1359-1403, 1752) -------------------------------------------------


async def test_list_returns_values_in_insertion_order(env: Env) -> None:
    for k, v in [("b", 1), ("a", 2), ("c", 3)]:
        await env.call("set", {"scope": "s", "key": k, "value": v})
    await env.call("set", {"scope": "s", "key": "b", "value": 10})  # overwrite keeps position
    assert await env.call("list", {"scope": "s"}) == [10, 2, 3]
    assert await env.call("list", {"scope": "empty"}) == []


async def test_list_groups_sorted_bytewise_and_only_non_empty(env: Env) -> None:
    for scope in ["é", "a", "Z", "B", "gamma"]:
        await env.call("set", {"scope": scope, "key": "k", "value": 1})
    await env.call("delete", {"scope": "gamma", "key": "k"})
    assert await env.call("list_groups", {}) == {"groups": ["B", "Z", "a", "é"]}
    assert await env.call("list_groups", {"ignored": True}) == {"groups": ["B", "Z", "a", "é"]}


# -- input decoding (serde behaviour) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "payload", "message"),
    [
        ("set", {"key": "k", "value": 1}, "missing field `scope`"),
        ("set", {"scope": "s", "key": "k"}, "missing field `value`"),
        ("get", {"scope": 1, "key": "k"}, "invalid type: integer `1`, expected a string"),
        ("get", None, "invalid type: null, expected a map"),
        ("delete", {"scope": "s", "key": None}, "invalid type: null, expected a string"),
        ("list", "s", 'invalid type: string "s", expected a map'),
        ("update", {"scope": "s", "key": "k", "ops": {}}, "invalid type: map, expected a sequence"),
        ("list_groups", None, "invalid type: null, expected a map"),
    ],
)
async def test_bad_input_is_deserialization_error(env: Env, fn: str, payload: Any, message: str) -> None:
    with pytest.raises(InputError) as err:
        await env.call(fn, payload)
    assert err.value.code == "deserialization_error"
    assert err.value.message == f"Failed to deserialize input for state::{fn}: {message}"
    assert env.changes == []


async def test_array_payload_is_positional(env: Env) -> None:
    await env.call("set", ["s", "k", 5])
    assert await env.call("get", ["s", "k"]) == 5


async def test_unknown_fields_are_ignored(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": 1, "ttl": 5})
    assert await env.call("get", {"scope": "s", "key": "k", "x": None}) == 1


# -- size guard (state.rs 1018) ----------------------------------------------------------------------


async def test_set_over_max_value_bytes_is_rejected_without_event(small_env: Env) -> None:
    with pytest.raises(GatewayError) as err:
        await small_env.call("set", {"scope": "s", "key": "k", "value": "a string that is too long"})
    assert err.value.code == "VALUE_TOO_LARGE"
    assert err.value.message == "value of 27 bytes exceeds the configured max_value_bytes limit of 10"
    assert small_env.changes == []
    await small_env.call("set", {"scope": "s", "key": "k", "value": 1})
    await small_env.call("set", {"scope": "s", "key": "e", "value": "12345678"})  # exactly 10 bytes passes


async def test_update_result_over_max_value_bytes_is_rejected(small_env: Env) -> None:
    await small_env.call("set", {"scope": "s", "key": "k", "value": []})
    before = len(small_env.changes)
    with pytest.raises(GatewayError) as err:
        await small_env.call(
            "update",
            {"scope": "s", "key": "k", "ops": [{"type": "append", "path": "", "value": "long long value"}]},
        )
    assert err.value.code == "VALUE_TOO_LARGE"
    assert await small_env.call("get", {"scope": "s", "key": "k"}) == []
    assert len(small_env.changes) == before


# -- update (state.rs 1608; update_e2e 146) -----------------------------------------------------------


async def test_update_keeps_other_fields_and_omits_empty_errors(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": {"count": 1, "name": "x"}})
    res = await env.call(
        "update", {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "count", "value": 42}]}
    )
    assert res["old_value"] == {"count": 1, "name": "x"}
    assert res["new_value"] == {"count": 42, "name": "x"}
    assert "errors" not in res


async def test_update_missing_key_creates_even_when_ops_fail(env: Env) -> None:
    res = await env.call(
        "update",
        {"scope": "s", "key": "new", "ops": [{"type": "merge", "path": "__proto__", "value": {"a": 1}}]},
    )
    assert res["old_value"] is None and res["new_value"] == {}
    assert res["errors"][0]["op_index"] == 0
    assert res["errors"][0]["code"] == "merge.path.proto_polluted"
    assert env.changes[-1].kind.value == "state:created"


async def test_update_with_malformed_op_writes_nothing(env: Env) -> None:
    with pytest.raises(InputError) as err:
        await env.call("update", {"scope": "s", "key": "k", "ops": [{"type": "explode", "path": "x"}]})
    assert err.value.message.startswith("Failed to deserialize input for state::update: ")
    assert await env.call("get", {"scope": "s", "key": "k"}) is NO_RESULT
    assert env.changes == []


async def test_legacy_seed_op_form_is_accepted(env: Env) -> None:
    await env.call("set", {"scope": "s", "key": "k", "value": {"count": 1}})
    res = await env.call(
        "update", {"scope": "s", "key": "k", "ops": [{"increment": {"field": "count", "by": 2}}]}
    )
    assert res["new_value"] == {"count": 3}


# -- adapter failures map to the reference codes (state.rs 1667-1732) ------------------------------


class BrokenAdapter(KvAdapter):
    """The real kv adapter with every operation failing as a backend would."""

    async def set(self, *a: Any, **k: Any) -> Any:
        raise GatewayError("disk on fire", code="STORAGE_ERROR")

    async def get(self, *a: Any, **k: Any) -> Any:
        raise GatewayError("disk on fire", code="STORAGE_ERROR")

    async def update(self, *a: Any, **k: Any) -> Any:
        raise GatewayError("disk on fire", code="STORAGE_ERROR")

    async def list(self, *a: Any, **k: Any) -> Any:
        raise GatewayError("disk on fire", code="STORAGE_ERROR")


@pytest.mark.parametrize(
    ("fn", "payload", "code", "prefix"),
    [
        ("set", {"scope": "s", "key": "k", "value": 1}, "SET_ERROR", "Failed to set value"),
        ("get", {"scope": "s", "key": "k"}, "GET_ERROR", "Failed to get value"),
        ("update", {"scope": "s", "key": "k", "ops": []}, "UPDATE_ERROR", "Failed to update value"),
        ("list", {"scope": "s"}, "LIST_ERROR", "Failed to list values"),
    ],
)
async def test_adapter_failures_use_reference_codes(fn: str, payload: Any, code: str, prefix: str) -> None:
    adapter = BrokenAdapter(KvSettings(store_method="in_memory"), engine_id="e")
    await adapter.start()
    functions = FunctionRegistry()
    StateModule(adapter).register(functions)
    with pytest.raises(GatewayError) as err:
        await functions.invoke(f"state::{fn}", payload)
    assert err.value.code == code
    assert err.value.message == f"{prefix}: disk on fire"
    await adapter.close()
