"""JSON encoding as the reference engine does it: compact, object keys sorted bytewise.

The reference (serde_json without ``preserve_order``) returns objects with sorted keys and
measures ``max_value_bytes`` on the compact encoding; both rules live here so every component
agrees. Sorting ``str`` by code point equals sorting their UTF-8 bytes.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "json_size", "loads"]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text with sorted keys (raises ValueError on NaN/inf, TypeError on non-JSON)."""
    return _encoder.encode(value)


def json_size(value: Any) -> int:
    """Byte length of the compact UTF-8 JSON encoding of ``value``."""
    return len(dumps(value).encode("utf-8"))


def loads(text: str | bytes) -> Any:
    """Parse JSON text; raises ValueError on malformed input."""
    return json.loads(text)
