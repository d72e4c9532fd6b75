"""The ``cron`` trigger type: call a function on a schedule.

Expressions (UTC), as the reference engine reads them (the Rust ``cron`` crate):

* 6 or 7 fields, **seconds first**: ``sec min hour day-of-month month day-of-week [year]``.
  Day of week is 1-7 with **1 = Sunday** (crate convention) or ``SUN``-``SAT``; months 1-12 or
  ``JAN``-``DEC``; years 1970-2100. Each field is ``*`` or ``?``, a value, a range ``a-b``, a step
  ``*/n``, ``a/n`` (from a to the end) or ``a-b/n``, or a comma list of those. Day of month and
  day of week must both match.
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``.
* Beyond the reference, for the seed documents' ``*/5 * * * *``: 5 fields are classic Unix cron
  (``min hour dom month dow``, seconds 0, dow 0-7 with 0 and 7 = Sunday, and day of month OR day
  of week when both are restricted, as Vixie cron does). The crate rejects 5 fields.

The parser is ours, not ``croniter``: croniter puts seconds *last* in 6-field expressions,
numbers Sunday 0 and does not read the crate's ``a/n`` or 7-field year syntax, so it would fire
reference expressions at the wrong times.

Firing: each binding gets the payload ``{"trigger": "cron", "job_id": <trigger id>,
"scheduled_time", "actual_time"}`` (RFC 3339) and the trigger's metadata; a
``condition_function_id`` returning exactly ``false`` (or failing) skips the call. One
scheduler task owns all timers (a heap of next fire times); each fire runs in its own task,
at most one at a time per binding (a fire that finds the previous one still running is
skipped and counted, as the reference's job loop skips the times it missed), and at most
``max_concurrent`` fires overall.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.errors import GatewayError
from gateway.functions import FunctionRegistry
from gateway.metrics import Metrics
from gateway.triggers.registry import Trigger, TriggerRegistrationError

__all__ = ["CronSchedule", "CronTriggerType", "parse_cron"]

log = logging.getLogger(__name__)

MAX_YEAR: Final = 2100
_MONTHS: Final = {n.lower(): i for i, n in enumerate(calendar.month_abbr) if n} | {
    n.lower(): i for i, n in enumerate(calendar.month_name) if n
}
_DAY_NAMES: Final = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
_DAYS_CRATE: Final = {d[:3]: i + 1 for i, d in enumerate(_DAY_NAMES)} | {
    d: i + 1 for i, d in enumerate(_DAY_NAMES)
}
_DAYS_UNIX: Final = {k: v - 1 for k, v in _DAYS_CRATE.items()}
_SHORTHANDS: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 1",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}


def _value(text: str, lo: int, hi: int, names: dict[str, int] | None, label: str) -> int:
    if text.isdigit():
        v = int(text)
    elif names is not None and text.lower() in names:
        v = names[text.lower()]
    else:
        raise ValueError(f"invalid {label} value {text!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{label} value {v} is outside {lo}-{hi}")
    return v


def _field(text: str, lo: int, hi: int, label: str, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"invalid {label} step {step_text!r}")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, lo, hi, names, label), _value(b, lo, hi, names, label)
            if start > end:
                raise ValueError(f"{label} range {base!r} runs backwards")
        elif base:
            start = _value(base, lo, hi, names, label)
            end = hi if slash else start
        else:
            raise ValueError(f"empty {label} field element in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed expression. ``weekdays`` uses 1 = Sunday ... 7 = Saturday."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    years: frozenset[int] | None = None  # None: every year
    day_or: bool = False  # Unix rule: restricted day-of-month OR restricted day-of-week

    def _day_ok(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 + 1 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def matches(self, t: datetime) -> bool:
        return (
            t.second in self.seconds
            and t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and (self.years is None or t.year in self.years)
            and self._day_ok(t)
        )

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (UTC, whole seconds), or None if none is left."""
        t = after.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        while t.year <= MAX_YEAR:
            if self.years is not None and t.year not in self.years:
                later = [y for y in self.years if y > t.year]
                if not later:
                    return None
                t = datetime(min(later), 1, 1, tzinfo=UTC)
                continue
            if t.month not in self.months:
                t = _next_unit(t, "month", self.months)
                continue
            if not self._day_ok(t):
                t = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = _next_unit(t, "hour", self.hours)
                continue
            if t.minute not in self.minutes:
                t = _next_unit(t, "minute", self.minutes)
                continue
            if t.second not in self.seconds:
                t = _next_unit(t, "second", self.seconds)
                continue
            return t
        return None


def _next_unit(t: datetime, unit: str, allowed: frozenset[int]) -> datetime:
    """The start of the next allowed ``unit`` value after ``t``'s, carrying into the larger unit."""
    nxt = min((v for v in allowed if v > getattr(t, unit)), default=None)
    if unit == "month":
        if nxt is None:
            return datetime(t.year + 1, 1, 1, tzinfo=UTC)
        return datetime(t.year, nxt, 1, tzinfo=UTC)
    if unit == "hour":
        day = datetime(t.year, t.month, t.day, tzinfo=UTC)
        return day + timedelta(days=1) if nxt is None else day.replace(hour=nxt)
    if unit == "minute":
        hour = t.replace(minute=0, second=0)
        return hour + timedelta(hours=1) if nxt is None else hour.replace(minute=nxt)
    minute = t.replace(second=0)
    return minute + timedelta(minutes=1) if nxt is None else minute.replace(second=nxt)


def parse_cron(expression: str) -> CronSchedule:
    """Parse an expression (see the module docstring). Raises ValueError naming the problem."""
    text = _SHORTHANDS.get(expression.strip().lower(), expression)
    fields = text.split()
    if len(fields) == 5:
        return _parse_unix(expression, fields)
    if len(fields) not in (6, 7):
        raise ValueError(f"expected 6 or 7 fields (seconds first), got {len(fields)}")
    return CronSchedule(
        expression,
        seconds=_field(fields[0], 0, 59, "seconds"),
        minutes=_field(fields[1], 0, 59, "minutes"),
        hours=_field(fields[2], 0, 23, "hours"),
        days=_field(fields[3], 1, 31, "day of month"),
        months=_field(fields[4], 1, 12, "month", _MONTHS),
        weekdays=_field(fields[5], 1, 7, "day of week", _DAYS_CRATE),
        years=_field(fields[6], 1970, MAX_YEAR, "year") if len(fields) == 7 else None,
    )


def _parse_unix(expression: str, fields: list[str]) -> CronSchedule:
    unix_dow = _field(fields[4], 0, 7, "day of week", _DAYS_UNIX)
    restricted = [f[:1] not in ("*", "?") for f in (fields[2], fields[4])]
    return CronSchedule(
        expression,
        seconds=frozenset({0}),
        minutes=_field(fields[0], 0, 59, "minutes"),
        hours=_field(fields[1], 0, 23, "hours"),
        days=_field(fields[2], 1, 31, "day of month"),
        months=_field(fields[3], 1, 12, "month", _MONTHS),
        weekdays=frozenset(v % 7 + 1 for v in unix_dow),
        day_or=all(restricted),
    )


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


@dataclass(slots=True)
class _Job:
    trigger: Trigger
    schedule: CronSchedule
    condition_function_id: str | None
    generation: int
    running: asyncio.Task[None] | None = None
    fires: int = 0


class CronTriggerType:
    """Provider of the ``cron`` trigger type and its scheduler (``start``/``close``)."""

    name = "cron"

    def __init__(
        self,
        functions: FunctionRegistry,
        metrics: Metrics | None = None,
        *,
        now: Callable[[], datetime] | None = None,
        max_concurrent: int = 256,
    ) -> None:
        self._functions = functions
        self._metrics = metrics
        self._now = now or (lambda: datetime.now(UTC))
        self.max_concurrent = max_concurrent
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[datetime, int, str, int]] = []  # (when, seq, trigger id, generation)
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fires: set[asyncio.Task[None]] = set()

    # -- TriggerType ------------------------------------------------------------------------

    def add(self, trigger: Trigger) -> None:
        config = trigger.config
        if not isinstance(config, dict):
            raise TriggerRegistrationError("cron trigger config must be an object with an expression")
        expression = config.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise TriggerRegistrationError("Cron expression is required")
        cond = config.get("condition_function_id")
        if cond is not None and not isinstance(cond, str):
            raise TriggerRegistrationError("condition_function_id must be a string")
        try:
            schedule = parse_cron(expression)
        except ValueError as exc:
            raise TriggerRegistrationError(f"Invalid cron expression '{expression}': {exc}") from None
        first = schedule.next_after(self._now())
        if first is None:
            raise TriggerRegistrationError(f"Invalid cron expression '{expression}': it never fires")
        self._seq += 1
        old = self._jobs.get(trigger.id)
        self._jobs[trigger.id] = _Job(
            trigger, schedule, cond, self._seq, running=old.running if old else None
        )
        heapq.heappush(self._heap, (first, self._seq, trigger.id, self._seq))
        self._wake.set()

    def remove(self, trigger: Trigger) -> None:
        if self._jobs.pop(trigger.id, None) is not None:
            self._wake.set()  # its heap entry is now stale and gets dropped

    def statistics(self) -> dict[str, float]:
        return {"cron_jobs": float(len(self._jobs)), "cron_fires_in_flight": float(len(self._fires))}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler task (bindings added before this fire once it runs)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cron-scheduler")

    async def close(self) -> None:
        """Stop the scheduler and cancel fires in progress."""
        tasks = [t for t in (self._task, *self._fires) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            now = self._now()
            while self._heap and self._heap[0][0] <= now:
                when, _, job_id, generation = heapq.heappop(self._heap)
                job = self._jobs.get(job_id)
                if job is None or job.generation != generation:
                    continue  # removed or replaced since this entry was pushed
                self._fire(job, when)
                nxt = job.schedule.next_after(max(when, now))  # missed times are skipped, not replayed
                if nxt is not None:
                    self._seq += 1
                    heapq.heappush(self._heap, (nxt, self._seq, job_id, generation))
            delay = (self._heap[0][0] - now).total_seconds() if self._heap else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _fire(self, job: _Job, scheduled: datetime) -> None:
        if job.running is not None and not job.running.done():
            self._count("overlap")
            return
        if len(self._fires) >= self.max_concurrent:
            self._count("overload")
            return
        task = asyncio.create_task(self._call(job, scheduled))
        job.running = task
        self._fires.add(task)
        task.add_done_callback(self._fires.discard)

    async def _call(self, job: _Job, scheduled: datetime) -> None:
        trigger = job.trigger
        event = {
            "trigger": "cron",
            "job_id": trigger.id,
            "scheduled_time": rfc3339(scheduled),
            "actual_time": rfc3339(self._now()),
        }
        job.fires += 1
        if job.condition_function_id is not None:
            try:
                ok = await self._functions.invoke(
                    job.condition_function_id, event, namespace=trigger.namespace
                )
            except GatewayError as exc:
                log.warning("cron %s: condition %s failed: %s", trigger.id, job.condition_function_id, exc)
                self._count("condition_error")
                return
            if ok is False:
                self._count("skipped")
                return
        try:
            await self._functions.invoke(
                trigger.function_id, event, namespace=trigger.namespace, metadata=trigger.metadata
            )
        except GatewayError as exc:
            log.warning("cron %s: %s failed: %s", trigger.id, trigger.function_id, exc)
            self._count("error")
        else:
            self._count("ok")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.triggers_fired.labels("cron", outcome).inc()
