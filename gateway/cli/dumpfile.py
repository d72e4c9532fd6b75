"""The export file: JSON Lines, self-describing, checksummed, readable with any JSON tool.

Layout (UTF-8, one JSON object per ``\\n``-terminated line, every object in canonical form:
compact, keys sorted, non-ASCII characters as themselves, as :func:`gateway.jsonutil.dumps`
writes it; lines end at ``\\n`` only, so a U+2028 inside a string is not a line break, which
JSON Lines readers and ``jq`` agree with and ``str.splitlines`` does not)::

    {"created": "...Z", "epoch": E, "format": "iii-gateway-export", "keys": N, "mode": M,
     "patterns": [...], "revision": R, "scopes": [...], "source": {"engine": ID, "gateway": URL},
     "version": 1}
    {"key": K, "revision": r, "scope": S, "value": V}         # one line per key
    ...
    {"bytes": B, "end": "iii-gateway-export", "keys": N, "scopes": {S: n, ...}, "sha256": H}

- The **header** says what the file is a copy of: the source gateway, the store ``epoch`` and
  the one ``revision`` R every value was read at (the file holds exactly the state of the
  matching scopes after the write with revision R), the requested ``patterns`` and the
  resulting ``scopes``, and how it was read (``mode``: ``snapshot`` or ``per-scope``).
- **Records** are grouped by scope (sorted) and sorted by key within a scope; ``revision`` is
  the key's revision in the source (informational: an import makes new revisions). Because
  the value is written in canonical form, comparing a value's canonical JSON before and after
  a round trip is a byte comparison.
- The **trailer** is the last line: counts per scope, and ``bytes`` and ``sha256`` of every byte
  before it (header and records). A file without it is incomplete; a file whose bytes do not
  hash to it was changed or damaged. Either is refused before anything is written anywhere.

Why JSON Lines rather than one JSON document or msgpack: it streams (neither side holds the
file in memory, an import can resume at a line's byte offset), ``grep``/``jq``/``head`` work
on it, and values are JSON in the state model anyway. Integers are limited to 64 bits, like
on the link; floats must be finite.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from gateway.jsonutil import dumps

__all__ = [
    "FORMAT",
    "VERSION",
    "DumpError",
    "DumpInfo",
    "DumpWriter",
    "Record",
    "decode_record",
    "iter_records",
    "loads_strict",
    "verify",
]

FORMAT: Final = "iii-gateway-export"
VERSION: Final = 1
_RECORD_KEYS: Final = frozenset({"scope", "key", "value", "revision"})
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_READ_CHUNK: Final = 1 << 20


class DumpError(Exception):
    """The file is not a complete, intact export; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True, slots=True)
class Record:
    index: int  # 0-based position among the records
    offset: int  # byte offset of the line in the file
    end: int  # byte offset just after it (where the next record starts)
    scope: str
    key: str
    value: Any
    size: int  # bytes of the record's line


@dataclass
class DumpInfo:
    """What :func:`verify` found: the header, the counts, where the records are."""

    header: dict[str, Any]
    keys: int = 0
    scopes: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    sha256: str = ""
    records_offset: int = 0  # byte offset of the first record


class DumpWriter:
    """Writes header, records and trailer to a binary file, hashing as it goes."""

    def __init__(self, out: IO[bytes], header: dict[str, Any]) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.keys = 0
        self.scopes: dict[str, int] = {}
        self._write({"format": FORMAT, "version": VERSION, **header})

    def _write(self, doc: dict[str, Any]) -> None:
        data = (dumps(doc) + "\n").encode("utf-8")
        self._hash.update(data)
        self.bytes += len(data)
        self._out.write(data)

    def add(self, scope: str, key: str, value: Any, revision: int) -> None:
        self._write({"scope": scope, "key": key, "value": value, "revision": revision})
        self.keys += 1
        self.scopes[scope] = self.scopes.get(scope, 0) + 1

    def finish(self) -> dict[str, Any]:
        """Write the trailer (the last line); returns it."""
        trailer = {
            "end": FORMAT,
            "keys": self.keys,
            "scopes": self.scopes,
            "bytes": self.bytes,
            "sha256": self._hash.hexdigest(),
        }
        self._out.write((dumps(trailer) + "\n").encode("utf-8"))
        return trailer


# -- reading ----------------------------------------------------------------------------------


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_line(data: bytes, line: int | None) -> dict[str, Any]:
    try:
        doc = loads_strict(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DumpError(f"not valid JSON: {exc}", line) from None
    if type(doc) is not dict:
        raise DumpError("expected a JSON object", line)
    return doc


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads_strict(data: bytes) -> Any:
    """JSON with no NaN/Infinity and no float overflow (what the state model can hold)."""
    return _DECODER.decode(data.decode("utf-8"))


def _check_ints(value: Any, line: int | None) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise DumpError("an integer does not fit in 64 bits", line)
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)


def decode_record(doc: dict[str, Any], line: int | None) -> tuple[str, str, Any]:
    """``(scope, key, value)`` of a record object; DumpError when it is not one."""
    extra = doc.keys() - _RECORD_KEYS
    if extra:
        raise DumpError(f"unexpected fields {sorted(extra)} in a record", line)
    scope, key = doc.get("scope"), doc.get("key")
    if type(scope) is not str or type(key) is not str:
        raise DumpError("a record needs string 'scope' and 'key'", line)
    if "value" not in doc:
        raise DumpError("a record needs a 'value'", line)
    revision = doc.get("revision")
    if revision is not None and (type(revision) is not int or revision < 0):
        raise DumpError("'revision' must be a non-negative integer", line)
    _check_ints(doc["value"], line)
    return scope, key, doc["value"]


def _lines(f: IO[bytes], start: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` from ``start``; a last line without ``\\n`` is yielded as is."""
    offset = start
    f.seek(start)
    pending = b""
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        pos = 0
        while True:
            nl = pending.find(b"\n", pos)
            if nl < 0:
                break
            yield offset, pending[pos : nl + 1]
            offset += nl + 1 - pos
            pos = nl + 1
        pending = pending[pos:]
    if pending:
        yield offset, pending


def verify(path: str, progress: Callable[[int], object] | None = None) -> DumpInfo:
    """Read the whole file and check it (module docstring); ``progress(n)`` gets bytes read.

    Raises :class:`DumpError` naming the first problem, or OSError when it cannot be read.
    """
    digest = hashlib.sha256()
    info: DumpInfo | None = None
    trailer: dict[str, Any] | None = None
    with open(path, "rb") as f:
        for number, (offset, data) in enumerate(_lines(f, 0), 1):
            if progress is not None:
                progress(len(data))
            if trailer is not None:
                raise DumpError("data after the trailer", number)
            if not data.endswith(b"\n"):
                raise DumpError("the last line is cut off (an incomplete file?)", number)
            doc = _parse_line(data, number)
            if info is None:
                info = _header(doc, number)
                info.records_offset = offset + len(data)
            elif "end" in doc:
                trailer = doc
                continue
            else:
                scope, _key, _value = decode_record(doc, number)
                info.keys += 1
                info.scopes[scope] = info.scopes.get(scope, 0) + 1
            digest.update(data)
            info.bytes += len(data)
    if info is None:
        raise DumpError("the file is empty")
    if trailer is None:
        raise DumpError("no trailer: the file is incomplete (an export that did not finish?)")
    info.sha256 = digest.hexdigest()
    _check_trailer(info, trailer)
    return info


def _header(doc: dict[str, Any], line: int) -> DumpInfo:
    if doc.get("format") != FORMAT:
        raise DumpError(f"not an {FORMAT} file (no format header)", line)
    version = doc.get("version")
    if version != VERSION:
        raise DumpError(f"format version {version!r}; this iii-gateway reads version {VERSION}", line)
    return DumpInfo(header=doc)


def _check_trailer(info: DumpInfo, trailer: dict[str, Any]) -> None:
    if trailer.get("end") != FORMAT:
        raise DumpError("the trailer is not an export trailer")
    if trailer.get("bytes") != info.bytes or trailer.get("sha256") != info.sha256:
        raise DumpError(
            f"checksum mismatch: the trailer says {trailer.get('bytes')} bytes with sha256 "
            f"{str(trailer.get('sha256'))[:16]}..., the file has {info.bytes} bytes with sha256 "
            f"{info.sha256[:16]}...: it was changed or damaged after the export"
        )
    if trailer.get("keys") != info.keys or trailer.get("scopes") != info.scopes:
        raise DumpError(f"the trailer's counts do not match the {info.keys} records in the file")


def iter_records(path: str, offset: int, first_index: int) -> Iterator[Record]:
    """The records from byte ``offset`` (which must start record ``first_index``) to the trailer.

    For a file :func:`verify` accepted; each line is parsed and checked again all the same (it
    is cheap, and the file may have changed since).
    """
    with open(path, "rb") as f:
        index = first_index
        for start, data in _lines(f, offset):
            doc = _parse_line(data, None)  # line numbers are unknown when starting mid-file
            if "end" in doc:
                return
            scope, key, value = decode_record(doc, None)
            yield Record(index, start, start + len(data), scope, key, value, len(data))
            index += 1
    raise DumpError("the file ended before its trailer")
