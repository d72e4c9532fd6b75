"""One registry for every callable function: builtins (``state::*``) and worker functions.

Callers (the worker protocol, trigger dispatchers, the link server, tests) invoke by id through
:meth:`FunctionRegistry.invoke` and never care where the function runs. A worker function's
handler is installed by the worker protocol and forwards the call over that worker's socket.

Namespaces follow the reference engine's recommendation: builtins resolve in every namespace;
worker functions are keyed by ``(namespace, id)`` and resolve only in their own namespace
(``None`` means ``"default"``).

A handler returns :data:`NO_RESULT` to mean "no result" (the reference's ``None``, which the
wire encodes by omitting ``result``), as opposed to a JSON ``null`` result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.errors import GatewayError, InvocationError
from gateway.metrics import Metrics

__all__ = [
    "DEFAULT_NAMESPACE",
    "NO_RESULT",
    "FunctionInfo",
    "FunctionRegistry",
    "Handler",
]

DEFAULT_NAMESPACE: Final = "default"


class _NoResult:
    """Sentinel type: the function produced no result (wire: ``result`` omitted)."""

    _instance: _NoResult | None = None

    def __new__(cls) -> _NoResult:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_RESULT"

    def __bool__(self) -> bool:
        return False


NO_RESULT: Final = _NoResult()

# handler(payload, metadata) -> result
Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass(slots=True)
class FunctionInfo:
    """A registered function. ``owner`` is the worker connection that hosts it (None: builtin)."""

    id: str
    handler: Handler
    namespace: str = DEFAULT_NAMESPACE
    owner: str | None = None
    description: str | None = None
    metadata: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "builtin" if self.owner is None else "worker"


class FunctionRegistry:
    """Function ids to handlers, with invocation, timeouts and metrics in one place."""

    def __init__(self, *, metrics: Metrics | None = None, default_timeout: float | None = 30.0) -> None:
        self._builtins: dict[str, FunctionInfo] = {}
        self._workers: dict[tuple[str, str], FunctionInfo] = {}
        self._metrics = metrics
        self._metric_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.default_timeout = default_timeout

    # -- registration -----------------------------------------------------------------------

    def register_builtin(self, function_id: str, handler: Handler, *, description: str | None = None) -> None:
        """A function of the engine itself, callable from every namespace."""
        self._builtins[function_id] = FunctionInfo(function_id, handler, description=description)

    def register(
        self,
        function_id: str,
        handler: Handler,
        *,
        namespace: str | None = None,
        owner: str,
        description: str | None = None,
        metadata: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> FunctionInfo:
        """Register (or replace) a worker function. The last registration of an id wins."""
        info = FunctionInfo(
            function_id,
            handler,
            namespace=namespace or DEFAULT_NAMESPACE,
            owner=owner,
            description=description,
            metadata=metadata,
            extra=dict(extra or {}),
        )
        self._workers[(info.namespace, function_id)] = info
        return info

    def unregister(self, function_id: str, *, namespace: str | None = None, owner: str | None = None) -> bool:
        """Remove a worker function; with ``owner`` only if that owner still hosts it."""
        k = (namespace or DEFAULT_NAMESPACE, function_id)
        info = self._workers.get(k)
        if info is None or (owner is not None and info.owner != owner):
            return False
        del self._workers[k]
        return True

    def unregister_owner(self, owner: str) -> list[FunctionInfo]:
        """Remove every function a worker connection hosts (it went away)."""
        gone = [k for k, info in self._workers.items() if info.owner == owner]
        return [self._workers.pop(k) for k in gone]

    # -- lookup -----------------------------------------------------------------------------

    def resolve(self, function_id: str, namespace: str | None = None) -> FunctionInfo | None:
        builtin = self._builtins.get(function_id)
        if builtin is not None:
            return builtin
        return self._workers.get((namespace or DEFAULT_NAMESPACE, function_id))

    def __iter__(self) -> Iterator[FunctionInfo]:
        yield from self._builtins.values()
        yield from self._workers.values()

    def statistics(self) -> dict[str, float]:
        return {"functions_registered": float(len(self._workers)), "builtin_functions": len(self._builtins)}

    # -- invocation -------------------------------------------------------------------------

    async def invoke(
        self,
        function_id: str,
        payload: Any,
        *,
        namespace: str | None = None,
        metadata: Any = None,
        timeout: float | None = -1.0,
    ) -> Any:
        """Call a function and return its result (or :data:`NO_RESULT`).

        Raises :class:`InvocationError` (``function_not_found``, ``timeout``,
        ``invocation_failed``, ``invocation_stopped``) or the handler's own
        :class:`GatewayError` (e.g. ``deserialization_error`` from a builtin). ``timeout=-1``
        uses the registry default; ``None`` waits forever.
        """
        info = self.resolve(function_id, namespace)
        if info is None:
            ns = namespace or DEFAULT_NAMESPACE
            self._count("none", "not_found")
            raise InvocationError(
                f"Function {function_id} not found in namespace {ns}.", code="function_not_found"
            )
        limit = self.default_timeout if timeout == -1.0 else timeout
        started = time.perf_counter()
        outcome = "error"
        try:
            if limit is None:
                result = await info.handler(payload, metadata)
            else:
                async with asyncio.timeout(limit):
                    result = await info.handler(payload, metadata)
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            raise InvocationError(
                f"Invocation of {function_id} timed out after {int((limit or 0) * 1000)}ms", code="timeout"
            ) from None
        except GatewayError:
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:  # a builtin bug must reach the caller as an error, not a crash
            raise InvocationError(f"{type(exc).__name__}: {exc}", code="invocation_failed") from exc
        finally:
            self._count(info.kind, outcome, time.perf_counter() - started)

    def _count(self, kind: str, outcome: str, seconds: float | None = None) -> None:
        if self._metrics is None:
            return
        key = (kind, outcome)
        children = self._metric_children.get(key)
        if children is None:  # labels() is costly on a hot path: look each child up once
            children = (
                self._metrics.invocations.labels(kind, outcome),
                self._metrics.invocation_duration.labels(kind),
            )
            self._metric_children[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)
