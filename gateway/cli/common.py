"""Helpers shared by subcommands: logging set-up and config flags.

Only the CLI configures logging (library modules just get loggers), and only the CLI reads
``os.environ``; it hands the environment to the config loader explicitly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from gateway.config import OVERRIDE_KEYS, load_settings
from gateway.config.settings import Settings
from gateway.config.validators import Invalid
from gateway.errors import ConfigError

__all__ = ["add_config_argument", "checked_overrides", "configure_logging", "load_from_args", "set_log_level"]

SERVE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_FORMAT = "%(levelname)s: %(message)s"


class _LowerLevelFormatter(logging.Formatter):
    """``warning: ...`` rather than ``WARNING: ...`` for short-lived commands."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def configure_logging(level: str, *, plain: bool = False) -> None:
    """One stderr handler on the root logger (replacing any earlier one of ours)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_iii_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._iii_gateway = True  # type: ignore[attr-defined]
    handler.setFormatter(_LowerLevelFormatter(PLAIN_FORMAT) if plain else logging.Formatter(SERVE_FORMAT))
    root.addHandler(handler)
    set_log_level(level)


def set_log_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def checked_overrides(flags: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """``{settings.path: (flag, value)}`` -> overrides, each checked so errors name the flag."""
    out: dict[str, Any] = {}
    for key, (flag, value) in flags.items():
        try:
            OVERRIDE_KEYS[key](value)
        except Invalid as exc:
            raise ConfigError(str(exc), file="command line", key=flag) from None
        out[key] = value
    return out


def load_from_args(config: str | None, flags: Mapping[str, tuple[str, Any]]) -> Settings:
    return load_settings(config, os.environ, checked_overrides(flags))


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (YAML, either the modules: or the workers: shape); default: built-in defaults",
    )
