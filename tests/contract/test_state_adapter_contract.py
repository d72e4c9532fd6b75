"""The behaviour every StateAdapter owes the state module, checked once per adapter.

Adapters are listed in ``conftest.py`` (``ADAPTER_FIXTURES``). Events are collected with a
sink and awaited (not assumed synchronous), so backends that deliver changes from a stream
(Redis) run the same tests.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from gateway.errors import ValueTooLarge
from gateway.state.adapter import Change, ChangeKind, Entry, StateAdapter
from gateway.state.ops import append_op, increment_op, merge_op, set_op
from tests.contract.conftest import ENGINE_ID, AdapterCase


class Events:
    """A change sink that lets a test wait for the n-th change."""

    def __init__(self, adapter: StateAdapter) -> None:
        self.changes: list[Change] = []
        self._arrived = asyncio.Event()
        adapter.subscribe(self)

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        self._arrived.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[Change]:
        async with asyncio.timeout(timeout):
            while len(self.changes) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.changes[:count]


async def test_set_get_delete_round_trip(case: AdapterCase) -> None:
    a = case.adapter
    assert a.ready()
    assert await a.get("s", "k") is None
    first = await a.set("s", "k", {"n": 1})
    assert (first.existed, first.old_value, first.new_value) == (False, None, {"n": 1})
    got = await a.get("s", "k")
    assert got == Entry({"n": 1}, first.revision)
    second = await a.set("s", "k", [1, "two"])
    assert (second.existed, second.old_value, second.new_value) == (True, {"n": 1}, [1, "two"])
    gone = await a.delete("s", "k")
    assert (gone.existed, gone.old_value, gone.new_value) == (True, [1, "two"], None)
    assert await a.get("s", "k") is None
    assert await a.list("s") == []


async def test_stored_null_is_not_missing(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    created = await a.set("s", "null", None)
    assert created.existed is False
    entry = await a.get("s", "null")
    assert entry is not None and entry.value is None
    assert await a.list("s") == [None]
    again = await a.set("s", "null", 5)
    assert (again.existed, again.old_value) == (True, None)
    deleted = await a.delete("s", "null")
    assert (deleted.existed, deleted.old_value) == (True, 5)
    kinds = [c.kind for c in await events.wait(3)]
    assert kinds == [ChangeKind.CREATED, ChangeKind.UPDATED, ChangeKind.DELETED]


async def test_delete_of_missing_key_succeeds_and_fires(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    before = a.info().revision
    result = await a.delete("s", "nope")
    assert (result.existed, result.old_value, result.new_value) == (False, None, None)
    assert result.revision > before
    (change,) = await events.wait(1)
    assert (change.kind, change.scope, change.key) == (ChangeKind.DELETED, "s", "nope")
    assert (change.old_value, change.new_value, change.revision) == (None, None, result.revision)
    assert await a.list_groups() == []


async def test_revisions_strictly_increase_and_match_events(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    results = [
        await a.set("s", "a", 1),
        await a.set("s", "a", 2),
        await a.update("s", "b", [increment_op("n", 1)]),
        await a.delete("s", "a"),
        await a.delete("s", "a"),
        await a.update("s", "b", []),
    ]
    revisions = [r.revision for r in results]
    assert revisions == sorted(set(revisions)), revisions
    changes = await events.wait(len(results))
    assert [c.revision for c in changes] == revisions
    entry = await a.get("s", "b")
    assert entry is not None and entry.revision == revisions[-1]
    assert a.info().revision >= revisions[-1]
    assert a.info().epoch and a.info().epoch == a.info().epoch


async def test_events_carry_kind_values_and_origin(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    await a.set("s", "k", {"v": 1})
    await a.set("s", "k", {"v": 2}, origin="edge-7")
    await a.update("s", "k", [set_op("w", True)])
    await a.delete("s", "k")
    got = [(c.kind, c.old_value, c.new_value, c.origin) for c in await events.wait(4)]
    assert got == [
        (ChangeKind.CREATED, None, {"v": 1}, ENGINE_ID),
        (ChangeKind.UPDATED, {"v": 1}, {"v": 2}, "edge-7"),
        (ChangeKind.UPDATED, {"v": 2}, {"v": 2, "w": True}, ENGINE_ID),
        (ChangeKind.DELETED, {"v": 2, "w": True}, None, ENGINE_ID),
    ]
    assert all((c.scope, c.key) == ("s", "k") for c in events.changes)


async def test_update_increment_on_missing_key_creates_object(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    result = await a.update("s", "counter", [increment_op("count", 1)])
    assert (result.existed, result.old_value, result.new_value, result.errors) == (
        False,
        None,
        {"count": 1},
        (),
    )
    (change,) = await events.wait(1)
    assert change.kind is ChangeKind.CREATED and change.new_value == {"count": 1}
    entry = await a.get("s", "counter")
    assert entry == Entry({"count": 1}, result.revision)


async def test_update_records_failing_op_and_still_writes(case: AdapterCase) -> None:
    a = case.adapter
    await a.set("s", "doc", {"name": "x", "n": 1})
    result = await a.update("s", "doc", [increment_op("n", 2), increment_op("name", 1), merge_op({"ok": 1})])
    assert result.new_value == {"name": "x", "n": 3, "ok": 1}
    assert [(e.op_index, e.code) for e in result.errors] == [(1, "increment.not_number")]
    entry = await a.get("s", "doc")
    assert entry is not None and entry.value == {"name": "x", "n": 3, "ok": 1}


async def test_update_with_no_ops_writes_empty_object(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    result = await a.update("s", "empty", [])
    assert (result.existed, result.new_value) == (False, {})
    (change,) = await events.wait(1)
    assert (change.kind, change.new_value) == (ChangeKind.CREATED, {})
    assert await a.get("s", "empty") == Entry({}, result.revision)


async def test_update_over_max_value_bytes_writes_nothing(case: AdapterCase) -> None:
    a = case.adapter
    events = Events(a)
    revision = (await a.set("s", "big", "abc")).revision
    await events.wait(1)
    with pytest.raises(ValueTooLarge) as info:
        await a.update("s", "big", [append_op("x" * 100)], max_value_bytes=50)
    assert info.value.limit == 50 and info.value.size > 50
    with pytest.raises(ValueTooLarge):
        await a.update("s", "new", [], max_value_bytes=1)  # "{}" is 2 bytes
    assert (await a.get("s", "big")) == Entry("abc", revision)
    assert await a.get("s", "new") is None
    assert a.info().revision >= revision
    # at the limit is allowed: '"abcx"' is 6 bytes
    ok = await a.update("s", "big", [append_op("x")], max_value_bytes=6)
    assert ok.new_value == "abcx"
    _, change = await events.wait(2)  # only the accepted update fired
    assert change.revision == ok.revision and len(events.changes) == 2


async def test_list_order(case: AdapterCase) -> None:
    a = case.adapter
    for key in ["c", "a", "b", "d"]:
        await a.set("s", key, key.upper())
    await a.set("s", "a", "A2")  # overwrite keeps the position
    await a.delete("s", "c")
    await a.set("s", "c", "C2")  # delete + set moves to the end
    values = await a.list("s")
    items = await a.items("s")
    if case.ordered:
        assert values == ["A2", "B", "D", "C2"]
        assert [k for k, _ in items] == ["a", "b", "d", "c"]
    else:
        assert sorted(values) == sorted(["A2", "B", "D", "C2"])
    assert [e.value for _, e in items] == values
    assert all(e.revision > 0 for _, e in items)


async def test_list_groups_sorted_and_without_emptied_scopes(case: AdapterCase) -> None:
    a = case.adapter
    assert await a.list_groups() == []
    for scope in ["b", "a", "é", "Z", "B"]:
        await a.set(scope, "k", 1)
    await a.set("gone", "k1", 1)
    await a.set("gone", "k2", 1)
    await a.delete("gone", "k1")
    assert "gone" in await a.list_groups()
    await a.delete("gone", "k2")
    await a.update("also", "k", [])
    await a.delete("also", "k")
    assert await a.list_groups() == ["B", "Z", "a", "b", "é"]
    assert await a.list("gone") == []


ODD_NAMES = ["", "/", "..", ".", "a/b", "A", "a", "é", "日本語", "nul\x00byte", " ", "%2F", "x" * 300]


async def test_odd_scope_and_key_names(case: AdapterCase) -> None:
    a = case.adapter
    for i, name in enumerate(ODD_NAMES):
        await a.set(name, name, i)
        await a.set("keys", name, i)
    for i, name in enumerate(ODD_NAMES):
        own = await a.get(name, name)
        assert own is not None and own.value == i
        entry = await a.get("keys", name)
        assert entry is not None and entry.value == i
    assert await a.list_groups() == sorted({*ODD_NAMES, "keys"})
    got = await a.items("keys")
    assert {k: e.value for k, e in got} == {name: i for i, name in enumerate(ODD_NAMES)}
    assert await a.get("A", "a") is None and await a.get("a", "A") is None


async def test_concurrent_increments_sum_exactly(case: AdapterCase) -> None:
    a = case.adapter
    results = await asyncio.gather(*(a.update("s", "n", [increment_op("count", 1)]) for _ in range(500)))
    entry = await a.get("s", "n")
    assert entry is not None and entry.value == {"count": 500}
    assert sorted(r.new_value["count"] for r in results) == list(range(1, 501))
    assert len({r.revision for r in results}) == 500


EXACT_VALUES: list[Any] = [
    2**63,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    [],
    {},
    {"a": [], "b": {}, "c": [[]]},
    0.1,
    -0.0,
    1e300,
    "",
    "ünïcødé \u2028 \U0001f600",
    True,
    False,
    [1, 1.0, "1", None],
]


async def test_values_round_trip_exactly(case: AdapterCase) -> None:
    a = case.adapter
    for i, value in enumerate(EXACT_VALUES):
        await a.set("v", str(i), value)
    for i, value in enumerate(EXACT_VALUES):
        entry = await a.get("v", str(i))
        assert entry is not None
        assert entry.value == value and type(entry.value) is type(value), (value, entry.value)
        if isinstance(value, list) and value:
            assert [type(x) for x in entry.value] == [type(x) for x in value]
    assert await a.list("v") == EXACT_VALUES
    big = await a.update("v", "big", [increment_op("n", 2**62), increment_op("n", 2**62)])
    assert big.new_value == {"n": 2**63} and type(big.new_value["n"]) is int
    entry = await a.get("v", "big")
    assert entry is not None and entry.value == {"n": 2**63}


async def test_returned_values_do_not_alias_the_store(case: AdapterCase) -> None:
    a = case.adapter
    value: dict[str, Any] = {"list": [1, 2], "obj": {"x": 1}}
    original = copy.deepcopy(value)
    await a.set("s", "k", value)
    value["list"].append(3)  # the caller keeps using its own object
    got = await a.get("s", "k")
    assert got is not None and got.value == original
    got.value["obj"]["x"] = 99
    (await a.list("s"))[0]["list"].clear()
    (await a.items("s"))[0][1].value["new"] = 1
    result = await a.update("s", "k", [set_op("y", 2)])
    result.new_value["obj"]["x"] = -1
    result.old_value["list"].append(4)
    entry = await a.get("s", "k")
    assert entry is not None and entry.value == {**original, "y": 2}


async def test_close_is_idempotent(case: AdapterCase) -> None:
    a = case.adapter
    await a.set("s", "k", 1)
    await a.close()
    await a.close()
    assert not a.ready()
