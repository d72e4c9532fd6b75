"""``BridgeAdapter``: this gateway's state lives on upstream gateways, reached over the link.

The reference engine's bridge is a WebSocket worker calling ``state::*`` remotely: no
revisions, no events from writes made elsewhere, a delete done as get + delete, a stored null
indistinguishable from a missing key (``reference/iii-state-semantics.md`` 4.3). Here:

- **Forwarding.** Each of the six operations is one request on an authenticated link
  (:mod:`adapters.bridge.upstream`): ``delete`` is one atomic delete upstream, ``get`` tells a
  stored null from a missing key, results carry the upstream's revisions, and ``update``
  carries the caller's ``max_value_bytes``. What a worker gets through the Bridge is what it
  would get calling the upstream directly.
- **Routing.** A scope goes to the first upstream (in config order) with a matching scope
  pattern; a scope no upstream matches is an error naming it. ``list_groups`` merges the
  upstreams' answers, keeping from each only the scopes routed to it.
- **Writes carry our engine id** as their origin (or the origin a chained caller relayed), so
  the upstream's events, and ours, say who wrote.
- **Events.** This adapter never emits an event for its own write. Every change, ours
  included, comes back on the upstream's watch stream and is handed to the sinks once per
  upstream revision (see ``upstream.py`` for resume and resync). So a write made at the edge
  fires the edge's triggers exactly once, with the upstream's revision, and writes made by
  anyone else on the upstream fire them too.
- **Availability.** ``ready()`` is True when every upstream has a live link; an operation
  routed to an upstream without one fails at once with ``UPSTREAM_UNAVAILABLE``; one that gets
  no answer in ``timeout_ms`` fails with ``TIMEOUT``. ``start()`` waits (up to ``timeout_ms``)
  for the links and their watches, but starts anyway when an upstream is down: the gateway
  serves what it can and keeps dialling.

- **Read cache** (``cache.enabled``, :mod:`adapters.bridge.cache`): ``get``, ``list`` and
  ``items`` are answered locally only while the relay watch of the scope's upstream is live;
  otherwise they go upstream (``bypass``), and with no link they fail with
  ``UPSTREAM_UNAVAILABLE`` -- never from stale entries. The cache is emptied whenever the watch
  stops being live (disconnect, resync, epoch change) and refilled from answers and events of
  the next live period. A relayed change is applied to the cache *before* the sinks (local
  triggers) get it, so a reader here never gets a value older than one a local trigger was
  given. Our own writes' results are applied too (read-your-writes). ``update`` and the
  compare-and-set checks it carries run upstream, never against the cache.

- **Offline outbox** (``outbox.enabled``, :mod:`adapters.bridge.outbox`): with no live link
  to a scope's upstream, ``set``/``delete``/``update`` are appended to a durable local queue
  (fsynced) and answered at once with ``queued`` (revision 0, values unknown); with the queue
  at its limits they fail with ``OUTBOX_FULL``. No local event fires for a queued write until
  it reached the upstream and its event came back. While anything is queued, new writes queue
  behind it, so writes reach the upstream in the order they were made here. One task replays
  the queue, oldest first, as soon as the head's upstream is linked, each write with its
  idempotency key (a crash mid-replay repeats a request, never a write; see
  :mod:`gateway.idempotency` for the upstream's window). The upstream stays the source of
  truth: replayed writes apply there in order, last writer wins. A replayed write the upstream
  refuses (forbidden, too large) is logged and dropped. Reads never use the queue: offline
  they fail with ``UPSTREAM_UNAVAILABLE``.

**Epoch and revision** (``info()``), what a gateway chained below this one resumes against:
with one upstream, the upstream's epoch plus our resync count, and the last relayed revision
(or the newest revision a write of ours returned, if higher). With several upstreams the
revisions of different stores are not one sequence; such a gateway can still serve the six
operations to peers, but watches on it reset whenever revisions interleave backwards.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.bridge.cache import ReadCache
from adapters.bridge.outbox import Outbox, QueuedWrite
from adapters.bridge.position import RelayPosition
from adapters.bridge.upstream import Upstream
from gateway.config.settings import BridgeSettings
from gateway.errors import AdapterError, AdapterTimeout, AdapterUnavailable, ConfigError, GatewayError
from gateway.link.auth import load_private_key
from gateway.link.backoff import Backoff
from gateway.link.requests import (
    DeleteArgs,
    GetArgs,
    ItemsArgs,
    ListArgs,
    ListGroupsArgs,
    RequestArgs,
    SetArgs,
    UpdateArgs,
)
from gateway.state.adapter import Change, ChangeKind, ChangeSink, Entry, StoreInfo, WriteResult
from gateway.state.ops import DOC_URL, OpError

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.state.ops import UpdateOp

__all__ = ["BridgeAdapter"]

log = logging.getLogger(__name__)

JSON = Any


def _write_result(result: Any) -> WriteResult:
    errors = tuple(
        OpError(int(e["op_index"]), str(e["code"]), str(e["message"]), str(e.get("doc_url", DOC_URL)))
        for e in result.get("errors") or ()
    )
    return WriteResult(
        bool(result["existed"]), result["old_value"], result["new_value"], int(result["revision"]), errors
    )


def _position(directory: str | None, upstream: str) -> RelayPosition | None:
    return RelayPosition(Path(directory) / f"relay-{upstream}.json") if directory else None


class BridgeAdapter:
    """The ``bridge`` state adapter (see the module docstring).

    ``backoff`` builds each upstream's reconnect policy (tests shorten it); ``link_options``
    go to every link (heartbeat and idle times, frame size). ``position_dir``: where each
    upstream's relay position is kept (``relay-<upstream>.json``, see ``position.py``) so a
    restart resumes the relay; None keeps none (the relay starts live-from-now).
    """

    name = "bridge"

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        engine_id: str,
        metrics: Metrics | None = None,
        backoff: Callable[[], Backoff] | None = None,
        link_options: dict[str, Any] | None = None,
        position_dir: str | None = None,
    ) -> None:
        if not settings.identity:
            raise ConfigError(
                "the bridge needs this gateway's private key file", key="adapter.config.identity"
            )
        if not settings.upstreams:
            raise ConfigError("the bridge needs at least one upstream", key="upstreams")
        if not engine_id:
            raise ConfigError("the bridge needs a non-empty engine_id (it identifies this gateway upstream)")
        self.settings = settings
        self.engine_id = engine_id
        self._metrics = metrics
        identity = load_private_key(settings.identity)
        self.timeout = settings.timeout_ms / 1000
        self._sinks: list[ChangeSink] = []
        self._closed = False
        self._started = False
        self._write_revision = 0
        self.upstreams: list[Upstream] = [
            Upstream(
                up,
                identity=identity,
                engine_id=engine_id,
                timeout=self.timeout,
                relay=settings.relay_events,
                deliver=self._deliver,
                owns=self._owner_check(index),
                metrics=metrics,
                backoff=backoff() if backoff is not None else None,
                link_options=link_options,
                position=_position(position_dir, up.name),
            )
            for index, up in enumerate(settings.upstreams)
        ]
        # One read cache per upstream (a relayed watch covers exactly its routed scopes).
        caching = settings.cache.enabled and settings.relay_events
        self._caches: list[ReadCache | None] = [
            ReadCache(settings.cache.max_entries) if caching else None for _ in self.upstreams
        ]
        self._cache_counts = (
            {r: metrics.cache_requests.labels(r) for r in ("hit", "miss", "bypass")}
            if metrics is not None
            else None
        )
        box = settings.outbox
        self._outbox = (
            Outbox(box.path, max_entries=box.max_entries, max_bytes=box.max_bytes, engine_id=engine_id)
            if box.enabled
            else None
        )
        self._outbox_wake = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        self.outbox_rejected_total = 0
        if metrics is not None:
            for upstream in self.upstreams:
                metrics.live.add(upstream.statistics, labels={"upstream": upstream.name})

    def _owner_check(self, index: int) -> Callable[[str], bool]:
        def owns(scope: str) -> bool:
            return self._route_index(scope) == index

        return owns

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start dialling every upstream; wait up to ``timeout_ms`` for links and watches."""
        if self._started:
            raise AdapterError("bridge adapter: start() called twice")
        self._started = True
        if self._outbox is not None:
            try:
                self._outbox.open()
            except OSError as exc:
                raise ConfigError(
                    f"cannot open the outbox {self._outbox.file}: {exc.strerror}",
                    key="adapter.config.outbox.path",
                ) from exc
            if self._outbox.pending:
                log.info("bridge: %d queued writes to replay from the outbox", len(self._outbox))
            self._replayer = asyncio.create_task(self._replay(), name="bridge-outbox-replay")
        for upstream in self.upstreams:
            upstream.start()
        waits = [asyncio.ensure_future(u.wait_ready()) for u in self.upstreams]
        _, pending = await asyncio.wait(waits, timeout=self.timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        down = [u.name for u in self.upstreams if not u.connected]
        if down:
            log.warning("bridge: starting without upstream(s) %s; still trying", ", ".join(down))
        cache = self.settings.cache
        if cache.enabled and not self.settings.relay_events:
            log.info("bridge: the read cache needs relay_events; every read goes upstream")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        replayer, self._replayer = self._replayer, None
        if replayer is not None:
            replayer.cancel()
            await asyncio.wait([replayer])
        await asyncio.gather(*(u.close() for u in self.upstreams))
        if self._outbox is not None:
            self._outbox.close()

    def ready(self) -> bool:
        return not self._closed and self._started and all(u.connected for u in self.upstreams)

    def info(self) -> StoreInfo:
        ups = self.upstreams
        if len(ups) == 1:
            up = ups[0]
            epoch = f"{up.epoch}.{up.generation}" if up.epoch is not None else ""
            revision = max(up.revision, self._write_revision)
        else:
            epoch = "+".join(f"{u.name}={u.epoch}.{u.generation}" for u in ups)
            revision = max([u.revision for u in ups] + [self._write_revision])
        return StoreInfo(
            epoch=epoch,
            revision=revision,
            extra={"upstreams": {u.name: str(u.endpoint) if u.connected else None for u in ups}},
        )

    def subscribe(self, sink: ChangeSink) -> None:
        self._sinks.append(sink)

    def _deliver(self, upstream: Upstream, change: Change) -> None:
        # The cache first: once a local trigger has a value, no read here returns an older one.
        cache = self._live_cache(self.upstreams.index(upstream))
        if cache is not None:
            entry = None if change.kind is ChangeKind.DELETED else Entry(change.new_value, change.revision)
            cache.apply(change.scope, change.key, entry, change.revision)
        for sink in self._sinks:
            try:
                sink(change)
            except Exception:  # a broken sink must not stop the relay
                log.exception("bridge: change sink %r failed", sink)

    # -- routing ----------------------------------------------------------------------------

    def _route_index(self, scope: str) -> int | None:
        for index, upstream in enumerate(self.upstreams):
            if upstream.matches(scope):
                return index
        return None

    def route(self, scope: str) -> Upstream:
        """The upstream that owns ``scope`` (first matching pattern wins)."""
        index = self._route_index(scope)
        if index is None:
            raise AdapterError(f"no upstream is configured for scope {scope!r}")
        return self.upstreams[index]

    def _live_cache(self, index: int) -> ReadCache | None:
        """The upstream's cache if its relay watch is live now; emptied when the live period
        it was filled in is over (the token names the period)."""
        cache = self._caches[index]
        if cache is None:
            return None
        up = self.upstreams[index]
        token = (up.connects_total, up.generation, up.backlog_ends) if up.relay_live else None
        if token != cache.token:
            cache.flush(token)
        return cache if token is not None else None

    def _read_cache(self, scope: str) -> ReadCache | None:
        index = self._route_index(scope)
        if index is None or self._caches[index] is None:
            return None
        cache = self._live_cache(index)
        if cache is None:
            self._count_cache("bypass")
        return cache

    def _count_cache(self, result: str) -> None:
        if self._cache_counts is not None:
            self._cache_counts[result].inc()

    async def _call(self, scope: str, args: RequestArgs) -> Any:
        if self._closed:
            raise AdapterUnavailable("the bridge adapter is closed")
        return await self.route(scope).call(args)

    # -- the operations ---------------------------------------------------------------------

    async def get(self, scope: str, key: str) -> Entry | None:
        cache = None if self._closed else self._read_cache(scope)
        if cache is None:
            return await self._get(scope, key)
        hit, entry = cache.lookup(scope, key)
        if hit:
            self._count_cache("hit")
            return entry
        self._count_cache("miss")
        ticket = cache.begin_key(scope, key)
        try:
            answer = await self._get(scope, key)
        except BaseException:
            cache.cancel_key(ticket)
            raise
        return cache.finish_get(ticket, answer)

    async def _get(self, scope: str, key: str) -> Entry | None:
        result = await self._call(scope, GetArgs(scope, key))
        return None if result is None else Entry(result["value"], int(result["revision"]))

    async def set(self, scope: str, key: str, value: JSON, *, origin: str | None = None) -> WriteResult:
        queued = self._queue_if_offline("set", scope, key, [value, origin], value)
        if queued is not None:
            return queued
        result = await self._call(scope, SetArgs(scope, key, value, origin or self.engine_id))
        return self._written(result, scope, key)

    async def delete(self, scope: str, key: str, *, origin: str | None = None) -> WriteResult:
        queued = self._queue_if_offline("delete", scope, key, [None, origin], None)
        if queued is not None:
            return queued
        result = await self._call(scope, DeleteArgs(scope, key, origin or self.engine_id))
        return self._written(result, scope, key, deleted=True)

    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp],
        *,
        max_value_bytes: int | None = None,
        origin: str | None = None,
    ) -> WriteResult:
        wire_ops = tuple(op.to_json() for op in ops)
        payload = [[list(wire_ops), max_value_bytes], origin]
        queued = self._queue_if_offline("update", scope, key, payload, None)
        if queued is not None:
            return queued
        args = UpdateArgs(scope, key, wire_ops, origin or self.engine_id, max_value_bytes=max_value_bytes)
        return self._written(await self._call(scope, args), scope, key)

    def _written(self, result: Any, scope: str, key: str, *, deleted: bool = False) -> WriteResult:
        written = _write_result(result)
        self._write_revision = max(self._write_revision, written.revision)
        index = self._route_index(scope)
        cache = None if index is None else self._live_cache(index)
        if cache is not None and written.revision > 0 and not written.errors:
            # Read-your-writes: the relayed event may come after the caller's next read.
            entry = None if deleted else Entry(written.new_value, written.revision)
            cache.apply(scope, key, entry, written.revision)
        return written

    # -- the offline outbox -----------------------------------------------------------------

    def _queue_if_offline(
        self, op: str, scope: str, key: str, payload: builtins.list[Any], new_value: JSON
    ) -> WriteResult | None:
        """Queue the write if the outbox is on and the scope's upstream has no link (or older
        writes are still queued: order is kept); None means: send it now."""
        box = self._outbox
        if box is None or self._closed:
            return None
        if not box.pending and self.route(scope).connected:
            return None
        box.append(op, scope, key, payload)
        self._outbox_wake.set()
        return WriteResult(False, None, new_value, 0, queued=True)

    async def _replay(self) -> None:
        """Send queued writes oldest first, one at a time, as soon as their upstream is linked."""
        box = self._outbox
        assert box is not None
        retry = Backoff(initial=0.05, maximum=2.0)
        while True:
            if not box.pending:
                self._outbox_wake.clear()
                await self._outbox_wake.wait()
                continue
            head = box.pending[0]
            try:
                upstream = self.route(head.scope)
            except AdapterError as exc:  # the routes changed since it was queued
                self._drop(head, exc)
                continue
            if not upstream.writable:
                await upstream.wait_writable()
                continue
            try:
                result = await upstream.call(head.request(self.engine_id))
            except (AdapterUnavailable, AdapterTimeout):
                await asyncio.sleep(retry.next_delay())  # link lost meanwhile: same write again
                continue
            except GatewayError as exc:
                self._drop(head, exc)
                continue
            retry.reset()
            box.ack_first()
            self._written(result, head.scope, head.key, deleted=head.op == "delete")

    def _drop(self, write: QueuedWrite, exc: GatewayError) -> None:
        assert self._outbox is not None
        self.outbox_rejected_total += 1
        log.error(
            "bridge: queued %s of %r/%r (queued at %.3f) refused upstream, dropped: %s",
            write.op, write.scope, write.key, write.queued_at, exc.message,
        )  # fmt: skip
        self._outbox.ack_first()

    async def list(self, scope: str) -> builtins.list[JSON]:
        cache = None if self._closed else self._read_cache(scope)
        if cache is None:
            return list(await self._call(scope, ListArgs(scope)))
        return [entry.value for _, entry in await self._cached_items(cache, scope)]

    async def items(self, scope: str) -> builtins.list[tuple[str, Entry]]:
        cache = None if self._closed else self._read_cache(scope)
        if cache is None:
            return await self._items(scope)
        return await self._cached_items(cache, scope)

    async def _cached_items(self, cache: ReadCache, scope: str) -> builtins.list[tuple[str, Entry]]:
        found = cache.lookup_scope(scope)
        if found is not None:
            self._count_cache("hit")
            return found
        self._count_cache("miss")
        ticket = cache.begin_scope(scope)
        try:
            answer = await self._items(scope)
        except BaseException:
            cache.cancel_scope(ticket)
            raise
        return cache.finish_items(ticket, answer)

    async def _items(self, scope: str) -> builtins.list[tuple[str, Entry]]:
        result = await self._call(scope, ItemsArgs(scope))
        return [(str(key), Entry(value, int(revision))) for key, value, revision in result]

    async def list_groups(self) -> builtins.list[str]:
        if self._closed:
            raise AdapterUnavailable("the bridge adapter is closed")
        answers = await asyncio.gather(*(u.call(ListGroupsArgs()) for u in self.upstreams))
        groups: set[str] = set()
        for index, scopes in enumerate(answers):
            groups.update(s for s in scopes if self._route_index(s) == index)
        return sorted(groups)

    def statistics(self) -> dict[str, float]:
        """Live gauges (``iii_gateway_<name>``, label ``adapter="bridge"``)."""
        return {
            "bridge_upstreams": len(self.upstreams),
            "bridge_upstreams_connected": sum(1 for u in self.upstreams if u.connected),
            "bridge_events_relayed_total": sum(u.events_relayed_total for u in self.upstreams),
            "cache_entries": sum(len(c) for c in self._caches if c is not None),
            "cache_evictions_total": sum(c.evictions_total for c in self._caches if c is not None),
            **self._outbox_statistics(),
        }

    def _outbox_statistics(self) -> dict[str, float]:
        box = self._outbox
        if box is None:
            return {}
        return {
            "outbox_entries": len(box),
            "outbox_bytes": box.bytes,
            "outbox_oldest_age_seconds": box.oldest_age(),
            "outbox_replayed_total": box.replayed_total,
        }
