"""Settings back to a config file, and a one-line summary.

:func:`settings_to_config` writes the ``workers:`` shape with every value explicit, so the
output of ``serve --print-config`` is itself a valid config that loads to the same settings
(passwords in a Redis URL are masked unless asked otherwise, so the output is safe to paste
into a ticket).
"""

from __future__ import annotations

from typing import Any

import yaml

from gateway import __version__
from gateway.config.settings import AdapterSettings, BridgeSettings, Settings
from gateway.config.validators import mask_url_password

__all__ = ["dump_settings", "settings_to_config", "summarize"]


def settings_to_config(settings: Settings, *, mask_secrets: bool = True) -> dict[str, Any]:
    s = settings.server
    config: dict[str, Any] = {
        "gateway": {
            "engine_id": settings.engine_id,
            "host": s.host,
            "worker_port": s.worker_port,
            "http_port": s.http_port,
            "log_level": settings.log_level,
            "max_message_bytes": s.max_message_bytes,
            "invocation_timeout_ms": s.invocation_timeout_ms,
            "data_dir": settings.data_dir,
        }
    }
    link = settings.link
    if link.listen is not None:
        section: dict[str, Any] = {
            "listen": link.listen,
            "identity": link.identity,
            "authorized_peers": link.authorized_peers,
        }
        if link.tls is not None:
            section["tls"] = {"cert": link.tls.cert, "key": link.tls.key, "client_ca": link.tls.client_ca}
        config["link"] = section
    st = settings.state
    config["workers"] = [
        {
            "name": "iii-state",
            "config": {
                "adapter": _adapter(st.adapter, mask_secrets),
                "triggers_enabled": st.triggers_enabled,
                "max_value_bytes": st.max_value_bytes or 0,
                "trigger_queue_size": st.trigger_queue_size,
                "trigger_timeout_ms": st.trigger_timeout_ms,
                "trigger_concurrency": st.trigger_concurrency,
            },
        }
    ]
    return config


def _adapter(adapter: AdapterSettings, mask_secrets: bool) -> dict[str, Any]:
    if adapter.name == "kv":
        kv = adapter.kv
        config: dict[str, Any] = {
            "store_method": kv.store_method,
            "file_path": kv.file_path,
            "save_interval_ms": kv.save_interval_ms,
            "fsync": kv.fsync,
            "compact_after_bytes": kv.compact_after_bytes,
            "history_size": kv.history_size,
        }
    elif adapter.name == "redis":
        r = adapter.redis
        config = {
            "redis_url": mask_url_password(r.redis_url) if mask_secrets else r.redis_url,
            "connect_timeout_ms": r.connect_timeout_ms,
            "command_timeout_ms": r.command_timeout_ms,
            "pool_size": r.pool_size,
            "stream_max_len": r.stream_max_len,
            "key_prefix": r.key_prefix,
        }
    else:
        config = _bridge(adapter.bridge)
    return {"name": adapter.name, "config": config}


def _bridge(b: BridgeSettings) -> dict[str, Any]:
    upstreams = []
    for u in b.upstreams:
        entry: dict[str, Any] = {
            "name": u.name,
            "endpoints": [str(e) for e in u.endpoints],
            "public_key": u.public_key,
            "scopes": list(u.scopes),
        }
        if u.tls is not None:
            entry["tls"] = {
                "ca": u.tls.ca,
                "cert": u.tls.cert,
                "key": u.tls.key,
                "server_name": u.tls.server_name,
            }
        upstreams.append(entry)
    return {
        "identity": b.identity,
        "upstreams": upstreams,
        "timeout_ms": b.timeout_ms,
        "relay_events": b.relay_events,
        "cache": {"enabled": b.cache.enabled, "max_entries": b.cache.max_entries},
        "outbox": {
            "enabled": b.outbox.enabled,
            "path": b.outbox.path,
            "max_entries": b.outbox.max_entries,
            "max_bytes": b.outbox.max_bytes,
        },
    }


def dump_settings(settings: Settings, *, mask_secrets: bool = True) -> str:
    """YAML text of :func:`settings_to_config`, with a header saying where it came from."""
    header = f"# effective configuration, iii-gateway {__version__}, from {settings.source or 'defaults'}\n"
    body = yaml.safe_dump(
        settings_to_config(settings, mask_secrets=mask_secrets),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )
    return header + body


def summarize(settings: Settings) -> str:
    """One line for ``check-config`` and the start-up log."""
    a = settings.state.adapter
    if a.name == "kv":
        store = "kv in_memory"
        if a.kv.store_method == "file_based":
            store = f"kv file_based ({a.kv.file_path}, fsync {a.kv.fsync})"
    elif a.name == "redis":
        store = f"redis {mask_url_password(a.redis.redis_url)}"
    else:
        ups = ", ".join(f"{u.name} ({u.endpoints[0]})" for u in a.bridge.upstreams)
        store = f"bridge to {ups}"
    s = settings.server
    link = f"link on {settings.link.listen}" if settings.link.listen else "link off"
    return (
        f"state adapter {store}; workers on {s.host}:{s.worker_port}, http on {s.host}:{s.http_port}; {link}"
    )
