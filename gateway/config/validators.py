"""Value checks shared by the YAML schema and the command-line overrides.

Each validator takes a plain value (already env-expanded) and returns the typed value or raises
:class:`Invalid` with a message that says what was expected and what was found. Callers add the
where (file, line, key path), so one validator serves both a YAML key and a CLI flag.

Values are never coerced across types: ``"5000"`` is not an integer, ``1`` is not a boolean and
``5000.0`` is not an integer. YAML already gives numbers and booleans their types, and a quoted
number in a config is more often a mistake than an intent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway.config.settings import Endpoint

__all__ = [
    "Invalid",
    "Validator",
    "boolean",
    "choice",
    "describe",
    "endpoint",
    "host",
    "hostport",
    "identifier",
    "integer",
    "mask_url_password",
    "redis_url",
    "string",
]

T = TypeVar("T")
Validator = Callable[[Any], T]

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[^\s/\[\]@]+")


class Invalid(Exception):
    """A value failed its check; ``str()`` is the user-facing reason."""


def describe(value: Any) -> str:
    """A short, bounded description of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}" if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a value of type {type(value).__name__}"


def integer(lo: int, hi: int | None = None) -> Validator[int]:
    """An integer in ``lo..hi`` (inclusive; no upper bound when ``hi`` is None)."""
    expected = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (remove the quotes)" if isinstance(value, str) and value.strip().isdigit() else ""
            raise Invalid(f"expected {expected}, got {describe(value)}{hint}")
        if value < lo or (hi is not None and value > hi):
            raise Invalid(f"expected {expected}, got {describe(value)}")
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def string(*, allow_empty: bool = False) -> Validator[str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {describe(value)}")
        if not allow_empty and not value.strip():
            raise Invalid("expected a non-empty string")
        return value

    return check


def choice(*options: str, aliases: dict[str, str] | None = None) -> Validator[str]:
    """One of ``options`` (case-insensitive); ``aliases`` maps extra spellings to an option."""
    table = {o.lower(): o for o in options}
    table.update({k.lower(): v for k, v in (aliases or {}).items()})

    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in table:
            return table[value.lower()]
        raise Invalid(f"expected one of {', '.join(options)}; got {describe(value)}")

    return check


def identifier(value: Any) -> str:
    """A name used in metric labels and on the wire: 1-64 of ``[A-Za-z0-9._-]``."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise Invalid(
            "expected 1-64 characters of letters, digits, '.', '_' or '-' (starting with a letter "
            f"or digit), got {describe(value)}"
        )
    return value


def _split_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; raises Invalid."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise Invalid(f"expected '[ipv6]:port', got {describe(text)}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise Invalid(f"expected 'host:port' (IPv6 hosts in brackets), got {describe(text)}")
    if not host or not _HOST.fullmatch(host):
        raise Invalid(f"expected 'host:port' with a host name or address, got {describe(text)}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise Invalid(f"expected a port in 0..65535 after ':', got {describe(text)}")
    return host, int(port_text)


def hostport(value: Any) -> str:
    """A listen address ``host:port`` (port 0: any free port), returned normalized."""
    if not isinstance(value, str):
        raise Invalid(f"expected 'host:port' as a string, got {describe(value)}")
    host, port = _split_hostport(value.strip())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host(value: Any) -> str:
    """A bind address or host name, without a port (IPv6 addresses bare: ``::``, ``::1``)."""
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise Invalid(f"expected a host name or address, got {describe(value)}")
    if value.count(":") == 1:
        raise Invalid(f"expected a host without a port (ports are set separately), got {describe(value)}")
    return value


def endpoint(value: Any) -> Endpoint:
    """An upstream address, ``tcp://host:port`` or ``tls://host:port``."""
    if not isinstance(value, str):
        raise Invalid(f"expected 'tcp://host:port' or 'tls://host:port', got {describe(value)}")
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme not in ("tcp", "tls"):
        raise Invalid(f"expected 'tcp://host:port' or 'tls://host:port', got {describe(value)}")
    host_, port = _split_hostport(rest)
    if port == 0:
        raise Invalid(f"an upstream port must be in 1..65535, got {describe(value)}")
    return Endpoint("tcp" if scheme == "tcp" else "tls", host_, port)


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def redis_url(value: Any) -> str:
    """A ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` (``rediss+sentinel://``)
    URL. Only the shape is checked here; the Redis adapter parses the options at start. Never
    echoes the value: it may hold a password."""
    schemes = ", ".join(s + "://" for s in _REDIS_SCHEMES)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a URL with one of the schemes {schemes}")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in _REDIS_SCHEMES:
        raise Invalid(f"expected a URL with one of the schemes {schemes} (the value is not shown)")
    netloc, _, path = rest.partition("/")
    if scheme.lower() == "unix":
        if not path:
            raise Invalid("a unix:// URL needs a socket path")
        return value
    hosts = netloc.rpartition("@")[2]
    if scheme.lower().endswith("+sentinel"):
        if not hosts or not path.split("/")[0]:
            raise Invalid("a sentinel URL needs host:port[,host:port...] and /service_name")
        return value
    try:
        _ = urlsplit(value).port  # raises ValueError on a bad port
    except ValueError:
        raise Invalid("not a valid URL (the value is not shown: it may contain a password)") from None
    return value


def mask_url_password(url: str) -> str:
    """The URL with any password replaced by ``****`` (for summaries and printed configs)."""
    return _URL_PASSWORD.sub(r"\1****@", url)
