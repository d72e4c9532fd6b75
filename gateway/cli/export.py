"""``iii-gateway export (--scope PATTERN ... | --all) -o FILE``: copy scopes to a file.

Everything in the file is the state at one revision of the source store (see
:mod:`gateway.cli.consistent` for how that is read, in one request or scope by scope, and
:mod:`gateway.cli.dumpfile` for the format). The file appears only when complete: it is
written as ``FILE.partial``, synced, then renamed, so a failed or interrupted export never
leaves something that looks like an export (``-o -`` writes to stdout instead).

A progress bar goes to stderr when it is a terminal (not with ``--quiet``); the summary is
one line on stderr, or a JSON object on stdout with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from gateway.cli.dumpfile import DumpWriter
from gateway.cli.remote import (
    EXIT_FAILURE,
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
    resolve_target,
)

if TYPE_CHECKING:
    from gateway.cli.consistent import Cut

__all__ = ["HELP", "configure", "run"]

HELP = "copy scopes from a gateway to a file, consistent at one revision"


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="PATTERN",
        help="a scope name or glob (* and ?) to export; repeat for more",
    )
    what.add_argument(
        "--all", action="store_true", help="every scope this client may read (its read patterns, or *)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write (- for stdout)")
    parser.add_argument(
        "--per-scope",
        action="store_true",
        help="read one scope per request (default: only when one snapshot is over the link's frame size)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_link_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.json and args.output == "-":
            fail(EXIT_USAGE, "--json prints on stdout; it cannot go with -o -")
        patterns = ("*",) if args.all else tuple(args.scopes)
        # A scope-by-scope read spools next to the output (same disk, and not a small /tmp).
        args.spool_dir = os.path.dirname(os.path.abspath(args.output)) if args.output != "-" else None
        if args.spool_dir is not None and not os.path.isdir(args.spool_dir):
            fail(EXIT_USAGE, f"{args.output}: cannot write: {args.spool_dir} is not a directory")
        target = resolve_target(args)
        return asyncio.run(_export(args, target, patterns))
    except CliFailure as failure:
        return report(failure)


async def _export(args: argparse.Namespace, target: Target, patterns: tuple[str, ...]) -> int:
    from gateway.cli.consistent import read_cut  # the link stack, only to run

    started = time.monotonic()
    client = await open_link(target)
    engine = client.peer.peer_id if client.peer is not None else ""
    perms = client.peer.permissions if client.peer is not None else None
    if args.all and perms is not None and "*" not in perms.read:
        # "Every scope this client may read": its read patterns, as the gateway told us at the
        # handshake (asking for "*" would be refused outright).
        patterns = tuple(perms.read)
        if not patterns:
            await client.aclose()
            fail(EXIT_FAILURE, "FORBIDDEN: this client may not read any scope")
    try:
        with progress_bar(None, "scope", "reading", args.quiet) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            cut = await read_cut(
                client,
                patterns,
                timeout=target.timeout,
                per_scope=args.per_scope,
                spool_dir=args.spool_dir,
                progress=advance,
            )
    finally:
        await client.aclose()
    try:
        header = {
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "source": {"engine": engine, "gateway": target.label},
            "epoch": cut.epoch,
            "revision": cut.revision,
            "patterns": list(patterns),
            "mode": cut.mode,
        }
        trailer, header = _write(args, cut, header)
    finally:
        cut.close()
    summary = {
        "file": args.output,
        "engine": engine,
        "epoch": cut.epoch,
        "revision": cut.revision,
        "mode": cut.mode,
        "keys": trailer["keys"],
        "scopes": trailer["scopes"],
        "bytes": trailer["bytes"],
        "sha256": trailer["sha256"],
        "seconds": round(time.monotonic() - started, 3),
    }
    if args.json:
        print_json(summary)
    elif not args.quiet:
        print(
            f"exported {summary['keys']} keys in {len(trailer['scopes'])} scopes from {engine} "
            f"at revision {cut.revision} (epoch {cut.epoch}, {cut.mode}) to {args.output}: "
            f"{summary['bytes']} bytes, sha256 {str(summary['sha256'])[:16]}..., "
            f"{summary['seconds']:.2f} s",
            file=sys.stderr,
        )
    return EXIT_OK


def _write(
    args: argparse.Namespace, cut: Cut, header: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the file (atomically unless it is stdout); returns the trailer and the header."""
    groups = list(_counted(cut))
    header["scopes"] = [scope for scope, _ in groups]
    header["keys"] = sum(n for _, n in groups)
    if args.output == "-":
        try:
            trailer = _write_to(sys.stdout.buffer, cut, header, args.quiet)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader left (| head): what it got has no trailer
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            fail(EXIT_FAILURE, "the output was closed before the export was complete")
        return trailer, header
    partial = args.output + ".partial"
    try:
        with open(partial, "wb") as out:
            trailer = _write_to(out, cut, header, args.quiet)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, args.output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        fail(EXIT_USAGE, f"{args.output}: cannot write: {exc.strerror or exc}")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return trailer, header


def _counted(cut: Cut) -> list[tuple[str, int]]:
    return [(scope, len(items)) for scope, items in cut.groups()]


def _write_to(out: IO[bytes], cut: Cut, header: dict[str, Any], quiet: bool) -> dict[str, Any]:
    writer = DumpWriter(out, header)
    with progress_bar(header["keys"], "key", "writing", quiet) as bar:
        for scope, items in cut.groups():
            for key, value, rev in items:
                writer.add(scope, key, value, rev)
            bar.update(len(items))
    return writer.finish()
