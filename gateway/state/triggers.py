"""The ``state`` trigger type: matching bindings and delivering change events to them.

Reference semantics kept: a binding's ``scope`` and ``key`` are exact, case-sensitive filters
(absent or null = any); ``condition_function_id`` is called with the event and only a JSON
``false`` result skips the handler, an error skips it too; bindings are matched at commit
time; handler results are ignored; the writer never waits for handlers.

Where we go beyond it (DESIGN section 3.4):

* **Per-key order.** Each binding has lanes, one per (scope, key) with pending events; a lane
  delivers its events strictly in revision order, one at a time. Different keys run
  concurrently, up to ``trigger_concurrency`` calls per binding, served round-robin so a hot key
  cannot starve the others.
* **Bounded memory.** Each binding holds at most ``trigger_queue_size`` pending events; beyond
  that an event is dropped for that binding and counted (``reason="queue_full"``), never
  buffered without bound.
* **Timeouts.** Each condition and handler call has ``trigger_timeout_ms``; a hung handler costs
  one lane slot for that long, not the whole dispatcher.
* Unregistering a binding discards what it still had pending (counted as ``unregistered``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError
from gateway.functions import FunctionRegistry
from gateway.metrics import Metrics
from gateway.state.adapter import Change
from gateway.triggers.registry import Trigger, TriggerRegistrationError

__all__ = ["StateTriggerConfig", "StateTriggerType", "parse_state_trigger_config"]

log = logging.getLogger(__name__)

LaneKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class StateTriggerConfig:
    scope: str | None = None
    key: str | None = None
    condition_function_id: str | None = None

    def matches(self, change: Change) -> bool:
        return (self.scope is None or self.scope == change.scope) and (
            self.key is None or self.key == change.key
        )


def parse_state_trigger_config(config: Any) -> StateTriggerConfig:
    """Decode a binding's config as the reference does (unknown fields ignored, null = absent)."""
    if not isinstance(config, dict):
        kind = "null" if config is None else type(config).__name__
        raise TriggerRegistrationError(
            f"Failed to parse trigger config: invalid type: {kind}, expected struct StateTriggerConfig"
        )
    values: dict[str, str | None] = {}
    for name in ("scope", "key", "condition_function_id"):
        v = config.get(name)
        if v is not None and not isinstance(v, str):
            raise TriggerRegistrationError(
                f"Failed to parse trigger config: invalid type for `{name}`: {_json_type(v)} {v!r}, "
                "expected a string"
            )
        values[name] = v
    return StateTriggerConfig(**values)


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, list):
        return "sequence"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


@dataclass(slots=True)
class _Binding:
    """A registered binding and its delivery state."""

    trigger: Trigger
    config: StateTriggerConfig
    lanes: dict[LaneKey, deque[tuple[Change, float]]] = field(default_factory=dict)
    ready: deque[LaneKey] = field(default_factory=deque)  # lanes with events and no runner
    pending: int = 0
    running: int = 0
    closed: bool = False

    def is_closed(self) -> bool:
        return self.closed


class StateTriggerType:
    """Provider of the ``state`` trigger type and sink for committed changes."""

    name = "state"

    def __init__(
        self,
        functions: FunctionRegistry,
        *,
        metrics: Metrics | None = None,
        enabled: bool = True,
        queue_size: int = 10_000,
        timeout: float = 30.0,
        concurrency: int = 64,
    ) -> None:
        self._functions = functions
        self._metrics = metrics
        self.enabled = enabled
        self._queue_size = max(1, queue_size)
        self._timeout = timeout
        self._concurrency = max(1, concurrency)
        self._bindings: dict[str, _Binding] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    # -- TriggerType ------------------------------------------------------------------------

    def add(self, trigger: Trigger) -> None:
        config = parse_state_trigger_config(trigger.config)
        old = self._bindings.get(trigger.id)
        if old is not None:  # same id again (e.g. a worker's replay after reconnect): keep its queue
            old.trigger = trigger
            old.config = config
            old.closed = False
            return
        self._bindings[trigger.id] = _Binding(trigger, config)

    def remove(self, trigger: Trigger) -> None:
        binding = self._bindings.pop(trigger.id, None)
        if binding is None:
            return
        binding.closed = True
        if binding.pending:
            self._drop("unregistered", binding.pending)
        binding.lanes.clear()
        binding.ready.clear()
        binding.pending = 0

    # -- ChangeSink ---------------------------------------------------------------------------

    def __call__(self, change: Change) -> None:
        """Called by the adapter, in revision order, for every committed change. Never blocks."""
        if self._metrics is not None:
            self._child("events", change.kind.value.removeprefix("state:")).inc()
        if not self.enabled:
            return
        now = time.monotonic()
        for binding in self._bindings.values():
            if not binding.config.matches(change):
                continue
            if binding.pending >= self._queue_size:
                self._drop("queue_full")
                continue
            lane_key = (change.scope, change.key)
            lane = binding.lanes.get(lane_key)
            if lane is None:
                lane = binding.lanes[lane_key] = deque()
                binding.ready.append(lane_key)
            lane.append((change, now))
            binding.pending += 1
            self._pump(binding)

    # -- delivery -------------------------------------------------------------------------------

    def _pump(self, binding: _Binding) -> None:
        while binding.ready and binding.running < self._concurrency:
            binding.running += 1
            task = asyncio.get_running_loop().create_task(self._run(binding))
            self._tasks.add(task)
            self._idle.clear()
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _run(self, binding: _Binding) -> None:
        """One runner: take a ready lane, deliver its oldest event, requeue the lane, repeat."""
        try:
            while binding.ready and not binding.is_closed():
                lane_key = binding.ready.popleft()
                lane = binding.lanes.get(lane_key)
                if not lane:
                    binding.lanes.pop(lane_key, None)
                    continue
                change, enqueued = lane.popleft()
                binding.pending -= 1
                await self._deliver(binding.trigger, binding.config, change, enqueued)
                if binding.is_closed():  # unregistered while we were delivering
                    break
                if lane:
                    binding.ready.append(lane_key)  # back of the line: round-robin across keys
                else:
                    binding.lanes.pop(lane_key, None)
        finally:
            binding.running -= 1

    async def _deliver(
        self, trigger: Trigger, config: StateTriggerConfig, change: Change, enqueued: float
    ) -> None:
        event = change.to_event()
        if self._metrics is not None:
            self._metrics.trigger_lag.observe(time.monotonic() - enqueued)
        if config.condition_function_id is not None:
            try:
                verdict = await self._functions.invoke(
                    config.condition_function_id,
                    event,
                    namespace=trigger.namespace,
                    timeout=self._timeout,
                )
            except (GatewayError, Exception) as exc:  # an erroring condition skips the handler
                log.warning(
                    "state trigger %s: condition %s failed: %s", trigger.id, config.condition_function_id, exc
                )
                self._fired("condition_error")
                return
            if verdict is False:
                self._fired("skipped")
                return
        try:
            await self._functions.invoke(
                trigger.function_id,
                event,
                namespace=trigger.namespace,
                metadata=trigger.metadata,
                timeout=self._timeout,
            )
        except GatewayError as exc:
            self.failed += 1
            log.warning("state trigger %s: handler %s failed: %s", trigger.id, trigger.function_id, exc)
            self._fired("timeout" if exc.code == "timeout" else "error")
            return
        except Exception:  # never let a handler bug kill the runner
            self.failed += 1
            log.exception("state trigger %s: handler %s raised", trigger.id, trigger.function_id)
            self._fired("error")
            return
        self.delivered += 1
        self._fired("ok")

    def _fired(self, outcome: str) -> None:
        if self._metrics is not None:
            self._child("triggers_fired", "state", outcome).inc()

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        if self._metrics is not None:
            self._child("trigger_drops", reason).inc(n)

    def _child(self, family: str, *labels: str) -> Any:
        """A metric child, looked up once per label set (``labels()`` is costly per event)."""
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            assert self._metrics is not None
            child = self._children[key] = getattr(self._metrics, family).labels(*labels)
        return child

    # -- lifecycle --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until nothing is pending or running (tests, graceful shutdown)."""
        while self._tasks:
            await self._idle.wait()

    async def close(self) -> None:
        for binding in self._bindings.values():
            binding.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> dict[str, float]:
        return {
            "state_triggers": float(len(self._bindings)),
            "state_trigger_pending": float(sum(b.pending for b in self._bindings.values())),
            "state_trigger_running": float(sum(b.running for b in self._bindings.values())),
        }
