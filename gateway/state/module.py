"""The state module: the six ``state::*`` functions on top of one :class:`StateAdapter`.

It owns what is the same whatever the backend: decoding inputs (reference messages), the
``max_value_bytes`` guard on ``set`` (and, through the adapter, on ``update``), the reference
result shapes plus our ``revision`` field, error-code translation, and request metrics. Change
events do not start here: the adapter reports every committed change to its sinks (the state
trigger type among them), so writes made by other engines fire our triggers the same way.

Error codes: input errors are ``deserialization_error``; ``VALUE_TOO_LARGE`` for size; a
backend failure is the reference's per-function code (``SET_ERROR``, ``GET_ERROR`` ...) with the
reference message, except that availability failures keep their own clear codes
(``UPSTREAM_UNAVAILABLE``, ``TIMEOUT``, ``FORBIDDEN``) so callers can tell "try again" from "broken".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import (
    AdapterTimeout,
    AdapterUnavailable,
    ForbiddenError,
    GatewayError,
    InputError,
    LinkBroken,
    ValueTooLarge,
)
from gateway.functions import NO_RESULT, FunctionRegistry
from gateway.jsonutil import json_size
from gateway.metrics import Metrics
from gateway.state.adapter import StateAdapter, WriteResult
from gateway.state.inputs import decode_input
from gateway.state.ops import parse_ops

__all__ = ["FUNCTIONS", "StateModule"]

FUNCTIONS = ("set", "get", "delete", "update", "list", "list_groups")

_DESCRIPTIONS = {
    "set": "Store or replace a value at a scope and key",
    "get": "Read the value at a scope and key",
    "delete": "Remove a key and return its previous value",
    "update": "Apply ordered atomic update operations to a value",
    "list": "List every value in a scope",
    "list_groups": "List the scopes that hold data",
}

# (reference code, reference message prefix) used when the adapter fails.
_ADAPTER_ERRORS = {
    "set": ("SET_ERROR", "Failed to set value"),
    "get": ("GET_ERROR", "Failed to get value"),
    "delete": ("DELETE_ERROR", "Failed to delete value"),
    "update": ("UPDATE_ERROR", "Failed to update value"),
    "list": ("LIST_ERROR", "Failed to list values"),
    "list_groups": ("LIST_GROUPS_ERROR", "Failed to list groups"),
}

_PASS_THROUGH = (AdapterUnavailable, AdapterTimeout, ForbiddenError, LinkBroken)


class StateModule:
    """The six state functions. Each takes the raw JSON payload and returns the JSON result."""

    def __init__(
        self,
        adapter: StateAdapter,
        *,
        max_value_bytes: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.adapter = adapter
        self.max_value_bytes = max_value_bytes or None
        self._metrics = metrics
        self._metric_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def register(self, functions: FunctionRegistry) -> None:
        """Install ``state::*`` as builtin functions."""
        for name in FUNCTIONS:
            functions.register_builtin(f"state::{name}", self._builtin(name), description=_DESCRIPTIONS[name])

    def _builtin(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        method: Callable[[Any], Awaitable[Any]] = getattr(self, name)

        async def handler(payload: Any, metadata: Any) -> Any:
            return await method(payload)

        return handler

    # -- the six functions ------------------------------------------------------------------

    async def set(self, payload: Any) -> Any:
        return await self._measure("set", self._set, payload)

    async def get(self, payload: Any) -> Any:
        return await self._measure("get", self._get, payload)

    async def delete(self, payload: Any) -> Any:
        return await self._measure("delete", self._delete, payload)

    async def update(self, payload: Any) -> Any:
        return await self._measure("update", self._update, payload)

    async def list(self, payload: Any) -> Any:
        return await self._measure("list", self._list, payload)

    async def list_groups(self, payload: Any) -> Any:
        return await self._measure("list_groups", self._list_groups, payload)

    # -- implementations --------------------------------------------------------------------

    async def _set(self, payload: Any) -> Any:
        args = decode_input(
            "state::set",
            payload,
            [("scope", "string"), ("key", "string"), ("value", "any")],
            aliases={"data": "value"},
        )
        value = args["value"]
        if self.max_value_bytes is not None:
            try:
                size = json_size(value)
            except (TypeError, ValueError) as exc:
                raise InputError(f"Failed to deserialize input for state::set: {exc}") from exc
            if size > self.max_value_bytes:
                raise ValueTooLarge(size, self.max_value_bytes)
        result = await self._call("set", self.adapter.set(args["scope"], args["key"], value))
        return _write_result(result)

    async def _get(self, payload: Any) -> Any:
        args = decode_input("state::get", payload, [("scope", "string"), ("key", "string")])
        entry = await self._call("get", self.adapter.get(args["scope"], args["key"]))
        return NO_RESULT if entry is None else entry.value

    async def _delete(self, payload: Any) -> Any:
        args = decode_input("state::delete", payload, [("scope", "string"), ("key", "string")])
        result = await self._call("delete", self.adapter.delete(args["scope"], args["key"]))
        return result.old_value if result.existed else NO_RESULT

    async def _update(self, payload: Any) -> Any:
        args = decode_input(
            "state::update", payload, [("scope", "string"), ("key", "string"), ("ops", "list")]
        )
        try:
            ops = parse_ops(args["ops"])
        except InputError as exc:
            raise InputError(f"Failed to deserialize input for state::update: {exc.message}") from exc
        result = await self._call(
            "update",
            self.adapter.update(args["scope"], args["key"], ops, max_value_bytes=self.max_value_bytes),
        )
        body = _write_result(result)
        if result.errors:
            body["errors"] = [e.to_json() for e in result.errors]
        return body

    async def _list(self, payload: Any) -> Any:
        args = decode_input("state::list", payload, [("scope", "string")])
        return await self._call("list", self.adapter.list(args["scope"]))

    async def _list_groups(self, payload: Any) -> Any:
        decode_input("state::list_groups", payload, [])
        groups = await self._call("list_groups", self.adapter.list_groups())
        return {"groups": sorted(set(groups))}

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, op: str, awaitable: Awaitable[Any]) -> Any:
        """Await an adapter call, translating its failures to the reference codes."""
        try:
            return await awaitable
        except (ValueTooLarge, InputError):
            raise
        except _PASS_THROUGH as exc:
            _, prefix = _ADAPTER_ERRORS[op]
            raise GatewayError(f"{prefix}: {exc.message}", code=exc.code) from exc
        except GatewayError as exc:
            code, prefix = _ADAPTER_ERRORS[op]
            raise GatewayError(f"{prefix}: {exc.message}", code=code) from exc
        except (OSError, ValueError, TypeError) as exc:
            code, prefix = _ADAPTER_ERRORS[op]
            raise GatewayError(f"{prefix}: {exc}", code=code) from exc

    async def _measure(self, op: str, impl: Callable[[Any], Awaitable[Any]], payload: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await impl(payload)
            outcome = "ok"
            return result
        except GatewayError as exc:
            if self._metrics is not None:
                self._metrics.errors.labels(exc.code).inc()
            raise
        finally:
            if self._metrics is not None:
                counter, histogram = self._children(op, outcome)
                counter.inc()
                histogram.observe(time.perf_counter() - started)

    def _children(self, op: str, outcome: str) -> tuple[Any, Any]:
        """Metric children for (op, outcome), looked up once: ``labels()`` is costly per call."""
        key = (op, outcome)
        found = self._metric_children.get(key)
        if found is None:
            assert self._metrics is not None
            found = (self._metrics.requests.labels(op, outcome), self._metrics.request_duration.labels(op))
            self._metric_children[key] = found
        return found


def _write_result(result: WriteResult) -> dict[str, Any]:
    body = {
        "old_value": result.old_value if result.existed else None,
        "new_value": result.new_value,
        "revision": result.revision,
    }
    if result.queued:  # a Bridge's offline outbox holds it until the upstream is back
        body["queued"] = True
    return body
