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
    "DEFAULT_HTTP_PORT",
    "DEFAULT_LINK_PORT",
    "DEFAULT_WORKER_PORT",
    "AdapterSettings",
    "BridgeSettings",
    "KvSettings",
    "LinkSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "StateSettings",
]

DEFAULT_WORKER_PORT = 49134
DEFAULT_HTTP_PORT = 3111
DEFAULT_LINK_PORT = 49135

StoreMethod = Literal["in_memory", "file_based"]
FsyncPolicy = Literal["always", "interval", "never"]
AdapterName = Literal["kv", "redis", "bridge"]


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
    """The Redis backend (filled in by the Redis adapter's issue)."""

    redis_url: str = "redis://localhost:6379"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """The Bridge backend (forwarding to upstream gateways); raw options until the link lands."""

    options: dict[str, Any] = field(default_factory=dict)


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
class LinkSettings:
    """The federation listener (``link.listen``); off unless configured."""

    listen: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    engine_id: str = ""  # empty: generated at start and kept in the data dir when there is one
    server: ServerSettings = field(default_factory=ServerSettings)
    state: StateSettings = field(default_factory=StateSettings)
    link: LinkSettings = field(default_factory=LinkSettings)
    log_level: str = "info"
    source: str | None = None  # the config file this came from, for messages
