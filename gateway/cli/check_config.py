"""``iii-gateway check-config FILE...``: validate config files without starting anything.

Prints ``ok: FILE: <summary>`` per valid file on stdout; for an invalid one, one
``error: FILE:LINE: KEY: MESSAGE`` line on stderr. Exit 0 when all are valid, else 2. The
environment is expanded as ``serve`` would, so run it where the gateway runs. Warnings (ignored
modules) go to stderr and do not fail the check. Files named in the config (keys, peers) are
not opened: they are checked by the component that uses them, at start.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.cli.common import configure_logging
from gateway.config import load_settings, summarize
from gateway.errors import ConfigError

HELP = "validate config files and print a summary"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="config file(s) to check")


def run(args: argparse.Namespace) -> int:
    configure_logging("warning", plain=True)
    status = 0
    for path in args.files:
        try:
            settings = load_settings(path, os.environ)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"ok: {path}: {summarize(settings)}")
    return status
