"""The state trigger type: matching, conditions, per-key order, bounds, timeouts."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from gateway.functions import FunctionRegistry
from gateway.metrics import Metrics
from gateway.state.adapter import Change, ChangeKind
from gateway.state.triggers import StateTriggerType
from gateway.triggers.registry import Trigger, TriggerRegistrationError, TriggerRegistry

_rev = 0


def change(scope: str = "s", key: str = "k", new: Any = 1, kind: ChangeKind = ChangeKind.UPDATED) -> Change:
    global _rev
    _rev += 1
    return Change(scope, key, kind, None, new, _rev, "engine-a")


class Recorder:
    """A handler function that records the events it was given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.metadata: list[Any] = []

    async def __call__(self, payload: Any, metadata: Any) -> Any:
        self.events.append(payload)
        self.metadata.append(metadata)
        return {}


def setup(**kw: Any) -> tuple[FunctionRegistry, TriggerRegistry, StateTriggerType, Metrics]:
    metrics = Metrics()
    functions = FunctionRegistry(metrics=metrics)
    triggers = TriggerRegistry()
    st = StateTriggerType(functions, metrics=metrics, **kw)
    triggers.add_type(st)
    return functions, triggers, st, metrics


def bind(triggers: TriggerRegistry, tid: str, fn: str, config: Any, metadata: Any = None) -> None:
    triggers.register(Trigger(tid, "state", fn, config, metadata=metadata, owner="w"))


async def test_scope_and_key_filters_are_exact_and_independent() -> None:
    functions, triggers, st, _ = setup()
    recs = {name: Recorder() for name in ("all", "scope", "key", "both", "empty")}
    for name, rec in recs.items():
        functions.register(name, rec, owner="w")
    bind(triggers, "t-all", "all", {})
    bind(triggers, "t-scope", "scope", {"scope": "users"})
    bind(triggers, "t-key", "key", {"key": "profile", "scope": None})
    bind(triggers, "t-both", "both", {"scope": "users", "key": "profile", "extra": 1})
    bind(triggers, "t-empty", "empty", {"scope": ""})
    for c in (
        change("users", "profile"),
        change("Users", "profile"),
        change("orders", "profile"),
        change("", "x"),
    ):
        st(c)
    await st.drain()
    seen = {name: [(e["scope"], e["key"]) for e in rec.events] for name, rec in recs.items()}
    assert len(seen["all"]) == 4
    assert seen["scope"] == [("users", "profile")]
    assert sorted(seen["key"]) == sorted([("users", "profile"), ("Users", "profile"), ("orders", "profile")])
    assert seen["both"] == [("users", "profile")]
    assert seen["empty"] == [("", "x")]


async def test_event_payload_has_reference_fields_plus_revision_and_origin() -> None:
    functions, triggers, st, _ = setup()
    rec = Recorder()
    functions.register("h", rec, owner="w")
    bind(triggers, "t", "h", {}, metadata={"note": "m"})
    c = change("users", "u1", {"a": 1}, ChangeKind.CREATED)
    st(c)
    await st.drain()
    assert rec.events == [
        {
            "type": "state",
            "event_type": "state:created",
            "scope": "users",
            "key": "u1",
            "old_value": None,
            "new_value": {"a": 1},
            "revision": c.revision,
            "origin": "engine-a",
        }
    ]
    assert rec.metadata == [{"note": "m"}]


@pytest.mark.parametrize(
    ("verdict", "runs"), [(False, False), (True, True), (None, True), (0, True), ("", True), ("no", True)]
)
async def test_only_json_false_skips(verdict: Any, runs: bool) -> None:
    functions, triggers, st, _ = setup()
    rec = Recorder()
    functions.register("h", rec, owner="w")

    async def cond(payload: Any, metadata: Any) -> Any:
        return verdict

    functions.register("cond", cond, owner="w")
    bind(triggers, "t", "h", {"condition_function_id": "cond"})
    st(change())
    await st.drain()
    assert bool(rec.events) is runs


async def test_condition_error_or_missing_condition_skips() -> None:
    functions, triggers, st, metrics = setup()
    rec = Recorder()
    functions.register("h", rec, owner="w")

    async def broken(payload: Any, metadata: Any) -> Any:
        raise RuntimeError("nope")

    functions.register("broken", broken, owner="w")
    bind(triggers, "t1", "h", {"condition_function_id": "broken"})
    bind(triggers, "t2", "h", {"condition_function_id": "does-not-exist"})
    st(change())
    await st.drain()
    assert rec.events == []
    assert (
        metrics.registry.get_sample_value(
            "iii_gateway_triggers_fired_total", {"type": "state", "outcome": "condition_error"}
        )
        == 2
    )


async def test_events_of_one_key_arrive_in_revision_order_under_concurrency() -> None:
    functions, triggers, st, _ = setup(concurrency=8)
    rng = random.Random(7)
    seen: dict[str, list[int]] = {}

    async def handler(payload: Any, metadata: Any) -> Any:
        for _ in range(rng.randrange(5)):
            await asyncio.sleep(0)  # yield a random number of times: interleave keys
        seen.setdefault(payload["key"], []).append(payload["revision"])
        return None

    functions.register("h", handler, owner="w")
    bind(triggers, "t", "h", {})
    sent: dict[str, list[int]] = {}
    for i in range(400):
        c = change("s", f"k{i % 13}")
        sent.setdefault(c.key, []).append(c.revision)
        st(c)
    await st.drain()
    assert seen == sent


async def test_slow_handler_does_not_block_other_keys_and_queue_is_bounded() -> None:
    functions, triggers, st, metrics = setup(queue_size=5, concurrency=2)
    gate = asyncio.Event()
    fast: list[str] = []
    fast_done = asyncio.Event()

    async def handler(payload: Any, metadata: Any) -> Any:
        if payload["key"] == "slow":
            await gate.wait()
        else:
            fast.append(payload["key"])
            fast_done.set()
        return None

    functions.register("h", handler, owner="w")
    bind(triggers, "t", "h", {})
    st(change("s", "slow"))
    st(change("s", "a"))
    # "a" is delivered while "slow" still blocks one slot
    await asyncio.wait_for(fast_done.wait(), 5)
    assert fast == ["a"]
    for _ in range(10):
        st(change("s", "slow"))
    assert st.dropped == 5  # 5 queued, the other 5 dropped and counted
    assert metrics.registry.get_sample_value("iii_gateway_trigger_drops_total", {"reason": "queue_full"}) == 5
    gate.set()
    await st.drain()


async def test_handler_timeout_is_counted_and_delivery_continues() -> None:
    functions, triggers, st, metrics = setup(timeout=0.05)
    never = asyncio.Event()
    got: list[int] = []

    async def handler(payload: Any, metadata: Any) -> Any:
        if payload["new_value"] == "hang":
            await never.wait()
        got.append(payload["revision"])
        return None

    functions.register("h", handler, owner="w")
    bind(triggers, "t", "h", {})
    st(change(new="hang"))
    later = change(new="ok")
    st(later)
    await st.drain()
    assert got == [later.revision]
    assert (
        metrics.registry.get_sample_value(
            "iii_gateway_triggers_fired_total", {"type": "state", "outcome": "timeout"}
        )
        == 1
    )


async def test_disabled_triggers_drop_everything() -> None:
    functions, triggers, st, _ = setup(enabled=False)
    rec = Recorder()
    functions.register("h", rec, owner="w")
    bind(triggers, "t", "h", {})
    st(change())
    await st.drain()
    assert rec.events == []


async def test_unregister_discards_pending_and_stops_delivery() -> None:
    functions, triggers, st, _ = setup()
    rec = Recorder()
    functions.register("h", rec, owner="w")
    bind(triggers, "t", "h", {})
    triggers.unregister("t")
    st(change())
    await st.drain()
    assert rec.events == []
    assert len(triggers) == 0


@pytest.mark.parametrize(
    "config", [None, 5, "x", {"scope": 123}, {"key": ["a"]}, {"condition_function_id": 1}]
)
def test_bad_config_is_a_registration_error(config: Any) -> None:
    _, triggers, _, _ = setup()
    with pytest.raises(TriggerRegistrationError) as err:
        bind(triggers, "t", "h", config)
    assert err.value.code == "trigger_registration_failed"
    assert "Failed to parse trigger config" in err.value.message
    assert len(triggers) == 0
