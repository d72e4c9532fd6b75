"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os
import sys

# The repository root on sys.path, so tests can import helper modules as ``tests.<pkg>.<mod>``.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
