"""The relay position of one upstream, kept in a small file so a restarted edge resumes.

Without it an edge starts live-from-now after every restart, and its triggers silently miss
what happened upstream while it was down. With it, the relay watch of a restarted edge asks
for ``from_revision`` = the persisted revision in the persisted epoch: the upstream replays the
changes in between (or answers ``HISTORY_GONE`` and the edge resyncs as usual).

**What is persisted.** ``{"epoch", "revision"}``: every change of that upstream epoch up to
``revision`` has been handed to the local sinks (the trigger queues). :meth:`note` is called
*after* the sinks got a change (or when a progress mark or a resync moves the position). The
file is not written on every event: at most once per ``interval`` (a timer owned here, armed by
the first note after a write), and once more at :meth:`close` (the gateway's clean stop).

**Crash semantics (at-least-once).** Each write goes to a temporary file that is fsynced and
then renamed over the old one, so the file always holds a whole position, never a torn one.
After a clean stop (SIGTERM) the file holds the exact last position: nothing is repeated and
nothing skipped. After a crash (SIGKILL, power loss) it may lag by up to ``interval``: the
changes delivered after the last write are delivered once more, in order, after the restart
(the relay still drops anything at or below the position, so a repeat happens at most once per
crash and never out of order). A change is never skipped because of the file.

A file that cannot be read or parsed is ignored with a warning (the relay then starts
live-from-now, as it did before positions were kept); a file that cannot be written is logged
and retried at the next note, so a full disk never stops the relay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_INTERVAL", "RelayPosition"]

log = logging.getLogger(__name__)

#: Seconds between two writes of the file under a steady stream of events.
DEFAULT_INTERVAL: Final = 0.25


class RelayPosition:
    """The persisted (epoch, revision) of one upstream's relay (see the module docstring)."""

    def __init__(self, path: Path, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._epoch: str | None = None
        self._revision = 0
        self._written: tuple[str, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.writes_total = 0

    def load(self) -> tuple[str, int] | None:
        """The persisted position, or None (no file yet, or one that cannot be used)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            epoch, revision = data["epoch"], data["revision"]
            if not isinstance(epoch, str) or not epoch or type(revision) is not int or revision < 0:
                raise ValueError("not a relay position")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("bridge: ignoring the relay position in %s (%s); relaying from now", self.path, exc)
            return None
        self._epoch, self._revision = epoch, revision
        self._written = (epoch, revision)
        return epoch, revision

    def note(self, epoch: str | None, revision: int) -> None:
        """Everything up to ``revision`` of ``epoch`` was delivered; written within ``interval``."""
        if epoch is None:
            return
        self._epoch, self._revision = epoch, revision
        if self._timer is None and self._written != (epoch, revision):
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the position now if it moved since the last write."""
        epoch = self._epoch
        if epoch is None or self._written == (epoch, self._revision):
            return
        position = (epoch, self._revision)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"epoch": position[0], "revision": position[1]}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("bridge: cannot write the relay position to %s: %s", self.path, exc)
            return
        self._written = position
        self.writes_total += 1

    def close(self) -> None:
        """The clean stop: cancel the timer and write the exact last position."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
