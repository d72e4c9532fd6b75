"""``iii-gateway version``: the gateway and Python versions (for bug reports)."""

from __future__ import annotations

import argparse
import platform

from gateway import __version__

HELP = "print the version"


def configure(parser: argparse.ArgumentParser) -> None:
    """No flags."""


def run(args: argparse.Namespace) -> int:
    print(f"iii-gateway {__version__} (python {platform.python_version()})")
    return 0
