"""What the admin commands (``state``, ``export``, ``import``) share: reaching a gateway's link.

**Where to connect and as whom.** Three things are needed: the gateway's address
(``--gateway tcp://host:port`` or ``tls://``), this client's private key (``--identity``; its
public key must be in the gateway's authorized-peers file) and the gateway's pinned public key
(``--upstream-key ed25519:...``). Each comes from its flag when given, else from the Bridge
section of ``-c CONFIG`` (``identity``, and the first upstream's -- or ``--upstream NAME``'s --
``endpoints``, ``public_key`` and ``tls``), so an operator on an edge box can point the CLI at
the edge's own config and reach its upstream as the edge does. Flags win field by field.
With ``--gateway`` the one address is used; from the config, the upstream's endpoints are
tried in their failover order.

**Who we say we are.** ``--client-id`` (default ``cli@<hostname>``) is the id announced in the
handshake, which the gateway records as the ``origin`` of our writes. It is deliberately not
an engine id from the config: a Bridge skips relayed events whose origin is its own engine,
so borrowing it would hide our writes from that engine's triggers.

**Exit codes** (every admin command): 0 success; 1 the gateway refused or failed an operation
(``error: CODE: message``); 2 usage or configuration error (bad flags, bad JSON, unreadable
key or config, corrupt input file); 3 cannot connect or authenticate, or the link was lost
(the reason is printed: unreachable, unknown client key, wrong upstream key ...); 4 not found
(``state get`` of a missing key); 130 interrupted (where an interruption is not the normal
way to stop, unlike ``state watch``).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NoReturn

from gateway.config.settings import ClientTlsSettings, Endpoint
from gateway.config.validators import Invalid, endpoint
from gateway.errors import AuthError, ConfigError, GatewayError, LinkBroken
from gateway.jsonutil import dumps

if TYPE_CHECKING:  # the link stack is imported when a command runs, not to parse flags
    from tqdm import tqdm

    from gateway.link.client import LinkClient
    from gateway.link.requests import RequestArgs

__all__ = [
    "EXIT_CONNECT",
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliFailure",
    "Target",
    "add_link_arguments",
    "check_link_value",
    "fail",
    "open_link",
    "operation_failure",
    "parse_json_text",
    "print_json",
    "progress_bar",
    "read_text_argument",
    "report",
    "request",
    "resolve_target",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONNECT, EXIT_NOT_FOUND = 0, 1, 2, 3, 4

#: The integers msgpack (the link's encoding) can carry; the reference engine's serde_json
#: without arbitrary precision has the same range (i64 and u64).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

_AUTH_HINTS: Final = {
    "unknown_key": "the gateway does not know this client's key {key}; add it to the gateway's "
    "authorized-peers file",
    "bad_server_key": "the gateway's key is not the pinned upstream key (wrong --upstream-key, "
    "or not the gateway you meant)",
    "rate_limited": "the gateway refuses this address for a while after too many failed handshakes",
    "expired": "the handshake timestamp was refused: check that both clocks are right",
    "channel_binding": "the TLS certificate is not the one the gateway signed for (a TLS proxy in between?)",
}


class CliFailure(Exception):
    """Ends a command with ``exit_code`` after printing ``message`` (``error: ...``) on stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def fail(exit_code: int, message: str) -> NoReturn:
    raise CliFailure(exit_code, message)


def operation_failure(exc: GatewayError, what: str = "") -> CliFailure:
    """The failure for an error the gateway answered (link loss is a connection failure)."""
    if isinstance(exc, LinkBroken):
        return CliFailure(EXIT_CONNECT, f"{exc.code}: {exc.message}")
    prefix = f"{what}: " if what else ""
    return CliFailure(EXIT_FAILURE, f"{exc.code}: {prefix}{exc.message}")


# -- flags ------------------------------------------------------------------------------------


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags every admin command takes (see the module docstring)."""
    g = parser.add_argument_group("connection (flags win over -c CONFIG, field by field)")
    g.add_argument(
        "--gateway", metavar="URL", help="the gateway's link listener: tcp://host:port or tls://host:port"
    )
    g.add_argument(
        "--identity", metavar="KEYFILE", help="this client's private key (from iii-gateway keygen)"
    )
    g.add_argument("--upstream-key", metavar="KEY", help="the gateway's public key to pin (ed25519:...)")
    g.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="take the gateway, identity and key from this config's bridge section (first upstream)",
    )
    g.add_argument("--upstream", metavar="NAME", help="with -c: use this upstream instead of the first")
    g.add_argument(
        "--client-id", metavar="ID", help="the id announced to the gateway (default cli@<hostname>)"
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="connect and request timeout (default 10)",
    )
    g.add_argument(
        "--tls-ca", metavar="FILE", help="CA bundle to verify a tls:// gateway (default: system store)"
    )
    g.add_argument("--tls-cert", metavar="FILE", help="client certificate, for gateways that require mTLS")
    g.add_argument("--tls-key", metavar="FILE", help="the client certificate's key")
    g.add_argument("--tls-server-name", metavar="NAME", help="the name to verify, when it is not the host")


@dataclass
class Target:
    """Everything needed to open the link (resolved from flags and config)."""

    endpoints: tuple[Endpoint, ...]
    identity_file: str
    upstream_key: str
    client_id: str
    timeout: float
    tls: ClientTlsSettings | None = None
    label: str = field(default="")


def resolve_target(args: argparse.Namespace) -> Target:
    """Flags first, then ``-c CONFIG``'s bridge section; a missing piece is a usage error."""
    endpoints: tuple[Endpoint, ...] = ()
    identity: str | None = args.identity
    key: str | None = args.upstream_key
    tls: ClientTlsSettings | None = None
    if args.gateway is not None:
        try:
            endpoints = (endpoint(args.gateway),)
        except Invalid as exc:
            fail(EXIT_USAGE, f"--gateway: {exc}")
    if args.config is not None:
        from gateway.cli.common import load_from_args  # the config machinery, only when asked for

        bridge = load_from_args(args.config, {}).state.adapter.bridge
        ups = bridge.upstreams
        if args.upstream is not None:
            ups = tuple(u for u in ups if u.name == args.upstream)
            if not ups:
                fail(EXIT_USAGE, f"{args.config}: no bridge upstream named {args.upstream!r}")
        if ups:
            up = ups[0]
            endpoints = endpoints or up.endpoints
            key = key or up.public_key
            tls = up.tls
        identity = identity or bridge.identity
    elif args.upstream is not None:
        fail(EXIT_USAGE, "--upstream needs -c CONFIG")
    missing = [
        flag
        for flag, value in (("--gateway", endpoints), ("--identity", identity), ("--upstream-key", key))
        if not value
    ]
    if missing:
        where = f" (and {args.config} does not set it)" if args.config else " (or -c CONFIG)"
        fail(EXIT_USAGE, f"missing {', '.join(missing)}{where}")
    assert identity is not None and key is not None
    if any((args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)):
        base = tls or ClientTlsSettings()
        tls = ClientTlsSettings(
            ca=args.tls_ca or base.ca,
            cert=args.tls_cert or base.cert,
            key=args.tls_key or base.key,
            server_name=args.tls_server_name or base.server_name,
        )
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        fail(EXIT_USAGE, "--timeout must be a positive number of seconds")
    client_id = args.client_id or f"cli@{socket.gethostname()}"
    return Target(endpoints, identity, key, client_id, args.timeout, tls, str(endpoints[0]))


async def open_link(target: Target) -> LinkClient:
    """Connect and authenticate to the first endpoint that answers (exit 3 when none does)."""
    import ssl

    from gateway.link.auth import format_public_key, load_private_key, parse_public_key
    from gateway.link.client import client_tls_context, connect

    try:
        private_key = load_private_key(target.identity_file)
    except ConfigError as exc:
        fail(EXIT_USAGE, exc.message)
    try:
        server_key = parse_public_key(target.upstream_key)
    except ValueError as exc:
        fail(EXIT_USAGE, f"--upstream-key: {exc}")
    reasons: list[str] = []
    for ep in target.endpoints:
        tls_ctx: ssl.SSLContext | None = None
        server_name: str | None = None
        if ep.scheme == "tls":
            t = target.tls or ClientTlsSettings()
            try:
                tls_ctx = client_tls_context(t.ca, t.cert, t.key)
            except (OSError, ssl.SSLError) as exc:
                fail(EXIT_USAGE, f"cannot load the TLS files: {exc}")
            server_name = t.server_name or ep.host
        try:
            client = await connect(
                ep.host,
                ep.port,
                private_key=private_key,
                client_id=target.client_id,
                server_key=server_key,
                tls=tls_ctx,
                server_hostname=server_name,
                timeout=target.timeout,
            )
        except AuthError as exc:
            hint = _AUTH_HINTS.get(exc.reason, exc.message)
            reasons.append(
                f"{ep}: unauthorized ({exc.reason}): {hint.format(key=format_public_key(private_key))}"
            )
            continue
        except LinkBroken as exc:
            reasons.append(f"{ep}: {exc.message}")
            continue
        target.label = str(ep)
        return client
    fail(EXIT_CONNECT, "cannot connect: " + "; ".join(reasons))


async def request(client: LinkClient, args: RequestArgs, timeout: float, what: str = "") -> Any:
    """One request, bounded by ``timeout``; a refusal becomes the matching :class:`CliFailure`."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            return await client.request(args)
    except TimeoutError:
        fail(EXIT_FAILURE, f"TIMEOUT: the gateway did not answer {args.OP} within {timeout:g} s")
    except GatewayError as exc:
        raise operation_failure(exc, what) from None


# -- values -----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a JSON number (a 64-bit float)")
    return value


def check_link_value(value: Any, what: str) -> None:
    """Refuse integers the link cannot carry (msgpack: 64 bits), with the path to the first one."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if type(item) is int and not INT_MIN <= item <= INT_MAX:
            fail(EXIT_USAGE, f"{what}: the integer at {path or 'the top'} does not fit in 64 bits")
        if type(item) is dict:
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif type(item) is list:
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def parse_json_text(text: str, what: str) -> Any:
    """Strict JSON (no NaN/Infinity, no number out of range) or a usage failure naming ``what``."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        fail(EXIT_USAGE, f"{what}: not valid JSON: {exc}")
    check_link_value(value, what)
    return value


def read_text_argument(inline: str | None, file: str | None, what: str, flag: str) -> str:
    """The text of an inline argument, or of ``--x-file FILE`` (``-`` or an inline ``-``: stdin)."""
    if inline is not None and file is not None:
        fail(EXIT_USAGE, f"give the {what} inline or with {flag}, not both")
    source = file if file is not None else inline
    if source is None:
        fail(EXIT_USAGE, f"the {what} is missing (inline JSON, {flag} FILE, or - for stdin)")
    if source == "-":
        return sys.stdin.read()
    if file is None:
        return source
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(EXIT_USAGE, f"{flag} {file}: cannot read: {getattr(exc, 'strerror', None) or exc}")


def print_json(value: Any) -> None:
    """One compact JSON document (sorted keys, UTF-8) on its own line, flushed at once."""
    sys.stdout.write(dumps(value) + "\n")
    sys.stdout.flush()


def progress_bar(total: int | None, unit: str, desc: str, quiet: bool) -> tqdm[Any]:
    """A progress bar on stderr, shown only to a person: off with --quiet or when stderr is
    not a terminal (logs and pipes get the summary line instead)."""
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(
        total=total, unit=unit, desc=desc, file=sys.stderr, disable=disable, unit_scale=True, leave=False
    )


def report(failure: CliFailure) -> int:
    print(f"error: {failure.message}", file=sys.stderr)
    return failure.exit_code
