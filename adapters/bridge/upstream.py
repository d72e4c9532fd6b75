"""One upstream of the Bridge: its link (with failover and backoff) and its event relay.

**Connecting.** A supervisor task keeps at most one live link per upstream. It tries the
endpoints in their configured order; the first that connects and authenticates (the upstream
must present the pinned key) wins. When every endpoint failed it waits a jittered exponential
delay, 1 s doubling to 30 s (:class:`gateway.link.Backoff`), and starts over from the first. A
link that dies after being up a while is re-dialled at once (from the first endpoint, so the
preferred one is used again when it is back); one that dies quickly counts as a failure, so a
peer that accepts and then drops us cannot make us spin.

**Requests** go over the live link with a per-call timeout. With no live link they fail at
once with :class:`AdapterUnavailable` (``UPSTREAM_UNAVAILABLE``), never waiting for the timeout:
an edge whose upstream is down answers its workers immediately.

**Relay** (``relay_events``). On each new link the upstream is watched for the scope patterns
routed to it, resuming after the last revision relayed (``from_revision``, with the epoch it
belongs to). Each change is handed to the Bridge once per revision: anything at or below the
last relayed revision (a replay overlapping what we had) is dropped, so after any number of
reconnects a local trigger sees each upstream revision exactly once, in order.

**Resync.** When the upstream cannot resume us (``HISTORY_GONE``: the revision left its
history, the upstream restarted and its history starts after it, or its epoch changed), we
take a ``snapshot`` of the routed scopes at one revision ``R`` -- in the same epoch only the keys
written after our last relayed revision ``L`` -- and watch again from ``R``.

*What local triggers see on a resync.* In the same epoch: one ``state:updated`` event per key
whose current revision is in ``(L, R]``, in revision order, carrying the key's current value
and revision, ``old_value`` null and origin ``resync:<upstream>`` (so a consumer can tell a
catch-up from a live change). This is the Kubernetes-informer "relist" idea: the changes
themselves are gone from the upstream's history, but their result is not. What it cannot show:
keys deleted during the gap, and the intermediate values of a key written several times (one
event, for the last write). After an epoch change: nothing for the old epoch (its revisions
mean nothing now, and replaying a whole new store as events would be a storm); relaying goes
on from the new epoch's ``R``. When the snapshot cannot be taken (the peer may not read the
scopes, or the answer is over the frame limit), the catch-up is skipped the same way. Every
resync is logged with both revisions and counted in ``iii_gateway_resyncs_total{upstream,
reason}`` (``history_gone`` or ``epoch_changed``). A resync also moves the Bridge's own epoch,
so gateways chained below this one resync too instead of resuming across it.

**Across restarts** (``position``, :mod:`adapters.bridge.position`): the relay position is
loaded at construction and noted after every delivery, progress mark and resync, so a
restarted gateway resumes where it stopped instead of live-from-now. After a clean stop nothing
is repeated; after a crash the changes delivered in the last write interval are delivered once
more (at-least-once), never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.config.settings import Endpoint, UpstreamSettings
from gateway.errors import (
    AdapterError,
    AdapterTimeout,
    AdapterUnavailable,
    AuthError,
    ConfigError,
    ForbiddenError,
    GatewayError,
    HistoryGone,
    LinkBroken,
    ValueTooLarge,
)
from gateway.link.acl import glob_match
from gateway.link.auth import parse_public_key
from gateway.link.backoff import Backoff
from gateway.link.client import LinkClient, client_tls_context, connect
from gateway.link.messages import WatchEvent
from gateway.link.requests import InfoArgs, RequestArgs, SnapshotArgs, WatchArgs
from gateway.state.adapter import Change, ChangeKind

if TYPE_CHECKING:
    from adapters.bridge.position import RelayPosition
    from gateway.metrics import Metrics

__all__ = ["Upstream"]

log = logging.getLogger(__name__)

#: A link that stayed up at least this long resets the backoff when it drops.
STABLE_AFTER: Final = 5.0
_TOO_LARGE: Final = re.compile(r"value of (\d+) bytes exceeds .* limit of (\d+)")


def map_error(exc: GatewayError, upstream: str) -> GatewayError:
    """The local exception for an upstream's error answer, keeping the upstream's code."""
    code, message = exc.code, exc.message
    if code == AdapterUnavailable.code:
        return AdapterUnavailable(f"upstream {upstream}: {message}")
    if code == AdapterTimeout.code:
        return AdapterTimeout(f"upstream {upstream}: {message}")
    if code == ValueTooLarge.code:
        found = _TOO_LARGE.search(message)
        if found:
            return ValueTooLarge(int(found.group(1)), int(found.group(2)))
    if isinstance(exc, ForbiddenError) or code == "deserialization_error":
        return exc
    return AdapterError(f"upstream {upstream}: {message}", code=code)


class Upstream:
    """The link to one configured upstream (see the module docstring)."""

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        identity: Ed25519PrivateKey,
        engine_id: str,
        timeout: float,
        relay: bool,
        deliver: Callable[[Upstream, Change], None],
        owns: Callable[[str], bool],
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        link_options: dict[str, Any] | None = None,
        position: RelayPosition | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.patterns = settings.scopes
        try:
            self._server_key: Ed25519PublicKey = parse_public_key(settings.public_key)
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"upstreams.{settings.name}.public_key") from exc
        self._identity = identity
        self._engine_id = engine_id
        self.timeout = timeout
        self.relay = relay
        self._deliver = deliver
        self._owns = owns
        self._metrics = metrics
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._relayed = metrics.events_relayed.labels(settings.name) if metrics is not None else None
        self._lag = metrics.relay_lag.labels(settings.name) if metrics is not None else None
        self.backoff = backoff or Backoff()
        self._link_options = link_options or {}
        self._tls: ssl.SSLContext | None = None
        self.client: LinkClient | None = None
        self.endpoint: Endpoint | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._relay_live = asyncio.Event()
        self._first_round = asyncio.Event()  # the first attempt at every endpoint is over
        self._closing = False
        # relay position: everything up to `revision` of `epoch` has been handed to the Bridge
        self.epoch: str | None = None
        self.revision = 0
        self._position = position
        if position is not None and relay:
            loaded = position.load()
            if loaded is not None:
                self.epoch, self.revision = loaded
                log.info(
                    "bridge: upstream %s relay resumes after revision %d of epoch %s",
                    self.name,
                    loaded[1],
                    loaded[0],
                )
        self.generation = 0  # resyncs so far: part of the Bridge's own epoch
        self.relay_error: str | None = None
        self.backlog_ends = 0  # watches that caught up (reached BacklogEnd)
        self.connects_total = 0
        self.resyncs_total = 0
        self.events_relayed_total = 0
        self.duplicates_dropped_total = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name=f"bridge-upstream-{self.name}")

    async def wait_ready(self) -> None:
        """Until the link is up and, when relaying, the watch has caught up (BacklogEnd);
        or until the first round of dialling failed (then there is nothing to wait for)."""
        await self._first_round.wait()
        if self.client is None:
            return
        if self.relay:
            await self._relay_live.wait()

    async def close(self) -> None:
        self._closing = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._position is not None:
            self._position.close()

    @property
    def connected(self) -> bool:
        client = self.client
        return client is not None and client.is_open

    @property
    def relay_live(self) -> bool:
        return self._relay_live.is_set()

    @property
    def writable(self) -> bool:
        """Linked and, when relaying, the watch caught up (or refused): the Bridge's outbox
        replays only then, so the events of replayed writes come back to the edge."""
        return self.connected and (not self.relay or self.relay_live or self.relay_error is not None)

    async def wait_writable(self) -> None:
        """Until :attr:`writable`, or at most ``timeout`` once linked (the caller re-checks)."""
        await self._connected.wait()
        if self.relay:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._relay_live.wait()
            except TimeoutError:
                pass

    # -- connecting -------------------------------------------------------------------------

    def _tls_for(self, endpoint: Endpoint) -> tuple[ssl.SSLContext | None, str | None]:
        if endpoint.scheme != "tls":
            return None, None
        tls = self.settings.tls
        if self._tls is None:
            try:
                self._tls = client_tls_context(
                    tls.ca if tls else None, tls.cert if tls else None, tls.key if tls else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load TLS files: {exc}", key=f"upstreams.{self.name}.tls") from exc
        return self._tls, (tls.server_name if tls and tls.server_name else endpoint.host)

    def _count_connect(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.link_connects.labels(self.name, result).inc()

    async def _dial(self) -> LinkClient | None:
        """Try every endpoint in order; the first live, authenticated link, or None."""
        for endpoint in self.settings.endpoints:
            tls, server_name = self._tls_for(endpoint)
            try:
                client = await connect(
                    endpoint.host,
                    endpoint.port,
                    private_key=self._identity,
                    client_id=self._engine_id,
                    server_key=self._server_key,
                    tls=tls,
                    server_hostname=server_name,
                    timeout=self.timeout,
                    metrics=self._metrics,
                    **self._link_options,
                )
            except AuthError as exc:
                self._count_connect(exc.reason)
                log.error("bridge: upstream %s at %s refused the link: %s", self.name, endpoint, exc.message)
                continue
            except LinkBroken as exc:
                self._count_connect("unreachable")
                log.warning("bridge: upstream %s at %s: %s", self.name, endpoint, exc.message)
                continue
            self._count_connect("ok")
            self.endpoint = endpoint
            return client
        return None

    async def _supervise(self) -> None:
        while not self._closing:
            client = await self._dial()
            self.client = client
            self._first_round.set()
            if client is None:
                delay = self.backoff.next_delay()
                log.warning("bridge: upstream %s unreachable; next attempt in %.1f s", self.name, delay)
                await asyncio.sleep(delay)
                continue
            self.connects_total += 1
            up_since = time.monotonic()
            log.info("bridge: linked to upstream %s at %s", self.name, self.endpoint)
            self.client = client
            self._connected.set()
            relay = asyncio.create_task(self._run_relay(client), name=f"bridge-relay-{self.name}")
            try:
                closed = await asyncio.shield(client.closed)
            except asyncio.CancelledError:  # close(): end the link politely, then stop
                await self._lost(relay)
                await client.aclose("GOING_AWAY", "the gateway is shutting down")
                raise
            await self._lost(relay)
            log.warning(
                "bridge: link to upstream %s at %s lost (%s: %s)",
                self.name, self.endpoint, closed.code, closed.reason,
            )  # fmt: skip
            if time.monotonic() - up_since >= STABLE_AFTER:
                self.backoff.reset()
            else:
                await asyncio.sleep(self.backoff.next_delay())

    async def _lost(self, relay: asyncio.Task[None]) -> None:
        self._connected.clear()
        self._relay_live.clear()
        self.client = None
        relay.cancel()
        await asyncio.wait([relay])

    # -- requests ---------------------------------------------------------------------------

    async def call(self, args: RequestArgs) -> Any:
        """One request on the live link, bounded by the timeout (see the module docstring)."""
        op = args.OP
        client = self.client
        if client is None or not client.is_open:
            self._count_request(op, "unavailable", None)
            raise AdapterUnavailable(f"upstream {self.name} is not connected")
        started = time.perf_counter()
        try:
            result = await client.request(args, self.timeout)
        except TimeoutError:
            self._count_request(op, "timeout", started)
            raise AdapterTimeout(
                f"upstream {self.name} did not answer {op} within {self.timeout:g} s"
                + (" (the write may have been applied)" if op in ("set", "delete", "update") else "")
            ) from None
        except LinkBroken as exc:
            self._count_request(op, "unavailable", started)
            raise AdapterUnavailable(
                f"upstream {self.name}: {exc.message}"
                + (" (the write may have been applied)" if op in ("set", "delete", "update") else "")
            ) from exc
        except GatewayError as exc:
            self._count_request(op, "error", started)
            raise map_error(exc, self.name) from exc
        self._count_request(op, "ok", started)
        return result

    def _count_request(self, op: str, outcome: str, started: float | None) -> None:
        m = self._metrics
        if m is None:
            return
        # Label children are looked up once: labels() costs as much as a request's own work.
        children = self._children.get((op, outcome))
        if children is None:
            children = (
                m.link_requests.labels(self.name, op, outcome),
                m.link_request_duration.labels(self.name, op),
            )
            self._children[(op, outcome)] = children
        children[0].inc()
        if started is not None:
            children[1].observe(time.perf_counter() - started)

    # -- relay ------------------------------------------------------------------------------

    async def _run_relay(self, client: LinkClient) -> None:
        if not self.relay:
            return
        # Watches that end before catching up (BacklogEnd resets it) are retried with a growing
        # delay, so an upstream that keeps refusing us cannot make us spin.
        retry = Backoff(initial=0.05, maximum=5.0)
        while client.is_open:
            caught_up = self.backlog_ends
            resume = self.revision if self.epoch is not None else None
            args = WatchArgs(self.patterns, from_revision=resume, epoch=self.epoch)
            try:
                watch = client.watch(args, self)
                await watch.done
            except HistoryGone as exc:
                self._relay_live.clear()
                await self._resync(client, exc.message)
            except ForbiddenError as exc:
                self._relay_live.clear()
                self.relay_error = exc.message
                log.error("bridge: upstream %s refuses our watch, events are not relayed: %s", self.name, exc)
                return
            except (LinkBroken, AdapterUnavailable):
                return
            except GatewayError as exc:  # SLOW_CONSUMER and the like: resume where we are
                self._relay_live.clear()
                log.warning("bridge: watch on upstream %s ended (%s); resuming", self.name, exc.message)
            if self.backlog_ends != caught_up:
                retry.reset()  # it was live: resume at once
            else:
                await asyncio.sleep(retry.next_delay())

    async def _resync(self, client: LinkClient, why: str) -> None:
        """Catch up from a snapshot at one revision (module docstring), then resume there."""
        last = self.revision
        items: list[Any] = []
        try:
            snap = await client.request(SnapshotArgs(self.patterns, after=last))
            epoch, revision = str(snap["epoch"]), int(snap["revision"])
            if epoch == self.epoch:
                items = list(snap["items"])
        except LinkBroken:
            raise
        except GatewayError as exc:  # FORBIDDEN (no read permission), FRAME_TOO_LARGE ...
            log.warning("bridge: no snapshot from upstream %s (%s); no catch-up", self.name, exc.message)
            info = await client.request(InfoArgs())
            epoch, revision = str(info["epoch"]), int(info["revision"])
        reason = "epoch_changed" if epoch != self.epoch else "history_gone"
        log.warning(
            "bridge: upstream %s cannot resume after revision %d of epoch %s (%s); resyncing at "
            "revision %d of epoch %s with %d catch-up events",
            self.name, last, self.epoch, why, revision, epoch, len(items),
        )  # fmt: skip
        self.resyncs_total += 1
        if self._metrics is not None:
            self._metrics.resyncs.labels(self.name, reason).inc()
        self.generation += 1
        self.epoch = epoch
        origin = f"resync:{self.name}"
        for scope, key, value, item_revision in items:
            if item_revision <= self.revision or item_revision > revision:
                continue
            self.revision = item_revision
            if self._owns(scope):
                self.events_relayed_total += 1
                if self._relayed is not None:
                    self._relayed.inc()
                change = Change(scope, key, ChangeKind.UPDATED, None, value, item_revision, origin)
                self._deliver(self, change)
        self.revision = revision
        self._noted()

    # WatchListener: called synchronously from the link, in order.

    def on_event(self, event: WatchEvent) -> None:
        if event.revision <= self.revision:
            self.duplicates_dropped_total += 1
            return
        self.revision = event.revision
        if not self._owns(event.scope):
            return  # routed to another upstream: its events come from there
        self.events_relayed_total += 1
        if self._relayed is not None:
            self._relayed.inc()
            if event.published_at is not None and self._lag is not None:
                self._lag.observe(max(0.0, time.time() - event.published_at))
        self._deliver(self, event.to_change())
        self._noted()

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        self.backlog_ends += 1
        if self.epoch != epoch:
            self.epoch = epoch
            self.revision = revision
        else:
            self.revision = max(self.revision, revision)
        self.relay_error = None
        self._relay_live.set()
        self._noted()

    def on_progress(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        self._noted()

    def _noted(self) -> None:
        """The relay position moved (after delivery): persist it, batched (``position.py``)."""
        if self._position is not None:
            self._position.note(self.epoch, self.revision)

    def matches(self, scope: str) -> bool:
        return any(glob_match(p, scope) for p in self.patterns)

    def statistics(self) -> dict[str, float]:
        return {
            "bridge_upstream_connected": 1.0 if self.connected else 0.0,
            "bridge_relay_live": 1.0 if self.relay_live else 0.0,
            "bridge_relay_revision": self.revision,
            "bridge_upstream_connects_total": self.connects_total,
            "bridge_relay_resyncs_total": self.resyncs_total,
            "bridge_relay_duplicates_dropped_total": self.duplicates_dropped_total,
        }
