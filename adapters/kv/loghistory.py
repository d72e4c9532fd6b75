"""Change history older than the in-memory ring, read back from the write-ahead log on disk.

The kv store's ring of recent changes starts empty at each process start, so without this a
watcher that resumes after the store restarted always gets ``HISTORY_GONE`` and resyncs from a
snapshot, which collapses repeated writes to one key into one event (a gap for its triggers).
The log segments hold every write since the last snapshot, each with its revision, so the
history really reaches back to the oldest revision still in a segment: only compaction (which
removes the segments a snapshot covers) makes it gone.

**What a change read from the log carries.** A record has revision, op, scope, key and value,
not the old value, the kind or the origin. Rebuilding those exactly would mean replaying from
the snapshot; instead, within the range read:

- ``old_value`` is the value of the key's previous record in the range (null after a delete),
  and null for the first record of a key in the range (its earlier value is not read);
- ``kind``: a delete is ``DELETED``; a put after a delete in the range is ``CREATED``, after a
  put ``UPDATED``; the first put of a key in the range is ``UPDATED`` (whether the key existed
  before is not known here);
- ``origin`` is :data:`LOG_ORIGIN`: the log does not record who wrote.

Revisions, scopes, keys and new values are exact, so a relay resumed from the log shows every
write, in order, none collapsed. The work is bounded: only the segments from the one holding
the first wanted revision are read, only up to ``through``, and at most ``max_changes``
(beyond that the answer is None and the watcher resyncs). Reading is synchronous: a resume
that reaches into the log blocks the event loop for as long as the read takes (about a second
per million records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from adapters.kv.files import list_segments
from adapters.kv.records import NeedData, Op, decode_fields, decode_value
from gateway.errors import CorruptDataError
from gateway.state.adapter import Change, ChangeKind

__all__ = ["LOG_ORIGIN", "read_log_changes"]

#: The origin of changes read back from the log (it does not record the writer).
LOG_ORIGIN: Final = "kv-log"

_PUT: Final = int(Op.PUT)
_DELETE: Final = int(Op.DELETE)


def read_log_changes(directory: Path, after: int, through: int, *, max_changes: int) -> list[Change] | None:
    """Every change with ``after < revision <= through`` from the log segments, oldest first;
    None when the log no longer (or not yet) holds all of them, or there are over ``max_changes``."""
    if through <= after:
        return []
    if through - after > max_changes:
        return None
    try:
        segments = list_segments(directory)
    except OSError:
        return None
    start = None
    for index, (first, _) in enumerate(segments):
        if first <= after + 1:
            start = index
    if start is None:
        return None  # compacted away: the oldest segment starts after the wanted revision
    changes: list[Change] = []
    last: dict[tuple[str, str], bytes | None] = {}
    expected = after + 1
    for _, path in segments[start:]:
        try:
            data = path.read_bytes()  # a segment removed by compaction meanwhile: gone
        except OSError:
            return None
        offset = 0
        while offset < len(data) and expected <= through:
            try:
                fields = decode_fields(data, offset)
            except CorruptDataError:
                return None
            if isinstance(fields, NeedData):
                break  # the end of what the flusher has written so far
            op, revision, scope, key, value, offset = fields
            if revision < expected:
                continue
            if revision != expected or op not in (_PUT, _DELETE):
                return None
            slot = (scope, key)
            known = slot in last
            previous = last.get(slot)
            if op == _DELETE:
                kind = ChangeKind.DELETED
            elif known and previous is None:
                kind = ChangeKind.CREATED
            else:
                kind = ChangeKind.UPDATED
            changes.append(
                Change(
                    scope=scope,
                    key=key,
                    kind=kind,
                    old_value=None if previous is None else decode_value(previous),
                    new_value=None if value is None else decode_value(value),
                    revision=revision,
                    origin=LOG_ORIGIN,
                )
            )
            last[slot] = value
            expected += 1
        if expected > through:
            return changes
    return None
