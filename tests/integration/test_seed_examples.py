"""The examples of the user's documents (``seeds/``), written with the Python SDK, end to end.

* "Writing state" / "Reading state": ``users.update_status`` and ``users.get_status`` behind
  ``POST``/``GET users/:id/status``, with the documents' 400 and 404 answers.
* "Batch read with state::list": ``cron.orders_audit`` on ``*/5 * * * *``, sweeping a scope
  and notifying through ``enqueue`` (a worker function here).
* "User Profile with Reactive Sync": ``state::onUserUpdated`` on ``users``/``profile``.
* "Conditional Trigger": ``conditions::emailChanged`` guarding ``state::onEmailChange``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from iii import TriggerAction
from iii.iii import III

from gateway.triggers.cron import parse_cron
from tests.integration.sdk_helpers import (
    Inbox,
    RunningGateway,
    bind,
    call,
    connect_worker,
    roundtrip,
    running_gateway,
    shutdown,
)


async def http(gw: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.http_url + path, json=body) as resp,
    ):
        return resp.status, await resp.json()


def register_user_status(iii: III) -> None:
    """The seed's users.update_status / users.get_status, as Python handlers."""

    async def update_status(req: dict[str, Any]) -> dict[str, Any]:
        user_id = (req.get("path_params") or {}).get("id")
        if not user_id:
            return {"status_code": 400, "body": {"error": "Missing user ID"}}
        status = (req.get("body") or {}).get("status", "active")
        await iii.trigger_async(
            {
                "function_id": "state::set",
                "payload": {
                    "scope": "users",
                    "key": user_id,
                    "value": {"status": status, "updatedAt": datetime.now(UTC).isoformat()},
                },
                "action": TriggerAction.Void(),
            }
        )
        return {"status_code": 200, "body": {"userId": user_id, "status": status}}

    async def get_status(req: dict[str, Any]) -> dict[str, Any]:
        user_id = (req.get("path_params") or {}).get("id")
        if not user_id:
            return {"status_code": 400, "body": {"error": "Missing user id"}}
        user = await iii.trigger_async(
            {"function_id": "state::get", "payload": {"scope": "users", "key": user_id}}
        )
        if not user:
            return {"status_code": 404, "body": {"error": "User not found"}}
        return {"status_code": 200, "body": user}

    iii.register_function("users.update_status", update_status, description="Update user status in state")
    bind(iii, "http", "users.update_status", {"api_path": "users/:id/status", "http_method": "POST"})
    iii.register_function("users.get_status", get_status, description="Read user status from state")
    bind(iii, "http", "users.get_status", {"api_path": "users/:id/status", "http_method": "GET"})


async def test_users_status_http_endpoints() -> None:
    async with running_gateway() as gw:
        worker = await connect_worker(gw.worker_url, "users")
        try:
            register_user_status(worker)
            await roundtrip(worker)

            assert await http(gw, "GET", "/users/u1/status") == (404, {"error": "User not found"})
            assert await http(gw, "POST", "/users/u1/status", {"status": "away"}) == (
                200,
                {"userId": "u1", "status": "away"},
            )
            status, body = await http(gw, "GET", "/users/u1/status")
            assert status == 200 and body["status"] == "away"
            datetime.fromisoformat(body["updatedAt"])
            # No body: the documented default status.
            assert await http(gw, "POST", "/users/u2/status") == (200, {"userId": "u2", "status": "active"})
            assert (await http(gw, "GET", "/users/u2/status"))[1]["status"] == "active"
            # The 400 branch: the handler called without a user id.
            missing = await call(worker, "users.get_status", {"path_params": {}})
            assert missing == {"status_code": 400, "body": {"error": "Missing user id"}}
            assert await call(worker, "state::list", {"scope": "users"}) == [
                {"status": "away", "updatedAt": body["updatedAt"]},
                {
                    "status": "active",
                    "updatedAt": (await call(worker, "state::get", {"scope": "users", "key": "u2"}))[
                        "updatedAt"
                    ],
                },
            ]
        finally:
            await shutdown(worker)


async def test_cron_sweep_over_state_list() -> None:
    async with running_gateway() as gw:
        notified = Inbox()
        worker = await connect_worker(gw.worker_url, "audit")

        async def orders_audit(event: Any) -> None:
            orders = await worker.trigger_async(
                {"function_id": "state::list", "payload": {"scope": "orders"}}
            )
            for order in orders or []:
                if not order["complete"] and datetime.now(UTC) > datetime.fromisoformat(order["shipDate"]):
                    await worker.trigger_async(
                        {
                            "function_id": "enqueue",
                            "payload": {
                                "topic": "notification",
                                "data": {
                                    "orderId": order["id"],
                                    "templateId": "order-audit-warning",
                                    "status": order["status"],
                                },
                            },
                            "action": TriggerAction.Void(),
                        }
                    )

        try:
            past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            for order in [
                {"id": "o1", "shipDate": past, "complete": False, "status": "pending"},
                {"id": "o2", "shipDate": past, "complete": True, "status": "done"},
                {"id": "o3", "shipDate": future, "complete": False, "status": "pending"},
            ]:
                await call(worker, "state::set", {"scope": "orders", "key": order["id"], "value": order})
            worker.register_function("enqueue", notified.recorder())
            worker.register_function(
                "cron.orders_audit", orders_audit, description="Checks for overdue orders"
            )
            # The document's schedule (classic 5-field: every five minutes, at second 0) ...
            bind(worker, "cron", "cron.orders_audit", {"expression": "*/5 * * * *"})
            await roundtrip(worker)
            assert gw.cron.statistics()["cron_jobs"] == 1
            nxt = parse_cron("*/5 * * * *").next_after(datetime.now(UTC))
            assert nxt is not None and nxt.minute % 5 == 0 and nxt.second == 0
            # ... and the same sweep every second, so the test need not wait five minutes.
            bind(worker, "cron", "cron.orders_audit", {"expression": "* * * * * *"})
            await roundtrip(worker)
            payload, _ = await notified.get()
            assert payload == {
                "topic": "notification",
                "data": {"orderId": "o1", "templateId": "order-audit-warning", "status": "pending"},
            }
        finally:
            await shutdown(worker)


async def test_reactive_profile_sync() -> None:
    async with running_gateway() as gw:
        changes = Inbox()
        worker = await connect_worker(gw.worker_url, "profiles")

        def on_user_updated(event: dict[str, Any]) -> dict[str, Any]:
            changes.put((event["event_type"], event["key"], event.get("old_value"), event.get("new_value")))
            return {}

        try:
            worker.register_function("state::onUserUpdated", on_user_updated)
            bind(worker, "state", "state::onUserUpdated", {"scope": "users", "key": "profile"})
            await roundtrip(worker)

            dark = {"name": "Alice", "email": "alice@example.com", "preferences": {"theme": "dark"}}
            light = {"name": "Alice", "email": "alice@example.com", "preferences": {"theme": "light"}}
            void = {"type": "void"}  # the document's dict form of TriggerAction.Void()
            assert (
                await call(
                    worker, "state::set", {"scope": "users", "key": "profile", "value": dark}, action=void
                )
                is None
            )
            assert await call(worker, "state::get", {"scope": "users", "key": "profile"}) == dark
            assert (
                await call(
                    worker, "state::set", {"scope": "users", "key": "profile", "value": light}, action=void
                )
                is None
            )
            await call(worker, "state::set", {"scope": "users", "key": "user-123", "value": {"name": "Bob"}})
            assert await changes.get() == ("state:created", "profile", None, dark)
            assert await changes.get() == ("state:updated", "profile", dark, light)
            assert await call(worker, "state::list", {"scope": "users"}) == [light, {"name": "Bob"}]
            assert await call(worker, "state::list_groups", {}) == {"groups": ["users"]}
            assert changes.empty()  # user-123 is not the watched key
        finally:
            await shutdown(worker)


async def test_conditional_email_changed_trigger() -> None:
    async with running_gateway() as gw:
        sent = Inbox()
        worker = await connect_worker(gw.worker_url, "emails")

        def email_changed(event: dict[str, Any]) -> bool:
            if event.get("event_type") != "state:updated":
                return False
            old = event.get("old_value") or {}
            new = event.get("new_value") or {}
            return old.get("email") != new.get("email")

        def on_email_change(event: dict[str, Any]) -> dict[str, Any]:
            sent.put(event["new_value"]["email"])  # send_verification_email(...)
            return {}

        try:
            worker.register_function("conditions::emailChanged", email_changed)
            worker.register_function("state::onEmailChange", on_email_change)
            bind(
                worker,
                "state",
                "state::onEmailChange",
                {"scope": "users", "key": "profile", "condition_function_id": "conditions::emailChanged"},
            )
            await roundtrip(worker)

            def profile(email: str, theme: str) -> dict[str, Any]:
                return {"scope": "users", "key": "profile", "value": {"email": email, "theme": theme}}

            await call(worker, "state::set", profile("a@example.com", "dark"))  # created: not a change
            await call(worker, "state::set", profile("a@example.com", "light"))  # same email
            await call(worker, "state::set", profile("b@example.com", "light"))  # changed
            await call(worker, "state::set", profile("b@example.com", "dark"))  # same again
            await call(worker, "state::set", profile("c@example.com", "dark"))  # changed
            assert await sent.get() == "b@example.com"
            assert await sent.get() == "c@example.com"
            assert sent.empty()
        finally:
            await shutdown(worker)
