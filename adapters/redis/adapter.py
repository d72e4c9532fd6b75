"""``RedisAdapter``: the state in Redis, shared by any number of gateways and reference engines.

**Layout** (details in :mod:`adapters.redis.scripts`): scope = hash ``state:<scope>``, field =
key, value = compact JSON text, exactly as the reference engine stores it. Revision counter,
epoch, event stream, scope index and per-key revisions live under ``key_prefix``.

**Atomicity.** ``set`` and ``delete`` are each one Lua script: read the old value, INCR the
revision, write, XADD the change event. ``update`` reads the stored text, applies the ops in
Python (:func:`gateway.state.ops.apply_ops`, the one implementation of update ops), and writes
with a compare-and-set script that only succeeds if the stored text is still the one it read;
on a conflict it re-reads and re-applies, with jittered backoff, at most ``cas_max_retries``
times. Within one process, updates of the same key queue on a per-key lock, so conflicts only
come from other engines. Lua never decodes JSON: the bytes Python wrote are the bytes stored.

**Events.** Every adapter tails the event stream (:mod:`adapters.redis.events`); sinks see every
write of every gateway on this Redis once, in revision order, own writes included (they come
back through the stream, about one round trip after the write returns).

**Scope index and foreign writers** (:mod:`adapters.redis.scopes`). ``list_groups`` reads the
``P scopes`` sorted set kept by the write scripts, never the keyspace. A reference engine
writing the same Redis does not keep the index: a scope it *creates* becomes visible to
``list_groups`` after the next reconcile (``SCAN MATCH state:* TYPE hash``), which runs at
start, every ``reconcile_interval`` seconds, and on demand via
:meth:`RedisAdapter.reconcile_scopes`; a scope it *empties* disappears at once (the prune step).
Values it writes are read normally; they carry no gateway revision (``Entry.revision`` is the
revision of the last gateway write of that key, 0 if none), and its writes produce no events.

**Corrupt values** (a field that is not valid JSON, written by something else): ``get`` and
``update`` raise :class:`CorruptDataError` naming scope and key; ``list``/``items`` skip the
entry, log an error naming scope and key and count it in ``corrupt_values_total``; ``set`` and
``delete`` replace or remove it (reporting ``old_value`` None), which is how an operator repairs it.

**Failures.** Every operation runs under ``command_timeout_ms``; with Redis down it fails with
:class:`AdapterUnavailable` (refused/reset) or :class:`AdapterTimeout` and ``ready()`` is False
until a command or the tailer reaches Redis again. ``start`` fails with AdapterUnavailable when
Redis cannot be reached, as the reference engine does. Redis Cluster is not supported (the
scripts touch keys of several slots); Sentinel is (see :mod:`adapters.redis.connection`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import ResponseError

from adapters.redis import scripts as lua
from adapters.redis.connection import Arg, Health, RedisExecutor, parse_redis_url
from adapters.redis.events import EventTailer, backoff_delay
from adapters.redis.locks import KeyLocks
from adapters.redis.scopes import ScopeIndex
from adapters.redis.scripts import KeyLayout
from gateway import jsonutil
from gateway.config.settings import RedisSettings
from gateway.errors import AdapterError, AdapterUnavailable, ConfigError, CorruptDataError, ValueTooLarge
from gateway.state.adapter import ChangeSink, Entry, StoreInfo, WriteResult
from gateway.state.ops import apply_ops

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.state.ops import UpdateOp

__all__ = ["RedisAdapter"]

log = logging.getLogger(__name__)

JSON = Any

_NEW: Final = "new"
_OPEN: Final = "open"
_CLOSED: Final = "closed"


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class RedisAdapter:
    """The ``redis`` state adapter. See the module docstring for the design.

    The user-facing knobs come from :class:`RedisSettings` (``redis_url``, connect and command
    timeouts, ``pool_size``, ``stream_max_len``, ``key_prefix``). The class attributes below are
    engineering tunables with safe defaults; the constructor reads the connection, tailer and
    cursor ones, so override those on the class (or a subclass) before constructing; the CAS and
    reconcile ones are read per use.
    """

    name = "redis"

    #: Compare-and-set attempts of one ``update`` before it fails with AdapterError.
    cas_max_retries: int = 64
    #: Full-jitter backoff between CAS attempts (seconds): base * 2^attempt, capped.
    cas_backoff_base: float = 0.001
    cas_backoff_cap: float = 0.05
    #: Reconnect backoff of connects and of the event tailer (seconds).
    reconnect_backoff_base: float = 0.05
    reconnect_backoff_cap: float = 2.0
    #: Connect attempts retried inside one operation before it fails (each bounded by the
    #: connect timeout; the whole operation by the command timeout).
    connect_retries: int = 1
    #: XREAD BLOCK time and batch size of the event tailer.
    event_block_ms: int = 1000
    event_batch: int = 1000
    #: Seconds between reconcile SCANs for scopes created by foreign writers; 0 disables.
    reconcile_interval: float = 60.0
    #: Seconds an engine's saved event position outlives its last refresh (a gateway away for
    #: longer starts from the present, like a new engine id).
    cursor_ttl: int = 7 * 24 * 3600

    def __init__(self, settings: RedisSettings, *, engine_id: str, metrics: Metrics | None = None) -> None:
        if not engine_id:
            raise ConfigError("the redis adapter needs a non-empty engine_id (it names the event cursor)")
        self.settings = settings
        self.engine_id = engine_id
        self._metrics = metrics  # no Redis-specific families: live values go via statistics()
        try:
            self._keys = KeyLayout(_enc(settings.key_prefix))
        except ValueError as exc:
            raise ConfigError(str(exc), key="key_prefix") from exc
        self._target = parse_redis_url(settings.redis_url)
        self._timeout = settings.command_timeout_ms / 1000
        self._maxlen = settings.stream_max_len
        self.health = Health()
        self._exec = RedisExecutor(
            self._target,
            pool_size=settings.pool_size,
            connect_timeout=settings.connect_timeout_ms / 1000,
            backoff_base=self.reconnect_backoff_base,
            backoff_cap=self.reconnect_backoff_cap,
            connect_retries=self.connect_retries,
            command_timeout=self._timeout,
            health=self.health,
        )
        self._tailer = EventTailer(
            self._exec,
            self._keys,
            engine_id=engine_id,
            health=self.health,
            adopt_epoch=self._adopt_epoch,
            on_corrupt=self._report_corrupt,
            block_ms=self.event_block_ms,
            batch=self.event_batch,
            command_timeout=self._timeout,
            backoff_base=self.reconnect_backoff_base,
            backoff_cap=self.reconnect_backoff_cap,
            cursor_ttl=self.cursor_ttl,
        )
        self._scopes = ScopeIndex(self._exec, self._keys)
        self._locks = KeyLocks()
        self._state = _NEW
        self._epoch = ""
        self._revision = 0  # highest revision this process has seen assigned
        self._reconciler: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.cas_retries_total = 0
        self.cas_exhausted_total = 0
        self.corrupt_values_total = 0
        self.epoch_adoptions_total = 0
        self.reconciled_scopes_total = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reach Redis, learn (or create) the epoch, find the event position, start tasks.

        Raises AdapterUnavailable/AdapterTimeout when Redis cannot be reached (connections are
        released; the adapter is closed).
        """
        if self._state != _NEW:
            raise AdapterError("redis adapter: start() called twice")
        try:
            async with self._deadline("start"):
                self._epoch = await self._init_epoch()
                cursor_raw, revision_raw = await asyncio.gather(
                    self._exec.call("GET", self._keys.cursor(self.engine_id)),
                    self._exec.call("GET", self._keys.revision),
                )
        except BaseException:
            self._state = _CLOSED
            await self._exec.aclose()
            raise
        self._revision = int(revision_raw or 0)
        cursor = EventTailer.parse_cursor(cursor_raw)
        if cursor is None:
            position = self._revision  # a new engine id: events from now on
        elif cursor[0] == self._epoch:
            position = cursor[1]  # resume where this engine id stopped
        else:
            position = 0  # the store was reset since: its whole new history
            log.warning(
                "redis store epoch is %s but engine %s last read epoch %s: delivering the new history",
                self._epoch, self.engine_id, cursor[0],
            )  # fmt: skip
        self._tailer.start(self._epoch, position, saved=cursor == (self._epoch, position))
        self._state = _OPEN
        if self.reconcile_interval > 0:
            self._reconciler = asyncio.create_task(self._run_reconciler(), name="redis-scope-reconcile")
        log.info(
            "redis adapter on %s: epoch %s, revision %d, events after %d",
            self._target.display, self._epoch, self._revision, position,
        )  # fmt: skip

    async def close(self) -> None:
        """Stop the tasks, save the event position, close connections. Idempotent: a second
        call waits for the first to finish."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._close()
        finally:
            self._closing.set_result(None)

    async def _close(self) -> None:
        started = self._state == _OPEN
        self._state = _CLOSED
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        await self._tailer.stop()
        if started:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._tailer.persist_cursor()
            except (AdapterError, TimeoutError) as exc:
                log.warning("redis adapter: could not save the event position at close: %s", exc)
        await self._exec.aclose()

    def ready(self) -> bool:
        return self._state == _OPEN and self.health.up

    def info(self) -> StoreInfo:
        """Epoch and the newest revision this process knows of (its own writes, delivered events).

        Events may still be on their way to the sinks: ``extra["delivered_revision"]`` is how
        far they got.
        """
        return StoreInfo(
            epoch=self._epoch,
            revision=self.latest_revision,
            extra={"redis_url": self._target.display, "delivered_revision": self._tailer.delivered},
        )

    @property
    def latest_revision(self) -> int:
        return max(self._revision, self._tailer.delivered)

    def subscribe(self, sink: ChangeSink) -> None:
        """Sinks get every change committed after this call (writes that already returned are
        not replayed to them), from the event tailer task."""
        self._tailer.subscribe(sink, after=self.latest_revision)

    async def wait_delivered(self, revision: int, timeout: float | None = None) -> None:
        """Wait until the sinks have seen ``revision`` (tests, and read-your-events callers)."""
        async with asyncio.timeout(timeout):
            await self._tailer.wait_delivered(revision)

    def statistics(self) -> dict[str, float]:
        """Live gauges, read at scrape time (metric ``iii_gateway_<name>``)."""
        t = self._tailer
        return {
            "redis_connected": 1.0 if self.ready() else 0.0,
            "redis_revision": self.latest_revision,
            "redis_delivered_revision": t.delivered,
            "redis_stream_lag": max(0, self.latest_revision - t.delivered),
            "redis_reconnects_total": self.health.reconnects,
            "redis_cas_retries_total": self.cas_retries_total,
            "redis_cas_exhausted_total": self.cas_exhausted_total,
            "redis_corrupt_values_total": self.corrupt_values_total,
            "redis_events_delivered_total": t.events_delivered_total,
            "redis_events_missed_total": t.events_missed_total,
            "redis_event_sink_errors_total": t.sink_errors_total,
            "redis_bad_events_total": t.bad_entries_total,
            "redis_epoch_changes_total": t.epoch_changes_total,
            "redis_reconciled_scopes_total": self.reconciled_scopes_total,
        }

    # ------------------------------------------------------------------ plumbing

    @contextlib.asynccontextmanager
    async def _deadline(self, op: str, *, write: bool = False) -> AsyncIterator[None]:
        """Bound a whole operation by the command timeout; map the overrun to AdapterTimeout."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise self._exec.timeout_error(op, self._timeout, maybe_applied=write) from exc
        except ResponseError as exc:  # an error reply: NOPERM, WRONGTYPE (a foreign non-hash key) ...
            raise AdapterError(f"redis at {self._target.display} refused {op}: {exc}") from exc

    def _check_open(self) -> None:
        if self._state != _OPEN:
            raise AdapterUnavailable(f"redis adapter is {self._state}")

    async def _init_epoch(self) -> str:
        raw = await self._exec.run_script(
            lua.INIT_EPOCH, (self._keys.epoch,), (secrets.token_hex(8),), write=False
        )
        return _name(raw)

    async def _adopt_epoch(self) -> str:
        """The stored epoch is not ours (data lost or flushed): take the current one, or make it."""
        epoch = await self._init_epoch()
        if epoch != self._epoch:
            log.error("redis store epoch changed from %s to %s", self._epoch, epoch)
            self._epoch = epoch
            self._revision = 0
            self.epoch_adoptions_total += 1
        return epoch

    async def _write(self, script: lua.Script, scope: str, args: Sequence[Arg]) -> Any:
        """Run a write script; on an EPOCH refusal adopt the new epoch and run it once more."""
        keys = self._keys.write_keys(scope)
        for attempt in (0, 1):
            try:
                return await self._exec.run_script(script, keys, (self._epoch, *args), write=True)
            except ResponseError as exc:
                if not str(exc).startswith("EPOCH") or attempt:
                    raise AdapterError(f"redis refused {script.name} on scope {scope!r}: {exc}") from exc
                await self._adopt_epoch()
        raise AssertionError("unreachable")

    def _seen(self, revision: int) -> None:
        if revision > self._revision:
            self._revision = revision

    def _report_corrupt(self, scope: str, key: str, detail: str) -> None:
        self.corrupt_values_total += 1
        log.error("corrupt JSON in redis hash state:%s field %r (scope %r, key %r): %s",
                  scope, key, scope, key, detail)  # fmt: skip

    def _decode(self, raw: bytes, scope: str, key: str) -> JSON:
        """A stored value; CorruptDataError naming scope and key when it is not JSON."""
        try:
            return jsonutil.loads(raw.decode())
        except ValueError as exc:
            self._report_corrupt(scope, key, str(exc))
            raise CorruptDataError(
                f"stored value of scope {scope!r} key {key!r} is not valid JSON: {exc}",
                path=f"redis hash state:{scope} field {key}",
            ) from exc

    def _old_value(self, existed: int, raw: bytes, scope: str, key: str) -> JSON:
        """The replaced value of a set/delete; a corrupt one is reported and read as None."""
        if not existed:
            return None
        try:
            return jsonutil.loads(raw.decode())
        except ValueError as exc:
            self._report_corrupt(scope, key, f"replaced value: {exc}")
            return None

    # ------------------------------------------------------------------ reads

    async def get(self, scope: str, key: str) -> Entry | None:
        self._check_open()
        async with self._deadline("get"):
            raw, rev = await self._exec.run_script(
                lua.GET, (self._keys.scope_hash(scope), self._keys.key_revisions(scope)), (_enc(key),),
                write=False,
            )  # fmt: skip
        if raw is None:
            return None
        return Entry(self._decode(raw, scope, key), int(rev or 0))

    async def items(self, scope: str) -> builtins.list[tuple[str, Entry]]:
        self._check_open()
        async with self._deadline("list"):
            values, revisions = await self._exec.run_script(
                lua.ITEMS, (self._keys.scope_hash(scope), self._keys.key_revisions(scope)), (),
                write=False,
            )  # fmt: skip
        revs = dict(zip(revisions[::2], revisions[1::2], strict=True))
        out: builtins.list[tuple[str, Entry]] = []
        for field, raw in zip(values[::2], values[1::2], strict=True):
            key = _name(field)
            try:
                value = jsonutil.loads(raw.decode())
            except ValueError as exc:  # reported, skipped: one bad value never fails a list
                self._report_corrupt(scope, key, f"skipped in list: {exc}")
                continue
            out.append((key, Entry(value, int(revs.get(field, 0)))))
        return out

    async def list(self, scope: str) -> builtins.list[JSON]:
        return [entry.value for _, entry in await self.items(scope)]

    async def list_groups(self) -> builtins.list[str]:
        """Scopes holding keys, bytewise sorted: the index, pruned of hashes that vanished."""
        self._check_open()
        async with self._deadline("list_groups"):
            return await self._scopes.groups()

    async def reconcile_scopes(self) -> int:
        """Index every ``state:*`` hash (scopes created by foreign writers); returns how many.

        A keyspace-wide SCAN, each page under its own deadline: it runs in the background (at
        start and every ``reconcile_interval``) or when called, never on a request path.
        """
        self._check_open()
        found, cursor = 0, 0
        while True:
            async with self._deadline("reconcile"):
                cursor, n = await self._scopes.reconcile_page(cursor)
            found += n
            if cursor == 0:
                break
        self.reconciled_scopes_total += found
        return found

    async def _run_reconciler(self) -> None:
        while True:
            try:
                n = await self.reconcile_scopes()
                log.debug("redis scope reconcile indexed %d scopes", n)
            except AdapterError as exc:
                log.warning("redis scope reconcile failed (retried in %gs): %s", self.reconcile_interval, exc)
            except Exception:  # a bug must not end the task (close() awaits it)
                log.exception("redis scope reconcile failed")
            await asyncio.sleep(self.reconcile_interval)

    # ------------------------------------------------------------------ writes

    async def set(self, scope: str, key: str, value: JSON, *, origin: str | None = None) -> WriteResult:
        self._check_open()
        text = jsonutil.dumps(value)
        async with self._deadline("set", write=True):
            rev, existed, old = await self._write(
                lua.SET,
                scope,
                (_enc(scope), _enc(key), _enc(text), _enc(origin or self.engine_id), self._maxlen),
            )
        self._seen(rev)
        return WriteResult(bool(existed), self._old_value(existed, old, scope, key), value, rev)

    async def delete(self, scope: str, key: str, *, origin: str | None = None) -> WriteResult:
        self._check_open()
        async with self._deadline("delete", write=True):
            rev, existed, old = await self._write(
                lua.DELETE, scope, (_enc(scope), _enc(key), _enc(origin or self.engine_id), self._maxlen)
            )
        self._seen(rev)
        return WriteResult(bool(existed), self._old_value(existed, old, scope, key), None, rev)

    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp],
        *,
        max_value_bytes: int | None = None,
        origin: str | None = None,
    ) -> WriteResult:
        self._check_open()
        hash_key, field = self._keys.scope_hash(scope), _enc(key)
        source = _enc(origin or self.engine_id)
        async with self._deadline("update", write=True), self._locks.hold(scope, key):
            for attempt in range(self.cas_max_retries + 1):
                if attempt:
                    self.cas_retries_total += 1
                    await asyncio.sleep(
                        backoff_delay(attempt - 1, self.cas_backoff_base, self.cas_backoff_cap)
                    )
                raw = await self._exec.call("HGET", hash_key, field)
                existed = raw is not None
                current = self._decode(raw, scope, key) if existed else None
                outcome = apply_ops(current, existed, ops)
                data = _enc(jsonutil.dumps(outcome.value))
                if max_value_bytes is not None and len(data) > max_value_bytes:
                    raise ValueTooLarge(len(data), max_value_bytes)
                reply = await self._write(
                    lua.UPDATE_CAS,
                    scope,
                    (_enc(scope), field, b"1" if existed else b"0", raw or b"", data, source, self._maxlen),
                )
                if reply[0]:
                    self._seen(reply[0])
                    return WriteResult(existed, current, outcome.value, reply[0], outcome.errors)
        self.cas_exhausted_total += 1
        raise AdapterError(
            f"update of scope {scope!r} key {key!r} gave up after {self.cas_max_retries + 1} attempts: "
            "the value kept changing under it (other engines writing the same key)"
        )
