"""``http`` triggers bound by real ``iii-sdk`` workers, called with a real HTTP client."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from iii_helpers.http import HttpResponse

from gateway.triggers.registry import Trigger, TriggerRegistrationError
from tests.integration.sdk_helpers import (
    Inbox,
    RunningGateway,
    bind,
    connect_worker,
    disconnect,
    roundtrip,
    running_gateway,
    shutdown,
)


async def request(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """(status, headers, body: parsed JSON when the response is JSON, else text)."""
    async with aiohttp.ClientSession() as http, http.request(method, gw.http_url + path, **kwargs) as resp:
        text = await resp.text()
        body: Any = text
        if resp.content_type == "application/json" and text:
            body = json.loads(text)
        return resp.status, resp.headers, body


async def test_request_shape_and_response_mapping() -> None:
    async with running_gateway() as gw:
        seen = Inbox()
        worker = await connect_worker(gw.worker_url, "api")

        def hello(req: Any) -> Any:
            seen.put(req)
            return {"status_code": 201, "body": {"hi": req["path_params"]["name"]}, "headers": {"X-A": "1"}}

        try:
            worker.register_function("api::hello", hello)
            bind(worker, "http", "api::hello", {"api_path": "/hello/:name", "http_method": "GET"})
            await roundtrip(worker)
            status, headers, body = await request(
                gw, "GET", "/hello/w%C3%B6rld?x=1&x=2&y=z", headers={"X-Trace": "abc"}
            )
            assert (status, body, headers["X-A"]) == (201, {"hi": "wörld"}, "1")
            assert headers["Content-Type"] == "application/json"
            req = await seen.get()
            assert req["method"] == "GET"
            assert req["path"] == "/hello/:name"  # the registered pattern, as the reference passes it
            assert req["path_params"] == {"name": "wörld"}
            assert req["query_params"] == {"x": "2", "y": "z"}  # one value per name
            assert req["headers"]["x-trace"] == "abc"  # lowercase names
            assert req["body"] is None
            assert req["trigger"] == {"type": "http", "path": "/hello/:name", "method": "GET"}
            assert gw.counter("iii_gateway_http_trigger_requests_total", status="2xx") == 1
        finally:
            await shutdown(worker)


async def test_json_bodies_and_response_variants() -> None:
    async with running_gateway() as gw:
        worker = await connect_worker(gw.worker_url, "api")
        echo_calls = Inbox()

        def echo(req: Any) -> Any:
            echo_calls.put(req["body"])
            return {"body": req["body"]}

        routes = {
            "/echo": echo,
            "/alias": lambda req: HttpResponse(status_code=202, body={"ok": True}, headers={"X-B": "2"}),
            "/lines": lambda req: {
                "status_code": 200,
                "headers": ["X-C: 3", "Content-Type: text/plain"],
                "body": "plain",
            },
            "/xml": lambda req: {"headers": {"Content-Type": "text/xml"}, "body": {"not": "json"}},
            "/none": lambda req: None,
            "/odd": lambda req: "not an object",
            "/badstatus": lambda req: {"status_code": 99, "body": [1]},
        }
        try:
            for i, (path, fn) in enumerate(routes.items()):
                worker.register_function(f"api::r{i}", fn)
                bind(worker, "http", f"api::r{i}", {"api_path": path, "http_method": "POST"})
            await roundtrip(worker)

            assert (await request(gw, "POST", "/echo", json={"a": [1, 2]}))[::2] == (200, {"a": [1, 2]})
            assert await echo_calls.get() == {"a": [1, 2]}
            # Bodies are parsed only for application/json; broken JSON is null.
            await request(
                gw, "POST", "/echo", data="a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
            await request(gw, "POST", "/echo", data="{broken", headers={"Content-Type": "application/json"})
            assert [await echo_calls.get(), await echo_calls.get()] == [None, None]

            status, headers, body = await request(gw, "POST", "/alias")  # statusCode, as pydantic dumps it
            assert (status, body, headers["X-B"]) == (202, {"ok": True}, "2")
            status, headers, body = await request(gw, "POST", "/lines")
            assert (status, body, headers["X-C"], headers["Content-Type"]) == (
                200,
                "plain",
                "3",
                "text/plain",
            )
            status, headers, body = await request(gw, "POST", "/xml")
            assert (status, body, headers["Content-Type"]) == (200, '{"not":"json"}', "text/xml")
            assert (await request(gw, "POST", "/none"))[::2] == (200, {})
            assert (await request(gw, "POST", "/odd"))[::2] == (200, {})
            assert (await request(gw, "POST", "/badstatus"))[::2] == (200, [1])
        finally:
            await shutdown(worker)


async def test_gateway_answers_404_405_500_and_422() -> None:
    async with running_gateway() as gw:
        worker = await connect_worker(gw.worker_url, "api")

        def boom(req: Any) -> Any:
            raise RuntimeError("handler exploded")

        def only_admins(req: Any) -> bool:
            return req["headers"].get("x-role") == "admin"

        try:
            worker.register_function("api::boom", boom)
            worker.register_function("api::secret", lambda req: {"body": "secret"})
            worker.register_function("api::cond", only_admins)
            bind(worker, "http", "api::boom", {"api_path": "/boom", "http_method": "POST"})
            bind(
                worker,
                "http",
                "api::secret",
                {"api_path": "/secret", "http_method": "GET", "condition_function_id": "api::cond"},
            )
            await roundtrip(worker)

            status, _, body = await request(gw, "GET", "/nowhere")
            assert status == 404 and body["error"]["code"] == "NOT_FOUND"
            status, headers, body = await request(gw, "GET", "/boom")
            assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
            assert headers["Allow"] == "POST"

            status, _, body = await request(gw, "POST", "/boom")
            assert status == 500
            assert body["error"]["code"] == "invocation_failed"
            assert body["error"]["message"] == "handler exploded"
            assert body["error"]["error_id"]

            status, _, body = await request(gw, "GET", "/secret")
            assert status == 422
            assert body == {
                "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
                "skipped": True,
            }
            status, _, body = await request(gw, "GET", "/secret", headers={"X-Role": "admin"})
            assert (status, body) == (200, "secret")

            # The gateway's own endpoints stay reachable next to the catch-all.
            status, _, body = await request(gw, "GET", "/healthz")
            assert status == 200 and body["status"] == "ok"
            assert gw.counter("iii_gateway_http_trigger_requests_total", status="4xx") == 3
            assert gw.counter("iii_gateway_http_trigger_requests_total", status="5xx") == 1
            assert gw.counter("iii_gateway_triggers_fired_total", type="http", outcome="skipped") == 1
        finally:
            await shutdown(worker)


async def test_routing_specificity_head_middleware_and_failover() -> None:
    async with running_gateway() as gw:
        first = await connect_worker(gw.worker_url, "first")
        second = await connect_worker(gw.worker_url, "second")
        try:
            first.register_function("r::param", lambda req: {"body": {"id": req["path_params"]["id"]}})
            first.register_function("r::literal", lambda req: {"body": "me"})
            first.register_function(
                "r::guard",
                lambda req: {"action": "respond", "response": {"status_code": 401, "body": {"no": 1}}},
            )
            first.register_function("r::pass", lambda req: {"action": "continue"})
            bind(
                first, "http", "r::param", {"api_path": "users/:id", "http_method": "GET"}
            )  # no leading slash
            bind(first, "http", "r::literal", {"api_path": "/users/me", "http_method": "GET"})
            bind(
                first,
                "http",
                "r::param",
                {"api_path": "/guarded", "http_method": "GET", "middleware_function_ids": ["r::guard"]},
            )
            bind(
                first,
                "http",
                "r::param",
                {"api_path": "/open/:id", "http_method": "GET", "middleware_function_ids": ["r::pass"]},
            )
            await roundtrip(first)

            assert (await request(gw, "GET", "/users/42"))[::2] == (200, {"id": "42"})
            assert (await request(gw, "GET", "/users/me/"))[::2] == (200, "me")  # literal beats :id
            status, _, body = await request(gw, "HEAD", "/users/42")
            assert (status, body) == (200, "")
            assert (await request(gw, "GET", "/guarded"))[::2] == (401, {"no": 1})
            assert (await request(gw, "GET", "/open/7"))[::2] == (200, {"id": "7"})

            # A second worker binding the same route serves it until it leaves.
            second.register_function("r::other", lambda req: {"body": "second"})
            bind(second, "http", "r::other", {"api_path": "/users/:user", "http_method": "GET"})
            await roundtrip(second)
            assert (await request(gw, "GET", "/users/42"))[::2] == (200, "second")
            await disconnect(gw, second)
            assert (await request(gw, "GET", "/users/42"))[::2] == (200, {"id": "42"})
        finally:
            await shutdown(first, second)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "must be an object"),
        ({"http_method": "GET"}, "api_path"),
        ({"api_path": "/x", "http_method": "FETCH"}, "http_method"),
        ({"api_path": "/x/:/y"}, "without a name"),
        ({"api_path": "/x/:a/:a"}, "twice"),
        ({"api_path": "/metrics"}, "reserved"),
        ({"api_path": "/x", "condition_function_id": 3}, "condition_function_id"),
        ({"api_path": "/x", "middleware_function_ids": "m"}, "middleware_function_ids"),
    ],
)
async def test_http_config_validation(config: Any, message: str) -> None:
    async with running_gateway() as gw:
        with pytest.raises(TriggerRegistrationError) as info:
            gw.triggers.register(Trigger("t1", "http", "f", config))
        assert message in info.value.message
        # The "api" alias reaches the same provider.
        with pytest.raises(TriggerRegistrationError):
            gw.triggers.register(Trigger("t2", "api", "f", config))
        assert gw.http.statistics()["http_routes"] == 0
