"""The ``http`` trigger type: HTTP routes on the gateway's HTTP port that call functions.

A binding's config is the reference's ``{"api_path": "/users/:id", "http_method": "GET",
"condition_function_id"?, "middleware_function_ids"?}`` (``:name`` segments are path
parameters; a missing leading ``/`` is fine, as in the seed documents). Each request calls the
bound function with the reference's request object (section 4.3 of the protocol notes, without
the streaming channel refs) and turns what it returns (``status_code`` or ``statusCode``,
``body``, ``headers`` as an object or as ``"Name: value"`` lines) into the response.

Answers the gateway makes itself have a JSON body ``{"error": {"code", "message"}}``: 404
``NOT_FOUND`` (no route), 405 ``METHOD_NOT_ALLOWED`` (the path exists for other methods, with
``Allow``), 422 ``CONDITION_NOT_MET`` (the condition function returned ``false``; plus
``"skipped": true``), 500 with the function's error code (and an ``error_id`` to find it in the
logs), 504 when the call timed out.

Two bindings for the same method and route shape (say two replicas of a worker): the newest
serves, the older one takes over if the newest goes away. The type is also reachable as
``api`` (harmless alias; no SDK sends it). ``routes()`` is a catch-all and must be added
after the gateway's own routes (``/healthz``, ``/readyz``, ``/metrics``), which bindings may not
claim.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError
from gateway.functions import FunctionRegistry
from gateway.jsonutil import dumps
from gateway.metrics import Metrics
from gateway.triggers.registry import Trigger, TriggerRegistrationError

__all__ = ["HttpRoute", "HttpTriggerType", "build_response", "parse_http_config"]

log = logging.getLogger(__name__)

METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """A parsed binding: method, the path as registered, and its segments."""

    method: str
    api_path: str  # as registered: the request's ``path`` field carries it unchanged
    segments: tuple[str, ...]  # ":name" for parameters
    condition_function_id: str | None = None
    middleware_function_ids: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[str, tuple[str, ...]]:
        """Method and segments with parameter names erased: two routes that collide share it."""
        return self.method, tuple(":" if s.startswith(":") else s for s in self.segments)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for seg, part in zip(self.segments, parts, strict=True):
            if seg.startswith(":"):
                params[seg[1:]] = part
            elif seg != part:
                return None
        return params

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: literal segments beat parameters, leftmost first (smaller is more specific)."""
        return tuple(1 if s.startswith(":") else 0 for s in self.segments)


def parse_http_config(config: Any) -> HttpRoute:
    """Decode and check an ``http`` binding config; raises TriggerRegistrationError."""
    if not isinstance(config, dict):
        raise TriggerRegistrationError("http trigger config must be an object with api_path and http_method")
    path = config.get("api_path")
    if not isinstance(path, str) or not path.strip():
        raise TriggerRegistrationError("http trigger config needs a non-empty string api_path")
    method = config.get("http_method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise TriggerRegistrationError(f"http_method {method!r} is not one of {', '.join(sorted(METHODS))}")
    segments = tuple(s for s in path.strip().split("/") if s)
    names = [s[1:] for s in segments if s.startswith(":")]
    if any(not n for n in names):
        raise TriggerRegistrationError(f"api_path {path!r} has a parameter without a name")
    if len(set(names)) != len(names):
        raise TriggerRegistrationError(f"api_path {path!r} uses a parameter name twice")
    cond = config.get("condition_function_id")
    if cond is not None and not isinstance(cond, str):
        raise TriggerRegistrationError("condition_function_id must be a string")
    mws = config.get("middleware_function_ids") or []
    if not isinstance(mws, list) or not all(isinstance(m, str) for m in mws):
        raise TriggerRegistrationError("middleware_function_ids must be a list of strings")
    return HttpRoute(method.upper(), path, segments, cond, tuple(mws))


def _error(status: int, code: str, message: str, *, error_id: str | None = None, **top: Any) -> web.Response:
    error = {"code": code, "message": message}
    if error_id is not None:
        error["error_id"] = error_id
    body = {"error": error, **top}
    return web.Response(status=status, body=dumps(body).encode(), content_type="application/json")


def _headers_of(value: Any) -> list[tuple[str, str]]:
    """Response headers from ``{"Name": "value"}`` or ``["Name: value", ...]``; bad ones dropped."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        pairs = [(k, v) for k, v in value.items() if isinstance(v, str)]
    elif isinstance(value, list):
        for line in value:
            if isinstance(line, str) and ":" in line:
                name, _, val = line.partition(":")
                pairs.append((name.strip(), val.strip()))
    return [(k, v) for k, v in pairs if _HEADER_NAME.match(k) and "\r" not in v and "\n" not in v]


def _status_of(result: dict[str, Any]) -> int:
    for name in ("status_code", "statusCode"):
        v = result.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
            return v
    return 200


def build_response(result: Any) -> web.Response:
    """The HTTP response for what a handler returned, as the reference engine builds it.

    A non-object result means status 200 and body ``{}``. The body is JSON unless the handler
    set a Content-Type: then a string body is sent as is, null as empty, and anything else as
    its JSON text.
    """
    res = result if isinstance(result, dict) else {}
    headers = CIMultiDict(_headers_of(res.get("headers")))
    body = res.get("body", {})
    user_type = headers.get("Content-Type")
    if user_type is not None and isinstance(body, str):
        payload = body.encode()
    elif user_type is not None and body is None:
        payload = b""
    elif user_type is not None and "application/json" not in user_type.lower():
        payload = dumps(body).encode()
    else:
        payload = dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    return web.Response(status=_status_of(res), body=payload, headers=headers)


@dataclass(slots=True)
class _Binding:
    trigger: Trigger
    route: HttpRoute


class HttpTriggerType:
    """Provider of the ``http`` trigger type, and the aiohttp handler that serves its routes."""

    name = "http"

    def __init__(
        self,
        functions: FunctionRegistry,
        metrics: Metrics | None = None,
        *,
        reserved_paths: Iterable[str] = ("/healthz", "/readyz", "/metrics"),
    ) -> None:
        self._functions = functions
        self._metrics = metrics
        self._reserved = {tuple(s for s in p.split("/") if s) for p in reserved_paths}
        self._bindings: dict[str, _Binding] = {}  # trigger id -> binding
        # shape -> bindings with that shape, newest last (the newest serves)
        self._by_shape: dict[tuple[str, tuple[str, ...]], list[_Binding]] = {}

    # -- TriggerType ------------------------------------------------------------------------

    def add(self, trigger: Trigger) -> None:
        route = parse_http_config(trigger.config)
        if route.segments in self._reserved:
            raise TriggerRegistrationError(f"api_path {route.api_path!r} is reserved by the gateway")
        self.remove(trigger)  # same id again: replace
        binding = _Binding(trigger, route)
        self._bindings[trigger.id] = binding
        self._by_shape.setdefault(route.shape, []).append(binding)

    def remove(self, trigger: Trigger) -> None:
        binding = self._bindings.pop(trigger.id, None)
        if binding is None:
            return
        same = self._by_shape.get(binding.route.shape, [])
        if binding in same:
            same.remove(binding)
        if not same:
            self._by_shape.pop(binding.route.shape, None)

    def statistics(self) -> dict[str, float]:
        return {"http_routes": float(len(self._by_shape))}

    # -- serving ----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """A catch-all route; add it after the gateway's own routes."""
        return [web.route("*", "/{tail:.*}", self.handle)]

    def _match(self, method: str, raw_path: str) -> tuple[_Binding, dict[str, str]] | list[str]:
        """The serving binding and its params, or the methods the path allows (maybe none)."""
        parts = [unquote(p) for p in raw_path.split("?", 1)[0].split("/") if p]
        found: dict[str, tuple[tuple[int, ...], _Binding, dict[str, str]]] = {}
        for bindings in self._by_shape.values():
            best = bindings[-1]
            params = best.route.match(parts)
            if params is None:
                continue
            current = found.get(best.route.method)
            if current is None or best.route.specificity < current[0]:
                found[best.route.method] = (best.route.specificity, best, params)
        hit = found.get(method) or (found.get("GET") if method == "HEAD" else None)
        if hit is not None:
            return hit[1], hit[2]
        return sorted(found)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        match = self._match(request.method, request.raw_path)
        if isinstance(match, list):
            if not match:
                response = _error(404, "NOT_FOUND", f"Route not found: {request.method} {request.path}")
            else:
                response = _error(
                    405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path}"
                )
                response.headers["Allow"] = ", ".join(match)
            self._count_status(response.status)
            return response
        binding, params = match
        response = await self._serve(request, binding, params)
        self._count_status(response.status)
        return response

    async def _serve(self, request: web.Request, binding: _Binding, params: dict[str, str]) -> web.Response:
        trigger, route = binding.trigger, binding.route
        payload = {
            "query_params": dict(request.query.items()),
            "path_params": params,
            "headers": _request_headers(request),
            "path": route.api_path,
            "method": request.method,
            "body": await _request_body(request),
            "trigger": {"type": "http", "path": route.api_path, "method": request.method},
        }
        ns = trigger.namespace
        if route.condition_function_id is not None:
            try:
                ok = await self._functions.invoke(route.condition_function_id, payload, namespace=ns)
            except GatewayError as exc:
                self._fired("condition_error")
                return self._failure(exc, route, "condition")
            if ok is False:
                self._fired("skipped")
                return _error(422, "CONDITION_NOT_MET", "Request condition not met", skipped=True)
        for mw in route.middleware_function_ids:
            early = await self._middleware(mw, payload, ns, route)
            if early is not None:
                return early
        try:
            result = await self._functions.invoke(
                trigger.function_id, payload, namespace=ns, metadata=trigger.metadata
            )
        except GatewayError as exc:
            self._fired("error")
            return self._failure(exc, route, "handler")
        self._fired("ok")
        return build_response(result)

    async def _middleware(
        self, function_id: str, payload: dict[str, Any], ns: str, route: HttpRoute
    ) -> web.Response | None:
        """A pre-handler middleware: ``{"action": "respond", "response": {...}}`` answers early."""
        request = {k: payload[k] for k in ("path_params", "query_params", "headers", "method")}
        try:
            result = await self._functions.invoke(
                function_id, {"phase": "preHandler", "request": request, "context": {}}, namespace=ns
            )
        except GatewayError as exc:
            self._fired("error")
            return self._failure(exc, route, "middleware")
        if isinstance(result, dict) and result.get("action") == "respond":
            self._fired("middleware")
            return build_response(result.get("response"))
        return None

    def _failure(self, exc: GatewayError, route: HttpRoute, stage: str) -> web.Response:
        error_id = secrets.token_hex(6)
        log.warning(
            "http %s %s: %s failed (%s, error_id %s): %s",
            route.method,
            route.api_path,
            stage,
            exc.code,
            error_id,
            exc.message,
        )
        status = 504 if exc.code in ("timeout", "TIMEOUT") else 500
        return _error(status, exc.code, exc.message, error_id=error_id)

    def _fired(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.triggers_fired.labels("http", outcome).inc()

    def _count_status(self, status: int) -> None:
        if self._metrics is not None:
            self._metrics.http_requests.labels(f"{status // 100}xx").inc()


def _request_headers(request: web.Request) -> dict[str, str]:
    """Lowercase names; repeated headers joined with ", " (RFC 9110 5.3)."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _request_body(request: web.Request) -> Any:
    """Parsed JSON for ``application/json`` requests, else null (as the reference)."""
    if "application/json" not in request.headers.get("Content-Type", "").lower():
        return None
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
