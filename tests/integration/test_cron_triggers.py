"""``cron`` triggers bound by real ``iii-sdk`` workers (every-second schedules keep these short)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from gateway.triggers.registry import Trigger, TriggerRegistrationError
from tests.integration.sdk_helpers import (
    Inbox,
    bind,
    call,
    connect_worker,
    disconnect,
    roundtrip,
    running_gateway,
    shutdown,
)


async def test_cron_fires_with_the_reference_payload_and_metadata() -> None:
    async with running_gateway() as gw:
        ticks = Inbox()
        worker = await connect_worker(gw.worker_url, "ticker")
        try:
            worker.register_function("cron::tick", ticks.recorder({"ok": True}))
            trigger = bind(worker, "cron", "cron::tick", {"expression": "* * * * * *"}, metadata={"job": "t"})
            await roundtrip(worker)
            [binding] = list(gw.triggers)
            first, meta = await ticks.get()
            second, _ = await ticks.get()
            assert set(first) == {"trigger", "job_id", "scheduled_time", "actual_time"}
            assert first["trigger"] == "cron" and first["job_id"] == binding.id
            assert meta == {"job": "t"}
            scheduled = [datetime.fromisoformat(e["scheduled_time"]) for e in (first, second)]
            assert all(t.microsecond == 0 and t.utcoffset() == timedelta(0) for t in scheduled)
            assert scheduled[1] - scheduled[0] >= timedelta(seconds=1)
            assert datetime.fromisoformat(first["actual_time"]) >= scheduled[0]
            assert gw.counter("iii_gateway_triggers_fired_total", type="cron", outcome="ok") >= 1

            trigger.unregister()
            await roundtrip(worker)
            assert gw.cron.statistics()["cron_jobs"] == 0
        finally:
            await shutdown(worker)


async def test_cron_condition_false_skips_the_handler() -> None:
    async with running_gateway() as gw:
        handled = Inbox()
        checked = Inbox()
        worker = await connect_worker(gw.worker_url, "conditional")

        def never(event: Any) -> bool:
            checked.put(event)
            return False

        try:
            worker.register_function("cron::handler", handled.recorder())
            worker.register_function("cron::never", never)
            bind(
                worker,
                "cron",
                "cron::handler",
                {"expression": "* * * * * *", "condition_function_id": "cron::never"},
            )
            await roundtrip(worker)
            first = await checked.get()
            second = await checked.get()
            assert first["trigger"] == "cron" and first["scheduled_time"] < second["scheduled_time"]
            # Fires run one at a time per binding: the first fire ended before the second
            # condition call, without calling the handler.
            assert handled.empty()
            assert gw.counter("iii_gateway_triggers_fired_total", type="cron", outcome="skipped") >= 1
        finally:
            await shutdown(worker)


async def test_bad_expressions_are_refused_and_jobs_leave_with_their_worker() -> None:
    async with running_gateway() as gw:
        worker = await connect_worker(gw.worker_url, "cron-config")
        try:
            worker.register_function("cron::fn", lambda e: None)
            bind(worker, "cron", "cron::fn", {"expression": "61 * * * * *"})
            bind(worker, "cron", "cron::fn", {})
            bind(worker, "cron", "cron::fn", {"expression": "0 0 0 1 1 *"})  # valid, rarely due
            await roundtrip(worker)
            assert [t.config for t in gw.triggers] == [{"expression": "0 0 0 1 1 *"}]
            assert gw.cron.statistics()["cron_jobs"] == 1
            assert await call(worker, "state::get", {"scope": "s", "key": "k"}) is None
            await disconnect(gw, worker)
            assert gw.cron.statistics()["cron_jobs"] == 0
        finally:
            await shutdown(worker)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "must be an object"),
        ({"expression": ""}, "Cron expression is required"),
        ({"expression": 5}, "Cron expression is required"),
        ({"expression": "* * * * * 9"}, "Invalid cron expression '* * * * * 9'"),
        ({"expression": "0 0 0 30 2 *"}, "never fires"),
        ({"expression": "* * * * * *", "condition_function_id": 1}, "condition_function_id"),
    ],
)
async def test_cron_config_validation(config: Any, message: str) -> None:
    async with running_gateway() as gw:
        with pytest.raises(TriggerRegistrationError) as info:
            gw.triggers.register(Trigger("t1", "cron", "f", config))
        assert message in info.value.message
        assert info.value.to_wire()["code"] == "trigger_registration_failed"
        assert gw.cron.statistics()["cron_jobs"] == 0
