"""``iii-gateway state watch SCOPE_PATTERN... [--from-revision N [--epoch E]]``: follow changes.

The stream is the link's watch: with ``--from-revision N`` the gateway first replays the
changes after ``N`` that are still in its change history, then marks the end of that backlog,
then sends live changes; without it, only live changes. The stream is bound to one store
epoch: ``--epoch E`` (the ``epoch`` of a line printed earlier, to resume exactly where a
previous watch stopped), else the store's current epoch, asked for first, so every line can
name its epoch and a store that changed identity ends the stream instead of mixing two
revision sequences. Output is one line per change,
written and flushed as it arrives (so ``| grep`` and ``| jq`` see it at once):

- for people: ``REVISION<TAB>EVENT<TAB>SCOPE<TAB>KEY<TAB>VALUE`` (``created``/``updated``
  with the new value as compact JSON, ``deleted`` with ``-``); the backlog end is a note on
  stderr, so stdout holds changes only;
- with ``--json``: one object per line, ``{"type": "event", "revision", "epoch", "scope",
  "key", "event_type", "old_value", "new_value", "origin"}``, plus ``{"type":
  "backlog_end", "revision", "epoch"}`` and the gateway's periodic ``{"type": "progress",
  "revision"}`` bookmarks, so a consumer can record where to resume.

It runs until interrupted: SIGINT (Ctrl-C) or SIGTERM end it cleanly with exit 0, as does a
closed stdout (``| head``). When the gateway cuts the stream because we read too slowly it is
resumed at once from the last revision printed, with the same epoch, so nothing is lost or
repeated. When the requested revision is no longer in the gateway's history (or the store's
epoch changed) the gateway answers ``HISTORY_GONE``: that is printed as such (and, with
``--json``, as a ``{"type": "history_gone", "message"}`` line) with exit 1, because the
changes in between cannot be shown; ``export`` gives a full copy instead. A lost link exits 3
and names the last revision seen, to resume from with ``--from-revision``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from gateway.cli.remote import (
    EXIT_CONNECT,
    EXIT_FAILURE,
    EXIT_OK,
    Target,
    fail,
    operation_failure,
    request,
)
from gateway.errors import GatewayError, HistoryGone, LinkBroken
from gateway.jsonutil import dumps
from gateway.link.client import LinkClient
from gateway.link.messages import WatchEvent
from gateway.link.requests import InfoArgs, WatchArgs

__all__ = ["watch"]

SLOW_CONSUMER = "SLOW_CONSUMER"


class _Printer:
    """The watch listener: prints each frame as it arrives and remembers where we are."""

    def __init__(self, json_mode: bool, from_revision: int | None, epoch: str) -> None:
        self.json = json_mode
        self.last = from_revision  # the newest revision printed or marked: where to resume
        self.epoch = epoch
        self.closed = asyncio.Event()  # stdout went away

    def _out(self, line: str) -> None:
        if self.closed.is_set():
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader left (| head): stop, and keep the interpreter's final flush quiet.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.closed.set()

    def _advance(self, revision: int) -> None:
        self.last = revision if self.last is None else max(self.last, revision)

    def on_event(self, event: WatchEvent) -> None:
        self._advance(event.revision)
        kind = event.event_type.removeprefix("state:")
        if self.json:
            doc: dict[str, Any] = {
                "type": "event",
                "revision": event.revision,
                "epoch": event.epoch or self.epoch,
                "scope": event.scope,
                "key": event.key,
                "event_type": event.event_type,
                "old_value": event.old_value,
                "new_value": event.new_value,
                "origin": event.origin,
            }
            self._out(dumps(doc))
        else:
            value = "-" if kind == "deleted" else dumps(event.new_value)
            self._out(f"{event.revision}\t{kind}\t{event.scope}\t{event.key}\t{value}")

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        self.epoch = epoch
        self._advance(revision)
        if self.json:
            self._out(dumps({"type": "backlog_end", "revision": revision, "epoch": epoch}))
        else:
            print(f"-- live from revision {revision} (epoch {epoch}) --", file=sys.stderr, flush=True)

    def on_progress(self, revision: int) -> None:
        self._advance(revision)
        if self.json:
            self._out(dumps({"type": "progress", "revision": revision}))


async def watch(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    if args.from_revision is not None and args.from_revision < 0:
        fail(2, "--from-revision must be 0 or more")
    epoch = args.epoch or (await request(client, InfoArgs(), target.timeout))["epoch"]
    printer = _Printer(args.json, args.from_revision, epoch)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _follow(args, client, printer, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _follow(
    args: argparse.Namespace, client: LinkClient, printer: _Printer, stop: asyncio.Event
) -> int:
    patterns = tuple(args.patterns)
    from_revision: int | None = args.from_revision
    epoch = printer.epoch
    while True:
        try:
            stream = client.watch(WatchArgs(patterns, from_revision, epoch), printer)
        except GatewayError as exc:
            raise operation_failure(exc) from None
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(printer.closed.wait())}
        try:
            await asyncio.wait({stream.done, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if not stream.done.done():  # interrupted, or stdout closed: a normal end
            stream.cancel()
            return EXIT_OK
        if stream.done.cancelled():
            return EXIT_OK
        ended = stream.done.exception()
        if ended is None:  # the gateway ended the stream without an error
            return EXIT_OK
        if isinstance(ended, HistoryGone):
            where = f"revision {args.from_revision}" if printer.last is None else f"revision {printer.last}"
            message = f"the gateway no longer has the changes after {where}: {ended.message}"
            if args.json:
                printer._out(dumps({"type": "history_gone", "message": message}))
            fail(
                EXIT_FAILURE,
                f"HISTORY_GONE: {message}. Watch without --from-revision for live changes, "
                "or use export for a full copy",
            )
        if isinstance(ended, GatewayError) and ended.code == SLOW_CONSUMER and printer.last is not None:
            print(
                f"note: the gateway cut the stream ({ended.message}); resuming after revision {printer.last}",
                file=sys.stderr,
                flush=True,
            )
            from_revision, epoch = printer.last, printer.epoch
            continue
        if isinstance(ended, LinkBroken):
            seen = f"; the last revision seen was {printer.last}" if printer.last is not None else ""
            fail(EXIT_CONNECT, f"{ended.code}: {ended.message}{seen}")
        if isinstance(ended, GatewayError):
            raise operation_failure(ended)
        raise ended
