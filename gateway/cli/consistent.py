"""Read every key of some scopes, as of one revision, through a gateway's link (for export).

**One request when it fits.** The link's ``snapshot`` op answers with every key of the
scopes matching some patterns, read at one revision ``R`` of the store (the server makes it
consistent against its change history). Its answer is one frame, so it is limited by the
link's frame size (16 MiB by default); beyond that the gateway answers ``FRAME_TOO_LARGE``.

**Scope by scope otherwise** (or with ``per_scope=True``). One ``snapshot`` per scope is
each at its own revision ``R_s``; a watch makes them one cut:

1. open a live watch on the patterns and wait for its backlog end (from then on, every
   matching change is sent to us as it commits);
2. list the scopes (after 1, so a scope created later is seen by the watch), then take one
   snapshot per scope, spooling each answer to a temporary file; ``R = max(R_s)``;
3. when the last snapshot answer arrives, every change with revision <= R is already here:
   the gateway sends a snapshot answer only once its history has reached the snapshot's
   revision, and live changes go out on the same connection, in order, as they reach the
   history. So the watch is closed;
4. each spooled scope is brought forward to ``R``: a key whose newest change at or below
   ``R`` is newer than the value read takes that change (its value, or its deletion); a key
   created after its scope was read (or in a scope created meanwhile) is added.

The result is exactly the state after revision ``R`` (etcd's "read every page of one load at
the same revision"), with memory bounded by one scope plus the changes made during the export.
If the gateway cuts the watch (we read too slowly) or its store changes epoch meanwhile, the
pass is started again, a bounded number of times. Needs ``read`` on the scopes and, scope by
scope, ``watch`` on the patterns. One scope larger than a frame cannot be exported (yet).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from gateway.cli.remote import EXIT_FAILURE, CliFailure, fail, operation_failure, request
from gateway.errors import GatewayError
from gateway.jsonutil import dumps
from gateway.link.acl import Action, glob_match
from gateway.link.client import ClientWatch, LinkClient
from gateway.link.frames import FRAME_TOO_LARGE
from gateway.link.messages import WatchEvent
from gateway.link.requests import ListGroupsArgs, SnapshotArgs, WatchArgs

__all__ = ["Cut", "read_cut"]

_ATTEMPTS: Final = 3
Items = list[tuple[str, Any, int]]  # (key, value, revision), sorted by key
Progress = Callable[[int, int], None]  # (scopes read, scopes in all)


@dataclass
class Cut:
    """The keys of the matching scopes as of ``revision`` (module docstring)."""

    epoch: str
    revision: int
    mode: str  # "snapshot" or "per-scope"
    _memory: dict[str, Items] = field(default_factory=dict)
    _spool: IO[bytes] | None = None
    _spooled: dict[str, tuple[int, int]] = field(default_factory=dict)  # scope -> (offset, length)
    _changes: dict[str, dict[str, tuple[int, bool, Any]]] = field(default_factory=dict)

    def scopes(self) -> list[str]:
        return sorted(set(self._memory) | set(self._spooled) | set(self._changes))

    def groups(self) -> Iterator[tuple[str, Items]]:
        """``(scope, items)`` in scope order; empty scopes are left out."""
        for scope in self.scopes():
            items = self._load(scope)
            if items:
                yield scope, items

    def _load(self, scope: str) -> Items:
        if scope in self._memory:
            return self._memory[scope]
        current: dict[str, tuple[Any, int]] = {}
        where = self._spooled.get(scope)
        if where is not None and self._spool is not None:
            self._spool.seek(where[0])
            for key, value, rev in json.loads(self._spool.read(where[1])):
                current[key] = (value, rev)
        for key, (rev, deleted, value) in self._changes.get(scope, {}).items():
            seen = current.get(key)
            if seen is not None and seen[1] >= rev:
                continue
            if deleted:
                current.pop(key, None)
            else:
                current[key] = (value, rev)
        return sorted(((key, value, rev) for key, (value, rev) in current.items()), key=lambda i: i[0])

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


async def read_cut(
    client: LinkClient,
    patterns: tuple[str, ...],
    *,
    timeout: float,
    per_scope: bool = False,
    spool_dir: str | None = None,
    progress: Progress | None = None,
) -> Cut:
    """The consistent content of the scopes matching ``patterns`` (module docstring)."""
    if not per_scope:
        try:
            return await _single(client, patterns, timeout)
        except CliFailure as failure:
            if not failure.message.startswith(FRAME_TOO_LARGE):
                raise
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await _scope_by_scope(client, patterns, timeout, spool_dir, progress)
        except _Retry as retry:
            if attempt == _ATTEMPTS:
                fail(EXIT_FAILURE, f"UNAVAILABLE: no consistent read after {_ATTEMPTS} attempts: {retry}")
    raise AssertionError("unreachable")


async def _single(client: LinkClient, patterns: tuple[str, ...], timeout: float) -> Cut:
    snap = await request(client, SnapshotArgs(patterns), timeout, "snapshot")
    cut = Cut(snap["epoch"], snap["revision"], "snapshot")
    for scope, key, value, rev in snap["items"]:
        cut._memory.setdefault(scope, []).append((key, value, rev))
    for items in cut._memory.values():
        items.sort(key=lambda i: i[0])
    return cut


class _Retry(Exception):
    """This pass cannot give a consistent result; start over."""


class _Changes:
    """The watch listener of a scope-by-scope pass: every change, until closed."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.live = asyncio.Event()
        self.epoch = ""
        self.revision = 0  # the store's revision when the watch went live

    def on_event(self, event: WatchEvent) -> None:
        self.events.append(event)

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        self.epoch, self.revision = epoch, revision
        self.live.set()

    def on_progress(self, revision: int) -> None:
        pass


async def _scope_by_scope(
    client: LinkClient,
    patterns: tuple[str, ...],
    timeout: float,
    spool_dir: str | None,
    progress: Progress | None,
) -> Cut:
    changes = _Changes()
    try:
        stream = client.watch(WatchArgs(patterns), changes)
    except GatewayError as exc:
        raise operation_failure(exc, "watch") from None
    try:
        await _until_live(stream, changes, timeout)
        groups = await request(client, ListGroupsArgs(), timeout, "list_groups")
        scopes = sorted(s for s in groups if any(glob_match(p, s) for p in patterns))
        cut = Cut(changes.epoch, changes.revision, "per-scope")
        cut._spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 (owned by the cut)
        try:
            await _read_scopes(client, cut, scopes, timeout, stream, progress)
            # A peer may watch scopes it may not read; such changes must not reach the file.
            perms = client.peer.permissions if client.peer is not None else None
            events = changes.events
            if perms is not None:
                events = [e for e in events if perms.allows(Action.READ, e.scope)]
            _keep_changes(cut, events)
        except BaseException:
            cut.close()
            raise
        return cut
    finally:
        stream.cancel()


async def _until_live(stream: ClientWatch, changes: _Changes, timeout: float) -> None:
    live = asyncio.ensure_future(changes.live.wait())
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait({live, stream.done}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        fail(EXIT_FAILURE, f"TIMEOUT: the gateway did not start the watch within {timeout:g} s")
    finally:
        live.cancel()
    _check_stream(stream)


def _check_stream(stream: ClientWatch) -> None:
    """Fail (or retry) when the watch ended: the pass would miss changes."""
    if not stream.done.done():
        return
    error = None if stream.done.cancelled() else stream.done.exception()
    if isinstance(error, GatewayError):
        if error.code in ("SLOW_CONSUMER", "HISTORY_GONE"):
            raise _Retry(f"{error.code}: {error.message}")
        raise operation_failure(error, "watch (needed to export scope by scope at one revision)")
    raise _Retry("the watch ended")


async def _read_scopes(
    client: LinkClient,
    cut: Cut,
    scopes: list[str],
    timeout: float,
    stream: ClientWatch,
    progress: Progress | None,
) -> None:
    spool = cut._spool
    assert spool is not None
    for done, scope in enumerate(scopes, 1):
        try:
            snap = await request(client, SnapshotArgs((scope,)), timeout, f"snapshot of scope {scope!r}")
        except CliFailure as failure:
            if failure.message.startswith(FRAME_TOO_LARGE):
                fail(
                    EXIT_FAILURE,
                    f"{FRAME_TOO_LARGE}: scope {scope!r} is larger than one link frame; "
                    "it cannot be exported through this gateway's link",
                )
            raise
        _check_stream(stream)
        if snap["epoch"] != cut.epoch:
            raise _Retry(f"the store's epoch changed from {cut.epoch} to {snap['epoch']}")
        cut.revision = max(cut.revision, snap["revision"])
        items = [[key, value, rev] for s, key, value, rev in snap["items"] if s == scope]
        data = (dumps(items) + "\n").encode("utf-8")
        cut._spooled[scope] = (spool.tell(), len(data))
        spool.write(data)
        if progress is not None:
            progress(done, len(scopes))
    _check_stream(stream)


def _keep_changes(cut: Cut, events: list[WatchEvent]) -> None:
    """Per key, the newest change at or below the cut's revision."""
    for event in events:
        if event.revision > cut.revision:
            continue
        per_scope = cut._changes.setdefault(event.scope, {})
        seen = per_scope.get(event.key)
        if seen is None or seen[0] < event.revision:
            deleted = event.event_type == "state:deleted"
            per_scope[event.key] = (event.revision, deleted, event.new_value)
