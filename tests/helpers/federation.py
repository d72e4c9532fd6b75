"""Helpers for federation tests: key files, peers files, in-process upstreams, Bridge settings.

``InProcessUpstream`` is a real upstream (a state adapter served by ``LinkService`` on a free
loopback port, built from the same ``link:`` settings a gateway uses), running in the test's
event loop. ``bridge_settings`` points a Bridge at one or more of them. Keys are written as
real 0600 key files, since the adapter and the listener load them from disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.kv.store import KvAdapter
from gateway.config.settings import (
    BridgeSettings,
    Endpoint,
    KvSettings,
    LinkSettings,
    ServerTlsSettings,
    UpstreamSettings,
)
from gateway.federation import LinkService, build_link_service
from gateway.link import Backoff, format_public_key, generate_private_key, save_private_key
from gateway.metrics import Metrics
from gateway.state.adapter import Change, StateAdapter

__all__ = [
    "ChangeLog",
    "InProcessUpstream",
    "KeyFile",
    "Peer",
    "TlsSet",
    "bridge_settings",
    "eventually",
    "fast_backoff",
    "make_tls",
    "write_key",
    "write_peers",
]


@dataclass(frozen=True)
class KeyFile:
    path: Path
    key: Ed25519PrivateKey

    @property
    def public(self) -> str:
        return format_public_key(self.key)


def write_key(directory: Path, name: str) -> KeyFile:
    """A fresh identity key saved (0600) as ``directory/name.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    path = directory / f"{name}.key"
    save_private_key(key, str(path))
    return KeyFile(path, key)


@dataclass(frozen=True)
class Peer:
    name: str
    key: KeyFile
    read: Sequence[str] = ("*",)
    write: Sequence[str] = ("*",)
    watch: Sequence[str] = ("*",)


def write_peers(path: Path, peers: Iterable[Peer]) -> Path:
    entries = [
        {
            "name": p.name,
            "public_key": p.key.public,
            "read": list(p.read),
            "write": list(p.write),
            "watch": list(p.watch),
        }
        for p in peers
    ]
    path.write_text(yaml.safe_dump({"peers": entries}))
    return path


def fast_backoff() -> Backoff:
    """Reconnect delays for tests: 50 ms doubling to 0.5 s."""
    return Backoff(initial=0.05, maximum=0.5)


@dataclass
class InProcessUpstream:
    """A store served over a real link in this event loop (``await start()`` / ``stop()``)."""

    directory: Path
    peers: list[Peer]
    adapter: StateAdapter | None = None
    name: str = "central"
    server_options: dict[str, Any] = field(default_factory=dict)
    history_size: int = 100_000
    key: KeyFile | None = None  # default: a fresh key; pass one to serve as the same identity
    tls: ServerTlsSettings | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.key is None:
            self.key = write_key(self.directory, self.name)
        self.peers_file = write_peers(self.directory / f"{self.name}-peers.yaml", self.peers)
        self.metrics = Metrics()
        if self.adapter is None:
            self.adapter = KvAdapter(KvSettings(store_method="in_memory"), engine_id=self.name)
        self.service: LinkService | None = None

    async def start(self, *, start_adapter: bool = True, port: int = 0) -> None:
        assert self.adapter is not None
        if start_adapter:
            await self.adapter.start()
        assert self.key is not None
        settings = LinkSettings(
            listen=f"127.0.0.1:{port}",
            identity=str(self.key.path),
            authorized_peers=str(self.peers_file),
            tls=self.tls,
        )
        self.service = build_link_service(
            settings,
            self.adapter,
            engine_id=self.name,
            metrics=self.metrics,
            history_size=self.history_size,
            **self.server_options,
        )
        await self.service.start()

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.port

    def endpoint(self) -> Endpoint:
        return Endpoint("tls" if self.tls else "tcp", "127.0.0.1", self.port)

    @property
    def public(self) -> str:
        assert self.key is not None
        return self.key.public

    async def stop(self, *, close_adapter: bool = True) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None
        if close_adapter and self.adapter is not None:
            await self.adapter.close()

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


def bridge_settings(
    identity: KeyFile,
    upstreams: Sequence[tuple[str, Sequence[Endpoint], str, Sequence[str]]],
    *,
    timeout_ms: int = 5000,
    relay_events: bool = True,
) -> BridgeSettings:
    """``upstreams``: (name, endpoints, pinned public key text, scope patterns) each."""
    return BridgeSettings(
        identity=str(identity.path),
        upstreams=tuple(
            UpstreamSettings(name=name, endpoints=tuple(eps), public_key=key, scopes=tuple(scopes))
            for name, eps, key, scopes in upstreams
        ),
        timeout_ms=timeout_ms,
        relay_events=relay_events,
    )


class ChangeLog:
    """A sink recording every change; ``await wait_for(lambda changes: ...)`` without sleeps."""

    def __init__(self) -> None:
        import asyncio

        self.changes: list[Change] = []
        self._event = asyncio.Event()

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        self._event.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[Change]:
        import asyncio

        async with asyncio.timeout(timeout):
            while not predicate(self.changes):
                self._event.clear()
                await self._event.wait()
        return self.changes

    async def wait_count(self, count: int, timeout: float = 10.0) -> list[Change]:
        return await self.wait_for(lambda changes: len(changes) >= count, timeout)


async def eventually(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``predicate()`` is true (checked every 10 ms), failing after ``timeout``."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass(frozen=True)
class TlsSet:
    """A throwaway CA with a server and a client certificate (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # another server certificate from the same CA (a man in the middle's)
    other_key: Path


def make_tls(directory: Path) -> TlsSet:
    """Certificates for 127.0.0.1/localhost signed by a fresh CA, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "link test CA")])

    def builder(subject: x509.Name, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_cert = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, usage: Any) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    paths: dict[str, Path] = {}
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("other", ExtendedKeyUsageOID.SERVER_AUTH),
    ):
        cert, key = leaf(name, usage)
        paths[f"{name}_cert"] = directory / f"{name}.pem"
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_cert"].write_bytes(cert)
        paths[f"{name}_key"].write_bytes(key)
        paths[f"{name}_key"].chmod(0o600)
    return TlsSet(ca=directory / "ca.pem", **paths)
