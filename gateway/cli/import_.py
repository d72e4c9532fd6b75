"""``iii-gateway import FILE``: write an export file into a gateway, resumably.

**Check first.** The whole file is read and checked before the gateway is even contacted:
header, every record, the trailer's counts and its sha256 over all the bytes before it (see
:mod:`gateway.cli.dumpfile`). A truncated, edited or damaged file is refused (exit 2) with
nothing written. ``--dry-run`` stops there and says what a real run would do.

**Pipelined.** Records are sent as ``set`` requests over one link with up to
``--concurrency`` in flight. Each key goes to one of that many lanes chosen by its scope and
key, and a lane sends in file order, so two lines for the same key (not in an export, but in a
hand-made file) are applied in order. ``--max-rate`` caps keys per second, to spare a
gateway in production.

**Resumable.** Progress is recorded in a state file (``FILE.import-state``, or ``--state``):
the number of records from the start of the file that are all acknowledged, and the byte
offset where the next one starts. It is replaced atomically (write, fsync, rename) every
``--batch`` keys and when the run ends for any reason, so after a crash, a kill, a lost link
or a refused write the same command continues from there instead of starting over on ten
million keys. Records past that point that were already written are written again, which
is harmless: a ``set`` of the same value is idempotent. The state file names the export (its
sha256) and the target engine, and a resume with another file or into another gateway is
refused (``--restart`` starts over). ``--stop-after N`` writes at most N keys and stops with
progress saved, to import in slices.

Exit codes: 0 done (or stopped by ``--stop-after``, or already complete); 1 the gateway
refused a write (named, with its error code); 2 bad flags, bad or mismatched file or state
file; 3 cannot connect, or the link was lost; 130 interrupted (SIGINT/SIGTERM), progress saved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.cli.dumpfile import DumpError, DumpInfo, Record, iter_records, verify
from gateway.cli.remote import (
    EXIT_OK,
    EXIT_USAGE,
    CliFailure,
    Target,
    add_link_arguments,
    fail,
    open_link,
    print_json,
    progress_bar,
    report,
    request,
    resolve_target,
)

if TYPE_CHECKING:
    from gateway.link.client import LinkClient

__all__ = ["HELP", "ImportState", "configure", "run"]

HELP = "write an export file into a gateway (checked first, pipelined, resumable)"

STATE_FORMAT: Final = "iii-gateway-import-state"
EXIT_INTERRUPTED: Final = 130
_LANE_DEPTH: Final = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="an export file (from iii-gateway export)")
    parser.add_argument("--state", metavar="FILE", help="the progress file (default FILE.import-state)")
    parser.add_argument("--restart", action="store_true", help="ignore recorded progress and start over")
    parser.add_argument("--dry-run", action="store_true", help="check the file and report; write nothing")
    parser.add_argument("--concurrency", type=int, default=128, metavar="N", help="writes in flight (128)")
    parser.add_argument(
        "--batch", type=int, default=10_000, metavar="N", help="keys between checkpoints (10000)"
    )
    parser.add_argument(
        "--stop-after", type=int, metavar="N", help="write at most N keys in this run, then stop"
    )
    parser.add_argument("--max-rate", type=float, metavar="KEYS", help="at most this many keys per second")
    parser.add_argument("--quiet", action="store_true", help="no progress output and no summary line")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_link_arguments(parser)


@dataclass
class ImportState:
    """The progress file (module docstring). ``done`` records from the start are written."""

    export_sha256: str
    keys: int
    engine: str
    gateway: str
    done: int
    offset: int
    writes: int = 0  # acknowledged writes over every run (re-writes after a resume included)
    runs: int = 0
    complete: bool = False
    updated: str = ""

    def save(self, path: str) -> None:
        self.updated = _now()
        data = json.dumps({"format": STATE_FORMAT, "version": 1, **asdict(self)}, indent=1) + "\n"
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            fail(EXIT_USAGE, f"{path}: cannot save the import progress: {exc.strerror or exc}")

    @classmethod
    def load(cls, path: str) -> ImportState | None:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            fail(EXIT_USAGE, f"{path}: unreadable import state ({exc}); remove it or use --restart")
        if (
            not isinstance(doc, dict)
            or doc.pop("format", None) != STATE_FORMAT
            or doc.pop("version", None) != 1
        ):
            fail(EXIT_USAGE, f"{path}: not an import state file; remove it or use --restart")
        try:
            return cls(**doc)
        except TypeError as exc:
            fail(EXIT_USAGE, f"{path}: unreadable import state ({exc}); remove it or use --restart")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    try:
        for flag, value in (("--concurrency", args.concurrency), ("--batch", args.batch)):
            if value < 1:
                fail(EXIT_USAGE, f"{flag} must be at least 1")
        if args.stop_after is not None and args.stop_after < 0:
            fail(EXIT_USAGE, "--stop-after must be 0 or more")
        if args.max_rate is not None and not args.max_rate > 0:
            fail(EXIT_USAGE, "--max-rate must be a positive number")
        info = _check_file(args)
        state_path = args.state or f"{args.file}.import-state"
        state = None if args.restart else ImportState.load(state_path)
        if state is not None and state.export_sha256 != info.sha256:
            fail(
                EXIT_USAGE,
                f"{state_path}: records the import of another export (sha256 {state.export_sha256[:16]}...); "
                "use --restart or another --state",
            )
        if args.dry_run:
            return _dry_run(args, info, state)
        if state is not None and state.complete:
            _say(
                args,
                f"{args.file}: already imported into {state.engine} ({state.keys} keys); --restart to redo",
            )
            if args.json:
                print_json(
                    {"file": args.file, "complete": True, "keys_written": 0, "keys_skipped": state.keys}
                )
            return EXIT_OK
        target = resolve_target(args)
        return asyncio.run(_import(args, target, info, state, state_path))
    except CliFailure as failure:
        return report(failure)


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _check_file(args: argparse.Namespace) -> DumpInfo:
    try:
        size = os.stat(args.file).st_size
        with progress_bar(size, "B", "checking", args.quiet) as bar:
            return verify(args.file, bar.update)
    except DumpError as exc:
        fail(EXIT_USAGE, f"{args.file}: refused, not a complete and intact export: {exc}")
    except OSError as exc:
        fail(EXIT_USAGE, f"{args.file}: cannot read: {exc.strerror or exc}")


def _dry_run(args: argparse.Namespace, info: DumpInfo, state: ImportState | None) -> int:
    h = info.header
    source = h.get("source") or {}
    doc: dict[str, Any] = {
        "file": args.file,
        "dry_run": True,
        "keys": info.keys,
        "scopes": info.scopes,
        "bytes": info.bytes,
        "source_engine": source.get("engine"),
        "revision": h.get("revision"),
        "epoch": h.get("epoch"),
        "done_before": state.done if state is not None else 0,
    }
    if args.json:
        print_json(doc)
    else:
        resume = f"; a run would continue after {state.done} keys" if state is not None and state.done else ""
        _say(
            args,
            f"{args.file}: a complete export of {info.keys} keys in {len(info.scopes)} scopes "
            f"({info.bytes} bytes) from {source.get('engine')} at revision "
            f"{h.get('revision')} (epoch {h.get('epoch')}); nothing written (dry run){resume}",
        )
    return EXIT_OK


async def _import(
    args: argparse.Namespace, target: Target, info: DumpInfo, state: ImportState | None, state_path: str
) -> int:
    started = time.monotonic()
    client = await open_link(target)
    try:
        engine = client.peer.peer_id if client.peer is not None else ""
        if state is not None and state.engine != engine:
            fail(
                EXIT_USAGE,
                f"{state_path}: records an import into engine {state.engine}, but {target.label} is "
                f"{engine}; use --restart (or another --state) to import into this one",
            )
        if state is None:
            state = ImportState(info.sha256, info.keys, engine, target.label, 0, info.records_offset)
        state.gateway = target.label
        state.runs += 1
        pump = _Pump(args, client, target, info, state, state_path)
        await pump.run()
    finally:
        await client.aclose()
    return _finish(args, info, pump, time.monotonic() - started)


def _finish(args: argparse.Namespace, info: DumpInfo, pump: _Pump, seconds: float) -> int:
    state = pump.state
    summary = {
        "file": args.file,
        "engine": state.engine,
        "gateway": state.gateway,
        "keys": info.keys,
        "keys_written": pump.written,
        "keys_skipped": pump.skipped,
        "done": state.done,
        "complete": state.complete,
        "scopes": len(info.scopes),
        "bytes": pump.bytes,
        "seconds": round(seconds, 3),
    }
    if args.json:
        print_json(summary)
    rate = pump.written / seconds if seconds > 0 else 0.0
    head = (
        f"imported {pump.written} keys ({pump.skipped} done before) into {state.engine}, "
        f"{len(info.scopes)} scopes, {pump.bytes} bytes, {seconds:.2f} s ({rate:.0f} keys/s)"
    )
    if pump.failure is not None:
        pump.failure.message += f"; {state.done} of {info.keys} keys imported, run the same command to resume"
        raise pump.failure
    if pump.interrupted:
        print(
            f"interrupted: {state.done} of {info.keys} keys imported; run the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.json:
        more = "" if state.complete else f"; stopped at {state.done} of {info.keys}, run again to continue"
        _say(args, head + more)
    return EXIT_OK


class _Pump:
    """Reads records from the file and keeps up to ``concurrency`` writes in flight."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: LinkClient,
        target: Target,
        info: DumpInfo,
        state: ImportState,
        state_path: str,
    ) -> None:
        self.args = args
        self.client = client
        self.timeout = target.timeout
        self.info = info
        self.state = state
        self.state_path = state_path
        self.skipped = state.done
        self.written = 0
        self.bytes = 0
        self.failure: CliFailure | None = None
        from gateway.link.requests import SetArgs  # the link stack, only to run

        self._set = SetArgs
        self.interrupted = False
        self._stop = asyncio.Event()
        # Once stopped, records after this index are not written: after a refused write, the
        # ones before it still are (so progress ends exactly at the refused key); after an
        # interruption, none (-1).
        self._cutoff: int | None = None
        self._acked: set[int] = set()
        self._ends: dict[int, int] = {}  # record index -> offset after it, until committed
        self._saved = state.done
        self._plain = not args.quiet and not sys.stderr.isatty()
        self._bar = progress_bar(info.keys, "key", "importing", args.quiet)
        self._bar.update(state.done)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        lanes: list[asyncio.Queue[Record | None]] = [
            asyncio.Queue(_LANE_DEPTH) for _ in range(self.args.concurrency)
        ]
        try:
            workers = [asyncio.create_task(self._work(q)) for q in lanes]
            try:
                await self._produce(lanes)
            except DumpError as exc:  # the file changed after it was checked
                self._cutoff = -1
                self._stop.set()
                self.failure = CliFailure(
                    EXIT_USAGE, f"{self.args.file}: changed since it was checked: {exc}"
                )
            finally:
                for q in lanes:
                    await q.put(None)
                await asyncio.gather(*workers)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._bar.close()
            self.state.complete = self.state.done == self.info.keys
            self.state.save(self.state_path)

    def _interrupt(self) -> None:
        self.interrupted = True
        self._cutoff = -1
        self._stop.set()

    async def _produce(self, lanes: list[asyncio.Queue[Record | None]]) -> None:
        args, state = self.args, self.state
        rate, limit = args.max_rate, args.stop_after
        started = time.monotonic()
        for sent, record in enumerate(iter_records(args.file, state.offset, state.done)):
            if self._stop.is_set() or (limit is not None and sent >= limit):
                return
            if rate is not None:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
                    if self._stop.is_set():
                        return
            self._ends[record.index] = record.end
            await lanes[hash((record.scope, record.key)) % len(lanes)].put(record)

    async def _work(self, lane: asyncio.Queue[Record | None]) -> None:
        while (record := await lane.get()) is not None:
            if self._stop.is_set() and (self._cutoff is None or record.index > self._cutoff):
                continue  # drain without writing, so the producer never blocks
            try:
                await request(
                    self.client,
                    self._set(record.scope, record.key, record.value),
                    self.timeout,
                    f"set of key {record.key!r} in scope {record.scope!r}",
                )
            except CliFailure as failure:
                if self._cutoff is None or record.index < self._cutoff:
                    self._cutoff = record.index
                    self.failure = failure
                self._stop.set()
                continue
            self._ack(record)

    def _ack(self, record: Record) -> None:
        state = self.state
        self.written += 1
        self.bytes += record.size
        state.writes += 1
        self._bar.update(1)
        self._acked.add(record.index)
        while state.done in self._acked:
            self._acked.remove(state.done)
            state.offset = self._ends.pop(state.done)
            state.done += 1
        if state.done - self._saved >= self.args.batch:
            self._saved = state.done
            state.save(self.state_path)
            if self._plain:
                print(f"import: {state.done}/{self.info.keys} keys", file=sys.stderr, flush=True)
