"""Watch streams on the upstream: replay, backlog end, live events, progress, slow consumers.

A ``watch(patterns, from_revision, epoch)`` request opens a stream on its connection:

1. **Check** the resume point against the :class:`ChangeHistory`: an ``epoch`` that is not the
   store's, or a ``from_revision`` the ring no longer (or not yet) covers, ends the stream at
   once with ``HISTORY_GONE`` (the downstream resyncs). ``from_revision=None`` means live only.
   A history with no epoch yet (a Bridge whose own upstream is not linked) answers
   ``UPSTREAM_UNAVAILABLE``, which the downstream retries with a growing delay.
2. **Replay** the changes after ``from_revision`` whose scope matches, in revision order, paced
   by the socket (a task that waits for the transport to drain every few hundred events). Live
   changes committed meanwhile wait in a per-watch buffer of at most ``max_buffer`` changes.
3. **Backlog end**: ``BacklogEnd(revision=history.last, epoch)``, sent in the same step that
   flushes the buffer and switches the watch to live, so no change falls between the two.
4. **Live**: the history listener sends each matching change on every live watch, synchronously
   from the store's sink, so every watch sees changes in revision order and no task or queue
   per watcher is needed (1,000 edges cost 1,000 small writes per change, nothing more).
5. **Progress**: every ``progress_interval`` a watch that got nothing since the last mark gets
   ``Progress(history.last)``, so a downstream watching a quiet scope can still resume from a
   recent revision (etcd's progress notify).

**Slow consumers.** Memory per watch is bounded twice: the replay buffer (``max_buffer``
changes) and, live, the connection's unsent bytes (``max_outbound_bytes``, checked against the
transport's buffer, into which a burst is written every few dozen events). Over either bound the
watch is ended with ``SLOW_CONSUMER``; the events already queued still go out, and the
downstream resumes from the last revision it received (or resyncs if the ring moved past it).
Nothing ever grows without bound because a peer reads slowly.

A reset of the history (epoch change, revision gap) ends every watch with ``HISTORY_GONE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from gateway.errors import ForbiddenError, HistoryGone, LinkBroken, LinkClosed, LocalProtocolError
from gateway.link.acl import Permissions, glob_match
from gateway.link.frames import SharedFrame
from gateway.link.messages import WatchEvent
from gateway.link.requests import WatchArgs
from gateway.link.states import State
from gateway.state.adapter import Change

if TYPE_CHECKING:
    from gateway.link.history import ChangeHistory
    from gateway.link.transport import LinkProtocol

__all__ = ["SLOW_CONSUMER", "WatchHub"]

log = logging.getLogger(__name__)

SLOW_CONSUMER: Final = "SLOW_CONSUMER"
_REPLAY_CHUNK: Final = 256  # events sent between two checks of the socket during a replay
_FLUSH_EVERY: Final = 64  # live events queued on one link in one tick before writing them out


class _Watch:
    __slots__ = ("buffer", "last_mark", "link", "match_all", "patterns", "replay", "sub_id")

    def __init__(self, link: LinkProtocol, sub_id: int, patterns: tuple[str, ...]) -> None:
        self.link = link
        self.sub_id = sub_id
        self.patterns = patterns
        self.match_all = "*" in patterns
        self.buffer: deque[Change] | None = None  # not None while replaying
        self.replay: asyncio.Task[None] | None = None
        self.last_mark = 0  # the newest revision this watch was told about (event or progress)

    def matches(self, scope: str) -> bool:
        return self.match_all or any(glob_match(p, scope) for p in self.patterns)


class WatchHub:
    """Every open watch of one server (see the module docstring)."""

    def __init__(
        self,
        history: ChangeHistory | None,
        *,
        progress_interval: float = 5.0,
        max_buffer: int = 10_000,
        max_outbound_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.history = history
        self.progress_interval = progress_interval
        self.max_buffer = max_buffer
        self.max_outbound_bytes = max_outbound_bytes
        self._watches: dict[tuple[LinkProtocol, int], _Watch] = {}
        self._progress: asyncio.Task[None] | None = None
        self._replays: set[asyncio.Task[None]] = set()
        self.cut_total = 0
        self.history_gone_total = 0
        self.events_sent_total = 0

    def start(self) -> None:
        if self.history is not None:
            self.history.add_listener(self._on_change)
            self.history.add_reset_listener(self._on_reset)
        if self.progress_interval > 0:
            self._progress = asyncio.create_task(self._run_progress(), name="link-watch-progress")

    async def stop(self) -> None:
        if self.history is not None:
            self.history.remove_listener(self._on_change)
            self.history.remove_reset_listener(self._on_reset)
        tasks = [t for t in (self._progress, *self._replays) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._progress = None

    # -- opening and ending -----------------------------------------------------------------

    def open(self, link: LinkProtocol, sub_id: int, args: WatchArgs) -> None:
        """Start the watch ``sub_id`` (the request is already authorized)."""
        history = self.history
        if history is None:
            self._refuse(link, sub_id, "UNSUPPORTED", "this upstream keeps no change history")
            return
        if not history.has_epoch():  # a Bridge not linked yet: the downstream retries
            self._refuse(link, sub_id, "UPSTREAM_UNAVAILABLE", "this gateway has no epoch yet; retry")
            return
        if args.epoch is not None and args.epoch != history.epoch:
            self._gone(link, sub_id, f"the store's epoch is {history.epoch}, not {args.epoch}")
            return
        backlog: list[Change] = []
        if args.from_revision is not None:
            found = history.since(args.from_revision)
            if found is None:
                self._gone(
                    link,
                    sub_id,
                    f"revision {args.from_revision} is outside the history "
                    f"({history.floor}..{history.last}, epoch {history.epoch})",
                )
                return
            backlog = found
        watch = _Watch(link, sub_id, args.patterns)
        watch.last_mark = history.last
        self._watches[(link, sub_id)] = watch
        if not backlog:
            self._go_live(watch)
            return
        watch.buffer = deque()
        replay = asyncio.create_task(self._replay(watch, backlog), name=f"link-watch-replay-{sub_id}")
        self._replays.add(replay)  # owned here until it ends; stop() cancels and awaits the rest
        replay.add_done_callback(self._replays.discard)
        watch.replay = replay

    def end(self, link: LinkProtocol, sub_id: int, code: str, message: str) -> None:
        """End watch ``sub_id`` of ``link`` with error ``code`` (no-op if it is not open)."""
        watch = self._watches.pop((link, sub_id), None)
        if watch is None:
            return
        if watch.replay is not None and watch.replay is not asyncio.current_task():
            watch.replay.cancel()
        self._refuse(link, sub_id, code, message)

    def drop_link(self, link: LinkProtocol) -> None:
        """The connection is gone: forget its watches (nothing can be sent any more)."""
        for key in [k for k in self._watches if k[0] is link]:
            watch = self._watches.pop(key)
            if watch.replay is not None:
                watch.replay.cancel()

    def recheck(self, link: LinkProtocol, permissions: Permissions) -> None:
        """The peer's permissions changed: end the watches they no longer allow."""
        for (owner, sub_id), watch in list(self._watches.items()):
            if owner is link:
                denied = permissions.check(WatchArgs(watch.patterns))
                if denied is not None:
                    self.end(link, sub_id, ForbiddenError.code, denied.message)

    def _refuse(self, link: LinkProtocol, sub_id: int, code: str, message: str) -> None:
        conn = link.conn
        if conn is None or conn.state is not State.OPEN or sub_id not in conn.open_request_ids():
            return
        with contextlib.suppress(LinkClosed, LocalProtocolError):
            conn.send_error(sub_id, code, message)
        link.kick()

    def _gone(self, link: LinkProtocol, sub_id: int, message: str) -> None:
        self.history_gone_total += 1
        self._refuse(link, sub_id, HistoryGone.code, message)

    def _cut(self, watch: _Watch, why: str) -> None:
        self.cut_total += 1
        log.warning("link: watch %d of %s cut: %s", watch.sub_id, watch.link.address, why)
        self.end(watch.link, watch.sub_id, SLOW_CONSUMER, why)

    # -- replay and live --------------------------------------------------------------------

    async def _replay(self, watch: _Watch, backlog: list[Change]) -> None:
        link = watch.link
        conn = link.conn
        assert conn is not None
        try:
            for index, change in enumerate(backlog, 1):
                if watch.matches(change.scope):
                    conn.send_event(WatchEvent.from_change(watch.sub_id, change))
                    self.events_sent_total += 1
                if index % _REPLAY_CHUNK == 0:
                    link.kick()
                    await asyncio.sleep(0)  # let the flush run, then wait for the socket
                    await link.drain()
            if self._watches.get((link, watch.sub_id)) is watch:
                self._go_live(watch)
        except (LinkClosed, LinkBroken):
            self._watches.pop((link, watch.sub_id), None)
        except LocalProtocolError as exc:  # an event over the peer's frame limit
            self._watches.pop((link, watch.sub_id), None)
            self._refuse(link, watch.sub_id, exc.code, exc.message)

    def _go_live(self, watch: _Watch) -> None:
        history = self.history
        assert history is not None
        conn = watch.link.conn
        assert conn is not None
        buffered = watch.buffer or ()
        watch.buffer = None
        watch.replay = None
        try:
            for change in buffered:
                conn.send_event(WatchEvent.from_change(watch.sub_id, change))
                self.events_sent_total += 1
            conn.send_backlog_end(watch.sub_id, history.last, history.epoch)
        except (LinkClosed, LocalProtocolError):
            self._watches.pop((watch.link, watch.sub_id), None)
            return
        watch.last_mark = history.last
        watch.link.kick()

    def _on_change(self, change: Change) -> None:
        scope = change.scope
        published_at = time.time()
        shared: SharedFrame | None = None  # the change encoded once, for every live watch
        for watch in list(self._watches.values()):
            if not watch.matches(scope):
                continue
            buffer = watch.buffer
            if buffer is not None:
                if len(buffer) >= self.max_buffer:
                    self._cut(watch, f"more than {self.max_buffer} changes arrived during its replay")
                else:
                    buffer.append(change)
                continue
            link = watch.link
            transport = link.transport
            if transport is not None and transport.get_write_buffer_size() > self.max_outbound_bytes:
                self._cut(watch, f"the peer is not reading ({self.max_outbound_bytes} bytes unsent)")
                continue
            conn = link.conn
            assert conn is not None
            try:
                if shared is None:
                    shared = WatchEvent.shared_frame(change, published_at=published_at)
                conn.send_shared_event(watch.sub_id, shared)
            except (LinkClosed, LocalProtocolError) as exc:
                self._watches.pop((link, watch.sub_id), None)
                if isinstance(exc, LocalProtocolError):
                    self._refuse(link, watch.sub_id, exc.code, exc.message)
                continue
            self.events_sent_total += 1
            watch.last_mark = change.revision
            link.queued_since_flush += 1
            if link.queued_since_flush >= _FLUSH_EVERY:
                link.flush()  # so the bound above sees a burst within one tick
            else:
                link.kick()

    def _on_reset(self, why: str) -> None:
        for link, sub_id in list(self._watches):
            self.history_gone_total += 1
            self.end(link, sub_id, HistoryGone.code, f"the upstream's history was reset: {why}")

    async def _run_progress(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self.send_progress()

    def send_progress(self) -> None:
        """Mark every live watch that was told nothing since the last mark (also on a timer)."""
        history = self.history
        if history is None:
            return
        last = history.last
        for watch in list(self._watches.values()):
            if watch.buffer is not None or watch.last_mark >= last:
                continue
            conn = watch.link.conn
            if conn is None or conn.state is not State.OPEN:
                continue
            with contextlib.suppress(LinkClosed, LocalProtocolError):
                conn.send_progress(watch.sub_id, last)
                watch.last_mark = last
                watch.link.kick()

    def statistics(self) -> dict[str, float]:
        return {
            "link_watches": len(self._watches),
            "link_watch_cuts_total": self.cut_total,
            "link_watch_history_gone_total": self.history_gone_total,
            "link_watch_events_sent_total": self.events_sent_total,
        }
