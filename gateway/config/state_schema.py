"""The state module's ``config:`` block and its three adapters, in either spelling.

The block is the same under ``modules: - class: modules::state::StateModule`` (the seed
documents) and ``workers: - name: iii-state`` (the current engine). The adapter is chosen by
``name: kv|redis|bridge`` or ``class: modules::state::adapters::KvStore|RedisAdapter|Bridge``.

Reference quirks kept: a top-level ``save_interval_ms`` overrides the kv adapter's;
``max_value_bytes: 0`` means no limit. Reference quirks not kept: an unknown ``store_method``
is an error (the reference warns and falls back to in_memory), and out-of-range numbers are
errors (the reference's boot path silently drops them). One deliberate divergence: a kv adapter
without ``store_method`` is ``file_based`` (the reference defaults to ``in_memory``), because a
gateway's store is meant to survive restarts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from gateway.config import validators as v
from gateway.config.document import Document, Path, Section, format_path
from gateway.config.settings import (
    AdapterName,
    AdapterSettings,
    BridgeCacheSettings,
    BridgeOutboxSettings,
    BridgeSettings,
    ClientTlsSettings,
    FsyncPolicy,
    KvSettings,
    RedisSettings,
    StateSettings,
    StoreMethod,
    UpstreamSettings,
)

__all__ = [
    "ADAPTER_CLASSES",
    "BRIDGE_KEYS",
    "KV_KEYS",
    "REDIS_KEYS",
    "SAVE_INTERVAL",
    "STATE_KEYS",
    "parse_state",
]

STATE_KEYS = (
    "adapter",
    "triggers_enabled",
    "max_value_bytes",
    "save_interval_ms",
    "trigger_queue_size",
    "trigger_timeout_ms",
    "trigger_concurrency",
)
ADAPTER_KEYS = ("name", "class", "config")
KV_KEYS = ("store_method", "file_path", "save_interval_ms", "fsync", "compact_after_bytes", "history_size")
REDIS_KEYS = (
    "redis_url",
    "connect_timeout_ms",
    "command_timeout_ms",
    "pool_size",
    "stream_max_len",
    "key_prefix",
)
BRIDGE_KEYS = ("identity", "upstreams", "timeout_ms", "relay_events", "cache", "outbox")
UPSTREAM_KEYS = ("name", "endpoints", "public_key", "scopes", "tls")
CLIENT_TLS_KEYS = ("ca", "cert", "key", "server_name")
CACHE_KEYS = ("enabled", "max_entries")
OUTBOX_KEYS = ("enabled", "path", "max_entries", "max_bytes")

ADAPTER_CLASSES: dict[str, AdapterName] = {
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
    "modules::state::adapters::Bridge": "bridge",
}
_ADAPTER_NAMES: dict[str, AdapterName] = {"kv": "kv", "redis": "redis", "bridge": "bridge"}

SAVE_INTERVAL = v.integer(100, 3_600_000)  # the reference schema's bounds
TIMEOUT_MS = v.integer(1, 3_600_000)
_STORE_METHODS: dict[str, StoreMethod] = {"in_memory": "in_memory", "file_based": "file_based"}
_FSYNC_POLICIES: dict[str, FsyncPolicy] = {"always": "always", "interval": "interval", "never": "never"}
_STORE_METHOD = v.choice(*_STORE_METHODS)
_FSYNC = v.choice(*_FSYNC_POLICIES)
_PATH = v.string()


def parse_state(
    doc: Document, path: Path, value: Any, *, data_dir: str, warnings: list[str]
) -> StateSettings:
    """The state module's ``config`` mapping (``value`` may be None: all defaults)."""
    sec = doc.section(path, value, STATE_KEYS, what="the state module's config mapping")
    adapter = _parse_adapter(sec, data_dir)
    interval = sec.optional("save_interval_ms", SAVE_INTERVAL)
    if interval is not None:
        if adapter.name == "kv":  # the reference folds it into the adapter config, overriding
            adapter = replace(adapter, kv=replace(adapter.kv, save_interval_ms=interval))
        else:
            warnings.append(
                f"{format_path(sec.at('save_interval_ms'))}: only the kv adapter uses it; "
                f"ignored with the {adapter.name} adapter"
            )
    max_value = sec.get("max_value_bytes", v.integer(0), 0)
    defaults = StateSettings()
    return StateSettings(
        adapter=adapter,
        triggers_enabled=sec.get("triggers_enabled", v.boolean, defaults.triggers_enabled),
        max_value_bytes=max_value or None,
        trigger_queue_size=sec.get(
            "trigger_queue_size", v.integer(1, 10_000_000), defaults.trigger_queue_size
        ),
        trigger_timeout_ms=sec.get("trigger_timeout_ms", TIMEOUT_MS, defaults.trigger_timeout_ms),
        trigger_concurrency=sec.get(
            "trigger_concurrency", v.integer(1, 100_000), defaults.trigger_concurrency
        ),
    )


def _parse_adapter(state: Section, data_dir: str) -> AdapterSettings:
    default_kv = KvSettings(file_path=os.path.join(data_dir, "state_store"))
    default_bridge = BridgeSettings(outbox=BridgeOutboxSettings(path=os.path.join(data_dir, "outbox")))
    if not state.has("adapter"):
        return AdapterSettings(kv=default_kv, bridge=default_bridge)
    sec = state.child("adapter", ADAPTER_KEYS, what="an adapter mapping ({name: kv|redis|bridge, config})")
    if sec.has("name") and sec.has("class"):
        raise sec.error("class", "give either 'name' or 'class', not both")
    name: AdapterName
    if sec.has("class"):
        cls = sec.require("class", v.string())
        if cls not in ADAPTER_CLASSES:
            raise sec.error("class", f"unknown adapter class; expected one of {', '.join(ADAPTER_CLASSES)}")
        name = ADAPTER_CLASSES[cls]
    elif sec.has("name"):
        raw = sec.require("name", v.string())
        if raw not in _ADAPTER_NAMES:
            raise sec.error("name", f"unknown adapter {raw!r}; expected one of kv, redis, bridge")
        name = _ADAPTER_NAMES[raw]
    else:
        raise sec.error(None, "the adapter needs 'name' (kv, redis, bridge) or 'class'")
    config_path = sec.at("config")
    config = sec.data.get("config")
    doc = sec.doc
    if name == "kv":
        return AdapterSettings(
            name="kv", kv=_parse_kv(doc, config_path, config, default_kv), bridge=default_bridge
        )
    if name == "redis":
        return AdapterSettings(name="redis", kv=default_kv, redis=_parse_redis(doc, config_path, config))
    return AdapterSettings(
        name="bridge", kv=default_kv, bridge=_parse_bridge(doc, config_path, config, default_bridge)
    )


def _parse_kv(doc: Document, path: Path, value: Any, default: KvSettings) -> KvSettings:
    sec = doc.section(path, value, KV_KEYS, what="the kv adapter's config mapping")
    return KvSettings(
        store_method=_STORE_METHODS[sec.get("store_method", _STORE_METHOD, str(default.store_method))],
        file_path=sec.get("file_path", _PATH, default.file_path),
        save_interval_ms=sec.get("save_interval_ms", SAVE_INTERVAL, default.save_interval_ms),
        fsync=_FSYNC_POLICIES[sec.get("fsync", _FSYNC, str(default.fsync))],
        compact_after_bytes=sec.get("compact_after_bytes", v.integer(4096), default.compact_after_bytes),
        history_size=sec.get("history_size", v.integer(0, 100_000_000), default.history_size),
    )


def _key_prefix(value: Any) -> str:
    prefix = v.string()(value)
    if prefix.startswith("state:"):
        raise v.Invalid("must not start with 'state:' (that prefix holds the scopes, reference layout)")
    return prefix


def _parse_redis(doc: Document, path: Path, value: Any) -> RedisSettings:
    sec = doc.section(path, value, REDIS_KEYS, what="the redis adapter's config mapping")
    d = RedisSettings()
    ms = v.integer(1, 600_000)
    return RedisSettings(
        redis_url=sec.get("redis_url", v.redis_url, d.redis_url),
        connect_timeout_ms=sec.get("connect_timeout_ms", ms, d.connect_timeout_ms),
        command_timeout_ms=sec.get("command_timeout_ms", ms, d.command_timeout_ms),
        pool_size=sec.get("pool_size", v.integer(1, 1024), d.pool_size),
        stream_max_len=sec.get("stream_max_len", v.integer(1000, 1_000_000_000), d.stream_max_len),
        key_prefix=sec.get("key_prefix", _key_prefix, d.key_prefix),
    )


def _parse_bridge(doc: Document, path: Path, value: Any, default: BridgeSettings) -> BridgeSettings:
    if isinstance(value, dict) and "bridge_url" in value:
        raise doc.error(
            (*path, "bridge_url"),
            "the reference engine's WebSocket bridge is not supported: iii-gateway's Bridge "
            "talks to upstream gateways over the federation link; configure 'identity' and "
            "'upstreams' (name, endpoints, public_key, scopes) instead",
        )
    sec = doc.section(path, value, BRIDGE_KEYS, what="the bridge adapter's config mapping")
    identity = sec.require("identity", _PATH, why=" (this gateway's private key file, from keygen)")
    entries = sec.items("upstreams", what="a list of upstreams")
    if not entries:
        raise sec.error("upstreams", "at least one upstream is required")
    upstreams: list[UpstreamSettings] = []
    names: dict[str, Path] = {}
    for item_path, item in entries:
        upstream = _parse_upstream(doc, item_path, item)
        if upstream.name in names:
            raise doc.error((*item_path, "name"), f"duplicate upstream name {upstream.name!r}")
        names[upstream.name] = item_path
        upstreams.append(upstream)
    relay_events = sec.get("relay_events", v.boolean, default.relay_events)
    cache_sec = sec.child("cache", CACHE_KEYS)
    cache_enabled = cache_sec.get("enabled", v.boolean, relay_events)
    if cache_enabled and not relay_events:
        raise cache_sec.error(
            "enabled", "the read cache is kept coherent by relayed events; it needs relay_events: true"
        )
    cache = BridgeCacheSettings(
        enabled=cache_enabled,
        max_entries=cache_sec.get("max_entries", v.integer(1, 100_000_000), default.cache.max_entries),
    )
    out_sec = sec.child("outbox", OUTBOX_KEYS)
    d_out = default.outbox
    outbox = BridgeOutboxSettings(
        enabled=out_sec.get("enabled", v.boolean, d_out.enabled),
        path=out_sec.get("path", _PATH, d_out.path),
        max_entries=out_sec.get("max_entries", v.integer(1, 1_000_000_000), d_out.max_entries),
        max_bytes=out_sec.get("max_bytes", v.integer(4096), d_out.max_bytes),
    )
    return BridgeSettings(
        identity=identity,
        upstreams=tuple(upstreams),
        timeout_ms=sec.get("timeout_ms", v.integer(1, 600_000), default.timeout_ms),
        relay_events=relay_events,
        cache=cache,
        outbox=outbox,
    )


def _scope_pattern(value: Any) -> str:
    pattern = v.string()(value)
    if pattern != pattern.strip():
        raise v.Invalid(f"a scope pattern has no surrounding spaces, got {v.describe(value)}")
    return pattern


def _parse_upstream(doc: Document, path: Path, value: Any) -> UpstreamSettings:
    sec = doc.section(
        path, value, UPSTREAM_KEYS, what="an upstream mapping (name, endpoints, public_key, scopes)"
    )
    name = sec.require("name", v.identifier)
    endpoints = sec.values("endpoints", v.endpoint, nonempty=True)
    if endpoints is None:
        raise sec.error("endpoints", "required key is missing (e.g. [tcp://central:49135])")
    public_key = sec.require("public_key", v.string(), why=" (the upstream's public key, pinned)")
    scopes = sec.values("scopes", _scope_pattern, nonempty=True) or ["*"]
    tls: ClientTlsSettings | None = None
    if sec.has("tls"):
        tsec = sec.child("tls", CLIENT_TLS_KEYS)
        tls = ClientTlsSettings(
            ca=tsec.optional("ca", _PATH),
            cert=tsec.optional("cert", _PATH),
            key=tsec.optional("key", _PATH),
            server_name=tsec.optional("server_name", v.host),
        )
        if (tls.cert is None) != (tls.key is None):
            raise tsec.error(
                "cert" if tls.cert is None else "key", "cert and key go together (client certificate)"
            )
    if tls is not None and not any(e.scheme == "tls" for e in endpoints):
        raise sec.error("tls", "TLS options are set but no endpoint uses tls://")
    return UpstreamSettings(
        name=name, endpoints=tuple(endpoints), public_key=public_key, scopes=tuple(scopes), tls=tls
    )
