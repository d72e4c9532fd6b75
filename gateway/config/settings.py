"""The frozen settings tree every component is built from.

``gateway.config.loader`` turns a YAML file (either of the two accepted shapes), environment
variables and command-line flags into one :class:`Settings`; the composition root
(``gateway.app``) hands each component only its own part. Defaults here are the defaults of a
gateway started with no config file at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_LINK_PORT",
    "DEFAULT_WORKER_PORT",
    "AdapterSettings",
    "BridgeCacheSettings",
    "BridgeOutboxSettings",
    "BridgeSettings",
    "ClientTlsSettings",
    "Endpoint",
    "KvSettings",
    "LinkSettings",
    "RedisSettings",
    "ServerSettings",
    "ServerTlsSettings",
    "Settings",
    "StateSettings",
    "UpstreamSettings",
]

DEFAULT_WORKER_PORT = 49134
DEFAULT_HTTP_PORT = 3111
DEFAULT_LINK_PORT = 49135
DEFAULT_DATA_DIR = "./data"

StoreMethod = Literal["in_memory", "file_based"]
FsyncPolicy = Literal["always", "interval", "never"]
AdapterName = Literal["kv", "redis", "bridge"]
EndpointScheme = Literal["tcp", "tls"]


@dataclass(frozen=True, slots=True)
class KvSettings:
    """The embedded store. ``file_based`` is an append-only log plus snapshots in ``file_path``."""

    store_method: StoreMethod = "file_based"
    file_path: str = "./data/state_store"
    save_interval_ms: int = 5000  # fsync interval for fsync=interval (reference name kept)
    fsync: FsyncPolicy = "interval"
    # Compact (write a snapshot, drop older log segments) once the log holds this many bytes
    # more than the last snapshot.
    compact_after_bytes: int = 64 * 1024 * 1024
    # How many recent changes are kept in memory for watchers resuming from a revision.
    history_size: int = 100_000


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """The Redis backend. Scopes live in the reference layout (hash ``state:<scope>``); everything
    the gateway adds (revision counter, event stream, epoch) lives under ``key_prefix`` so a
    ``SCAN state:*`` by a reference engine sharing the Redis sees only scopes."""

    redis_url: str = "redis://localhost:6379"
    connect_timeout_ms: int = 5000  # the reference's 5 s connect timeout
    command_timeout_ms: int = 5000  # per command; a slower answer is AdapterTimeout
    pool_size: int = 16  # connections in the client pool (the reference serializes on one)
    stream_max_len: int = 100_000  # approximate MAXLEN of the event stream (resume window)
    key_prefix: str = "iii-gateway:"  # bookkeeping keys; never starts with "state:"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream address (``tcp://host:port`` or ``tls://host:port``), parsed at load time."""

    scheme: EndpointScheme
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClientTlsSettings:
    """TLS options for ``tls://`` endpoints: trust anchor, optional client certificate (mTLS)."""

    ca: str | None = None  # CA bundle to verify the upstream; None: the system store
    cert: str | None = None  # client certificate chain, for upstreams that require mTLS
    key: str | None = None
    server_name: str | None = None  # SNI / hostname to verify, when it differs from the host


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """One upstream gateway: endpoints tried in failover order, its pinned key, its scopes."""

    name: str
    endpoints: tuple[Endpoint, ...]
    public_key: str
    scopes: tuple[str, ...] = ("*",)  # first upstream whose pattern matches a scope owns it
    tls: ClientTlsSettings | None = None


@dataclass(frozen=True, slots=True)
class BridgeCacheSettings:
    """The coherent read cache, fed by relayed events (needs ``relay_events``)."""

    enabled: bool = True
    max_entries: int = 100_000


@dataclass(frozen=True, slots=True)
class BridgeOutboxSettings:
    """The durable queue of writes made while the upstream is unreachable."""

    enabled: bool = False
    path: str = DEFAULT_DATA_DIR + "/outbox"
    max_entries: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """The Bridge backend: forward state to upstream gateways over the federation link."""

    identity: str | None = None  # this gateway's private key file (required to use the bridge)
    upstreams: tuple[UpstreamSettings, ...] = ()
    timeout_ms: int = 5000
    relay_events: bool = True
    cache: BridgeCacheSettings = field(default_factory=BridgeCacheSettings)
    outbox: BridgeOutboxSettings = field(default_factory=BridgeOutboxSettings)


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    name: AdapterName = "kv"
    kv: KvSettings = field(default_factory=KvSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)


@dataclass(frozen=True, slots=True)
class StateSettings:
    """The state module's knobs (reference names kept where the reference has them)."""

    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    triggers_enabled: bool = True
    max_value_bytes: int | None = None  # None: no limit
    # Trigger delivery: per-trigger bounded queue, per-call timeout, concurrency across keys.
    trigger_queue_size: int = 10_000
    trigger_timeout_ms: int = 30_000
    trigger_concurrency: int = 64


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Listen addresses. Port 0 picks a free port (tests); the bound port is logged."""

    host: str = "127.0.0.1"
    worker_port: int = DEFAULT_WORKER_PORT
    http_port: int = DEFAULT_HTTP_PORT
    max_message_bytes: int = 64 * 1024 * 1024
    invocation_timeout_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class ServerTlsSettings:
    """TLS for the link listener; ``client_ca`` turns on mutual TLS (client certificates)."""

    cert: str
    key: str
    client_ca: str | None = None


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The federation listener (``link.listen``); off unless configured.

    ``options`` holds the validated ``link:`` keys other than ``listen`` as plain data
    (``identity``, ``authorized_peers``, ``tls``) for code that wants the raw mapping; the
    typed fields carry the same values.
    """

    listen: str | None = None  # "host:port" (IPv6 host in brackets); port 0 picks a free port
    options: dict[str, Any] = field(default_factory=dict)
    identity: str | None = None  # this gateway's private key file
    authorized_peers: str | None = None  # the file of peer keys and their scope permissions
    tls: ServerTlsSettings | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    engine_id: str = ""  # empty: generated at start and kept in the data dir when there is one
    server: ServerSettings = field(default_factory=ServerSettings)
    state: StateSettings = field(default_factory=StateSettings)
    link: LinkSettings = field(default_factory=LinkSettings)
    log_level: str = "info"
    # Where the gateway keeps what it persists: the kv store (<data_dir>/state_store) and the
    # bridge outbox (<data_dir>/outbox) unless their paths are set, and the generated engine id.
    data_dir: str = DEFAULT_DATA_DIR
    source: str | None = None  # the config file this came from, for messages
