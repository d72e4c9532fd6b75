"""Real ``iii-sdk`` workers using the state functions and ``state`` triggers through the gateway."""

from __future__ import annotations

from typing import Any

from iii import TriggerAction

from tests.integration.sdk_helpers import (
    Inbox,
    bind,
    call,
    connect_worker,
    disconnect,
    expect_error,
    roundtrip,
    running_gateway,
    shutdown,
)


async def test_state_trigger_with_condition_delivers_events_in_order() -> None:
    async with running_gateway() as gw:
        seen = Inbox()
        conditions = Inbox()
        worker = await connect_worker(gw.worker_url, "stateful")
        writer = await connect_worker(gw.worker_url, "writer")

        def cond(event: Any) -> bool:
            conditions.put(event["new_value"])
            # Skip odd counters; a deleted key (new_value null) passes.
            return event["new_value"] is None or event["new_value"]["n"] % 2 == 0

        try:
            worker.register_function("demo::on_state", seen.recorder({"seen": True}))
            worker.register_function("demo::cond", cond)
            bind(
                worker,
                "state",
                "demo::on_state",
                {"scope": "users", "key": "alice", "condition_function_id": "demo::cond"},
                metadata={"note": "trigger-meta"},
            )
            await roundtrip(worker)

            first = await call(writer, "state::set", {"scope": "users", "key": "alice", "value": {"n": 0}})
            assert first["old_value"] is None and first["new_value"] == {"n": 0}
            for n in range(1, 11):  # fire-and-forget writes, as fast as the SDK sends them
                assert (
                    await call(
                        writer,
                        "state::set",
                        {"scope": "users", "key": "alice", "value": {"n": n}},
                        action=TriggerAction.Void(),
                    )
                    is None
                )
            # A write elsewhere matches nothing.
            await call(writer, "state::set", {"scope": "users", "key": "bob", "value": {"n": 99}})
            updated = await call(
                writer,
                "state::update",
                {"scope": "users", "key": "alice", "ops": [{"type": "increment", "path": "n", "by": 2}]},
            )
            assert updated["new_value"] == {"n": 12}
            await call(writer, "state::delete", {"scope": "users", "key": "alice"})

            events = [await seen.get() for _ in range(8)]  # 0,2,4,6,8,10,12 and the delete
            kinds = [e["event_type"] for e, _ in events]
            assert kinds == ["state:created"] + ["state:updated"] * 6 + ["state:deleted"]
            assert [e["new_value"] for e, _ in events[:-1]] == [{"n": n} for n in range(0, 13, 2)]
            assert [e["old_value"] for e, _ in events[1:3]] == [{"n": 1}, {"n": 3}]
            revisions = [e["revision"] for e, _ in events]
            assert revisions == sorted(revisions)
            assert all(meta == {"note": "trigger-meta"} for _, meta in events)
            assert events[0][0]["scope"] == "users" and events[0][0]["key"] == "alice"
            # The condition saw every write to alice (13) and nothing else.
            assert [await conditions.get() for _ in range(13)] == [{"n": n} for n in range(0, 11)] + [
                {"n": 12},
                None,
            ]
            assert seen.empty() and conditions.empty()
        finally:
            await shutdown(worker, writer)


async def test_state_reads_and_reference_error_codes() -> None:
    async with running_gateway(max_value_bytes=1024) as gw:
        worker = await connect_worker(gw.worker_url, "state-user")
        try:
            assert await call(worker, "state::get", {"scope": "s", "key": "missing"}) is None
            await call(worker, "state::set", {"scope": "s", "key": "k", "value": [1, 2]})
            assert await call(worker, "state::get", {"scope": "s", "key": "k"}) == [1, 2]
            assert await call(worker, "state::list", {"scope": "s"}) == [[1, 2]]
            assert await call(worker, "state::list_groups", {}) == {"groups": ["s"]}

            no_scope = await expect_error(worker, "state::set", {"key": "k", "value": 1})
            assert no_scope.code == "deserialization_error"
            assert "scope" in no_scope.message

            too_big = await expect_error(
                worker, "state::set", {"scope": "s", "key": "big", "value": "x" * 2000}
            )
            assert too_big.code == "VALUE_TOO_LARGE"
            assert await call(worker, "state::get", {"scope": "s", "key": "big"}) is None
        finally:
            await shutdown(worker)


async def test_trigger_registration_failure_is_reported_and_the_worker_keeps_going() -> None:
    async with running_gateway() as gw:
        worker = await connect_worker(gw.worker_url, "bad-config")
        try:
            worker.register_function("demo::fn", lambda e: None)
            bind(worker, "state", "demo::fn", {"scope": 123})
            bind(worker, "nosuchtype", "demo::fn", {})
            await roundtrip(worker)
            assert len(gw.triggers) == 0
            assert await call(worker, "state::set", {"scope": "s", "key": "k", "value": 1}) is not None
        finally:
            await shutdown(worker)


async def test_a_workers_triggers_leave_with_it() -> None:
    async with running_gateway() as gw:
        seen = Inbox()
        worker = await connect_worker(gw.worker_url, "leaver")
        writer = await connect_worker(gw.worker_url, "writer")
        try:
            worker.register_function("demo::fn", seen.recorder())
            trigger = bind(worker, "state", "demo::fn", {"scope": "s"})
            await roundtrip(worker)
            assert len(gw.triggers) == 1
            trigger.unregister()
            await roundtrip(worker)
            assert len(gw.triggers) == 0
            bind(worker, "state", "demo::fn", {"scope": "s"})
            await roundtrip(worker)
            await disconnect(gw, worker)
            assert len(gw.triggers) == 0
            await call(writer, "state::set", {"scope": "s", "key": "k", "value": 1})
            assert seen.empty()
        finally:
            await shutdown(writer)
