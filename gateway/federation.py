"""The upstream role of a gateway: serve the local state adapter to downstream gateways.

This is the glue between :mod:`gateway.link` (which knows frames, peers and watches but never
the state module) and a :class:`StateAdapter` (which knows nothing of links).
:class:`StateLinkHandler` is the request handler a :class:`LinkServer` is built with;
:class:`LinkService` owns the listener and the change history for the composition root
(``gateway.app``), built from the ``link:`` settings by :func:`build_link_service`.

Semantics of the ops served, so a Bridge gets exactly what a local call would return:

- writes run on the adapter with ``origin`` = the write's original author when the peer
  relays one (chained gateways) or else the peer's announced engine id, so events everywhere
  say who wrote; ``update`` applies the caller's ``max_value_bytes``;
- ``get`` keeps a stored null apart from a missing key (``{"value": null, ...}`` vs nil);
- ``list_groups`` only names scopes the peer may read;
- ``snapshot`` reads every scope matching the patterns *at one revision* ``R`` (below), items
  in revision order, optionally only those written after a given revision;
- ``info`` reports the change history's position, the one a watch can resume from;
- a write carrying an idempotency key (``idem``, sent by an edge's outbox replay) is applied
  at most once per key within the window of :mod:`gateway.idempotency`; a repeat gets the
  first result.

**Snapshot at one revision.** Reading many scopes is not atomic on every backend (Redis), so
the snapshot is made consistent with the history instead of a lock: note the history position
``r0``, read every matching scope, let ``R`` be the newest revision known once the reads are
done (the store's and the history's position, any entry read), wait until the history has
reached ``R``, then replay the history's changes in
``(r0, R]`` over what was read, keeping per key the newest revision. Every key then holds
exactly the value of the last write at or before ``R``. If the ring lost ``r0`` meanwhile (a
flood of writes), the snapshot is retried, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Final

from gateway.config.settings import LinkSettings
from gateway.errors import AdapterTimeout, AdapterUnavailable, ConfigError, GatewayError, InputError
from gateway.idempotency import IdempotencyTable
from gateway.link.acl import Action, glob_match, load_authorized_peers
from gateway.link.auth import load_private_key
from gateway.link.history import DEFAULT_HISTORY_SIZE, ChangeHistory
from gateway.link.requests import (
    DeleteArgs,
    GetArgs,
    InfoArgs,
    ItemsArgs,
    ListArgs,
    ListGroupsArgs,
    PingArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
)
from gateway.link.server import LinkServer, PeerInfo, server_tls_context
from gateway.state.adapter import ChangeKind, StateAdapter, WriteResult
from gateway.state.ops import parse_ops

if TYPE_CHECKING:
    from gateway.metrics import Metrics

__all__ = ["LinkService", "StateLinkHandler", "build_link_service", "parse_listen"]

log = logging.getLogger(__name__)

_SNAPSHOT_ATTEMPTS: Final = 3
_SNAPSHOT_WAIT: Final = 5.0  # seconds to wait for a store's events to catch up with its reads
_CONTIGUOUS_ADAPTERS: Final = frozenset({"kv", "redis"})
# The embedded store's operations never need a current task (no asyncio.timeout inside), so
# the server may start them eagerly; other adapters bound their calls with timeouts.
_EAGER_OPS: Final = {"kv": frozenset({"get", "set", "delete", "update", "list", "items", "list_groups"})}


def _write(result: WriteResult) -> dict[str, Any]:
    return {
        "existed": result.existed,
        "old_value": result.old_value,
        "new_value": result.new_value,
        "revision": result.revision,
        "errors": [e.to_json() for e in result.errors],
    }


class StateLinkHandler:
    """Serves link requests from a state adapter (see the module docstring)."""

    def __init__(
        self,
        adapter: StateAdapter,
        history: ChangeHistory,
        *,
        metrics: Metrics | None = None,
        idempotency: IdempotencyTable | None = None,
    ) -> None:
        self.adapter = adapter
        self.history = history
        self._metrics = metrics
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.idempotency = idempotency if idempotency is not None else IdempotencyTable()

    async def __call__(self, peer: PeerInfo, args: RequestArgs) -> Any:
        if self._metrics is None:
            return await self._dispatch(peer, args)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._dispatch(peer, args)
            outcome = "ok"
            return result
        finally:
            self._observe(args.OP, outcome, time.perf_counter() - started)

    def _observe(self, op: str, outcome: str, seconds: float) -> None:
        # Label children are looked up once: labels() costs more than the op on the kv store.
        children = self._children.get((op, outcome))
        if children is None:
            assert self._metrics is not None
            m = self._metrics
            children = (m.requests.labels(op, outcome), m.request_duration.labels(op))
            self._children[(op, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    async def _dispatch(self, peer: PeerInfo, args: RequestArgs) -> Any:
        if isinstance(args, (SetArgs, DeleteArgs, UpdateArgs)) and args.idem is not None:
            once = dataclasses.replace(args, idem=None)
            return await self.idempotency.run(peer.peer_id, args.idem, lambda: self._dispatch(peer, once))
        a = self.adapter
        match args:
            case GetArgs(scope=scope, key=key):
                entry = await a.get(scope, key)
                return None if entry is None else {"value": entry.value, "revision": entry.revision}
            case SetArgs(scope=scope, key=key, value=value, origin=origin):
                return _write(await a.set(scope, key, value, origin=origin or peer.peer_id))
            case DeleteArgs(scope=scope, key=key, origin=origin):
                return _write(await a.delete(scope, key, origin=origin or peer.peer_id))
            case UpdateArgs(scope=scope, key=key, ops=ops, origin=origin, max_value_bytes=limit):
                parsed = parse_ops(list(ops))
                result = await a.update(
                    scope, key, parsed, max_value_bytes=limit, origin=origin or peer.peer_id
                )
                return _write(result)
            case ListArgs(scope=scope):
                return await a.list(scope)
            case ItemsArgs(scope=scope):
                return [[key, e.value, e.revision] for key, e in await a.items(scope)]
            case ListGroupsArgs():
                groups = await a.list_groups()
                return [g for g in groups if peer.permissions.allows(Action.READ, g)]
            case SnapshotArgs(patterns=patterns, after=after):
                return await self.snapshot(patterns, peer, after=after)
            case InfoArgs():
                return {"epoch": self.history.epoch, "revision": self.history.last}
            case PingArgs():
                return {}
        raise InputError(f"unsupported op {args.OP!r}")

    async def snapshot(
        self, patterns: tuple[str, ...], peer: PeerInfo | None = None, *, after: int | None = None
    ) -> dict[str, Any]:
        """Every key of the scopes matching ``patterns`` at one revision (module docstring);
        with ``after``, only the keys written after that revision."""
        for _ in range(_SNAPSHOT_ATTEMPTS):
            found = await self._snapshot_once(patterns, peer)
            if found is not None:
                if after is not None:
                    found["items"] = [item for item in found["items"] if item[3] > after]
                return found
        raise AdapterUnavailable("the store changed too fast to take a consistent snapshot; retry")

    async def _snapshot_once(self, patterns: tuple[str, ...], peer: PeerInfo | None) -> dict[str, Any] | None:
        history = self.history
        epoch, r0 = history.epoch, history.last

        def wanted(scope: str) -> bool:
            if peer is not None and not peer.permissions.allows(Action.READ, scope):
                return False
            return any(glob_match(p, scope) for p in patterns)

        state: dict[tuple[str, str], tuple[Any, int]] = {}
        newest = r0
        for scope in await self.adapter.list_groups():
            if not wanted(scope):
                continue
            for key, entry in await self.adapter.items(scope):
                state[(scope, key)] = (entry.value, entry.revision)
                newest = max(newest, entry.revision)
        # Writes that removed a key during the reads show in no entry: the store's position
        # after the reads bounds them (for Redis, as far as this process has seen revisions).
        newest = max(newest, history.last, self.adapter.info().revision)
        try:
            await _wait(history, newest)
        except TimeoutError:
            raise AdapterTimeout("the store's change events did not catch up with its reads") from None
        changes = history.since(r0)
        if changes is None or history.epoch != epoch:
            return None
        for change in changes:
            if change.revision > newest:
                break
            if not wanted(change.scope):
                continue
            slot = (change.scope, change.key)
            current = state.get(slot)
            if current is not None and current[1] >= change.revision:
                continue
            if change.kind is ChangeKind.DELETED:
                state.pop(slot, None)
            else:
                state[slot] = (change.new_value, change.revision)
        items = sorted(
            ([scope, key, value, rev] for (scope, key), (value, rev) in state.items()), key=lambda i: i[3]
        )
        return {"epoch": epoch, "revision": newest, "items": items}


async def _wait(history: ChangeHistory, revision: int) -> None:
    async with asyncio.timeout(_SNAPSHOT_WAIT):
        await history.wait_for(revision)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (already validated by the config loader)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _cert_hash(cert_file: str) -> bytes:
    """sha256 of the DER of the first certificate in a PEM chain file (the TLS channel binding)."""
    try:
        with open(cert_file, encoding="ascii") as f:
            pem = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate: {exc.strerror}", file=cert_file) from exc
    end = "-----END CERTIFICATE-----"
    first = pem[: pem.index(end) + len(end)] if end in pem else pem
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).digest()
    except ValueError as exc:
        raise ConfigError("not a PEM certificate", file=cert_file) from exc


class LinkService:
    """The link listener and the change history of one gateway (started after the adapter)."""

    def __init__(self, server: LinkServer, history: ChangeHistory, adapter: StateAdapter) -> None:
        self.server = server
        self.history = history
        self.adapter = adapter

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        info = self.adapter.info()
        self.history.start(info.epoch, info.revision)
        self.adapter.subscribe(self.history)
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def reload_peers(self) -> bool:
        """Re-read the authorized-peers file (SIGHUP); False (old peers kept) when it is invalid."""
        try:
            self.server.reload_peers()
        except GatewayError as exc:
            log.error("link: authorized peers not reloaded, keeping the previous ones: %s", exc.message)
            return False
        return True

    def statistics(self) -> dict[str, float]:
        stats = self.server.statistics()
        stats.update(self.history.statistics())
        return stats


def build_link_service(
    settings: LinkSettings,
    adapter: StateAdapter,
    *,
    engine_id: str,
    metrics: Metrics | None = None,
    history_size: int = DEFAULT_HISTORY_SIZE,
    state_dir: str | None = None,
    **server_options: Any,
) -> LinkService:
    """The listener described by the ``link:`` settings, serving ``adapter``; ``state_dir``
    (the gateway's data dir) keeps the idempotency keys of peers' writes across restarts."""
    if not settings.listen:
        raise ConfigError("link.listen is not set", key="link.listen")
    if not settings.identity:
        raise ConfigError("the link needs this gateway's private key", key="link.identity")
    if not settings.authorized_peers:
        raise ConfigError("the link needs an authorized-peers file", key="link.authorized_peers")
    identity = load_private_key(settings.identity)
    peers = load_authorized_peers(settings.authorized_peers)
    tls = cert_hash = None
    if settings.tls is not None:
        tls = server_tls_context(settings.tls.cert, settings.tls.key, settings.tls.client_ca)
        cert_hash = _cert_hash(settings.tls.cert)
    host, port = parse_listen(settings.listen)
    history = ChangeHistory(
        lambda: adapter.info().epoch,
        max_changes=history_size,
        contiguous=adapter.name in _CONTIGUOUS_ADAPTERS,
        position_of=lambda: (adapter.info().epoch, adapter.info().revision),
        older=getattr(adapter, "changes_since", None),  # the kv store's log
    )
    handler = StateLinkHandler(
        adapter, history, metrics=metrics, idempotency=IdempotencyTable(directory=state_dir)
    )
    server = LinkServer(
        handler=handler,
        identity=identity,
        peers=peers,
        metrics=metrics,
        server_id=engine_id,
        host=host,
        port=port,
        history=history,
        peers_file=settings.authorized_peers,
        tls=tls,
        cert_hash=cert_hash,
        **{"eager_ops": _EAGER_OPS.get(adapter.name, frozenset()), **server_options},
    )
    return LinkService(server, history, adapter)
