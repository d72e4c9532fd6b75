"""The ``iii-gateway`` command line (also ``python -m gateway``).

Each subcommand is one module in this package exposing::

    HELP: str                                  # one line for ``iii-gateway --help``
    def configure(parser: ArgumentParser) -> None   # its flags
    def run(args: Namespace) -> int                 # the exit code

and is listed in :data:`COMMANDS` (command name -> module). Adding ``keygen`` is: write
``gateway/cli/keygen.py`` with those three names and add ``"keygen": "gateway.cli.keygen"``.
Command modules import heavy things (the app, asyncio servers) inside ``run``, so ``--help``
and ``check-config`` stay fast and work without them.

Exit codes: 0 success; 1 a runtime failure (:class:`~gateway.errors.GatewayError`); 2 a usage
or configuration error, printed as one ``error: <file>:<line>: <key>: <message>`` line on
stderr, never a traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from gateway import __version__
from gateway.errors import ConfigError, GatewayError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, str] = {
    "serve": "gateway.cli.serve",
    "check-config": "gateway.cli.check_config",
    "version": "gateway.cli.version",
    "keygen": "gateway.cli.keygen",
    "state": "gateway.cli.state",
    "export": "gateway.cli.export",
    "import": "gateway.cli.import_",
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Command(Protocol):
    HELP: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iii-gateway",
        description="A federating engine for the iii state model.",
    )
    parser.add_argument("--version", action="version", version=f"iii-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        command = cast(Command, importlib.import_module(module_name))
        child = sub.add_parser(name, help=command.HELP, description=command.HELP)
        command.configure(child)
        child.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
