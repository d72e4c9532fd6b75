"""``iii-gateway serve``: load the settings, set up logging, run the gateway.

Flags override the config file, which overrides the defaults. ``--print-config`` prints the
effective settings as a loadable config file (Redis passwords masked) and exits, which is how
to see what a combination of file, environment and flags really means.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from gateway.cli.common import add_config_argument, configure_logging, load_from_args
from gateway.config import dump_settings, summarize
from gateway.config.schema import LOG_LEVELS

HELP = "run a gateway"

log = logging.getLogger("gateway.cli")


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--host", help="address the worker and HTTP listeners bind to")
    parser.add_argument(
        "--worker-port", type=int, metavar="N", help="iii worker WebSocket port (0: any free)"
    )
    parser.add_argument("--http-port", type=int, metavar="N", help="HTTP port: triggers, /metrics, /healthz")
    parser.add_argument("--link-listen", metavar="ADDR", help="turn on the federation listener at host:port")
    parser.add_argument(
        "--store",
        choices=("in_memory", "file_based"),
        help="use the embedded kv store with this method (replaces the file's adapter)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="where persistent data goes (kv store: DIR/state_store)"
    )
    parser.add_argument("--fsync", choices=("always", "interval", "never"), help="kv store fsync policy")
    parser.add_argument("--engine-id", metavar="ID", help="this gateway's id in events and on the link")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="log level (default: from the file, else info)"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as a config file and exit",
    )


def flag_overrides(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """The flags that were given, as ``{settings.path: (flag, value)}``."""
    table = (
        ("server.host", "--host", args.host),
        ("server.worker_port", "--worker-port", args.worker_port),
        ("server.http_port", "--http-port", args.http_port),
        ("link.listen", "--link-listen", args.link_listen),
        ("data_dir", "--data-dir", args.data_dir),
        ("state.adapter.kv.fsync", "--fsync", args.fsync),
        ("engine_id", "--engine-id", args.engine_id),
        ("log_level", "--log-level", args.log_level),
    )
    flags = {key: (flag, value) for key, flag, value in table if value is not None}
    if args.store is not None:
        flags["state.adapter.name"] = ("--store", "kv")
        flags["state.adapter.kv.store_method"] = ("--store", args.store)
    return flags


def run(args: argparse.Namespace) -> int:
    # Warnings found while loading must be visible before the configured level is known.
    configure_logging("warning", plain=args.print_config)
    settings = load_from_args(args.config, flag_overrides(args))
    if args.print_config:
        sys.stdout.write(dump_settings(settings))
        return 0
    configure_logging(settings.log_level)
    log.info("starting: %s", summarize(settings))
    # Imported here: the whole server stack, needed only to serve (and not for --help).
    app = importlib.import_module("gateway.app")
    return int(app.run(settings))
