"""A worker survives a gateway crash: ``python -m gateway serve`` is SIGKILLed and restarted on
the same ports; the SDK reconnects, reattaches, replays its registrations, and its functions
and triggers work again with no action from the worker's code.
"""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import pytest

from tests.integration.sdk_helpers import (
    DEFAULT_TIMEOUT,
    GatewayProcess,
    Inbox,
    bind,
    call,
    connect_worker,
    roundtrip,
    shutdown,
)

pytestmark = pytest.mark.slow


async def test_worker_reconnects_after_the_gateway_restarts(tmp_path: Path) -> None:
    first = GatewayProcess(tmp_path)
    await asyncio.to_thread(first.start)
    events = Inbox()
    states: queue.Queue[str] = queue.Queue()
    survivor = await connect_worker(first.worker_url, "survivor")
    survivor.add_connection_state_listener(states.put)
    caller = await connect_worker(first.worker_url, "caller")
    second: GatewayProcess | None = None
    try:
        survivor.register_function("rs::echo", lambda data: {"echo": data})
        survivor.register_function("rs::on_change", events.recorder())
        bind(survivor, "state", "rs::on_change", {"scope": "rs"}, metadata={"who": "survivor"})
        await roundtrip(survivor)
        assert await call(caller, "rs::echo", 1) == {"echo": 1}
        await call(caller, "state::set", {"scope": "rs", "key": "k", "value": "before"})
        event, meta = await events.get()
        assert (event["new_value"], meta) == ("before", {"who": "survivor"})

        await asyncio.to_thread(first.kill)
        while (state := await asyncio.to_thread(states.get, True, DEFAULT_TIMEOUT)) == "connected":
            pass
        assert state in ("disconnected", "reconnecting")
        # A call made while the gateway is down is queued by the SDK and sent after the replay of
        # the worker's registrations, so its answer proves the new gateway has them.
        barrier = asyncio.create_task(call(survivor, "state::list_groups", {}))

        second = GatewayProcess(tmp_path, worker_port=first.worker_port, http_port=first.http_port)
        await asyncio.to_thread(second.start)
        groups = await barrier
        assert isinstance(groups, dict) and "groups" in groups

        fresh = await connect_worker(second.worker_url, "fresh")
        try:
            assert await call(fresh, "rs::echo", 2) == {"echo": 2}
            await call(fresh, "state::set", {"scope": "rs", "key": "k", "value": "after"})
            event, meta = await events.get()
            assert (event["new_value"], meta) == ("after", {"who": "survivor"})
            assert event["event_type"] in ("state:created", "state:updated")
        finally:
            await shutdown(fresh)
    finally:
        await shutdown(survivor, caller)
        for gw in (first, second):
            if gw is not None:
                await asyncio.to_thread(gw.stop)
