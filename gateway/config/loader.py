"""Config file + environment + command-line overrides -> one frozen :class:`Settings`.

Precedence, lowest first: built-in defaults, the config file (with ``${VAR}`` expanded from
``env``), then ``overrides`` (the CLI flags). After overrides the whole tree is checked once
more for rules that span sections (ports distinct, a link listener has its keys), because a
flag can break a rule the file alone kept.

``env`` is always passed in: only the CLI reads ``os.environ``, so tests and embedders control
the environment without patching globals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any

from gateway.config import validators as v
from gateway.config.document import Document
from gateway.config.schema import (
    INVOCATION_TIMEOUT_MS,
    LOG_LEVEL,
    MAX_MESSAGE_BYTES,
    PORT,
    build_settings,
    check_engine_id,
)
from gateway.config.settings import Settings
from gateway.config.state_schema import SAVE_INTERVAL
from gateway.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "OVERRIDE_KEYS", "apply_overrides", "load_settings", "parse_settings"]

log = logging.getLogger("gateway.config")

MAX_CONFIG_BYTES = 4 * 1024 * 1024
OVERRIDES_SOURCE = "command line"


def _max_value_bytes(value: Any) -> int | None:
    return v.integer(0)(value) or None


# Settings attribute path -> check. The CLI maps its flags onto these.
OVERRIDE_KEYS: dict[str, Callable[[Any], Any]] = {
    "engine_id": check_engine_id,
    "log_level": LOG_LEVEL,
    "data_dir": v.string(),
    "server.host": v.host,
    "server.worker_port": PORT,
    "server.http_port": PORT,
    "server.max_message_bytes": MAX_MESSAGE_BYTES,
    "server.invocation_timeout_ms": INVOCATION_TIMEOUT_MS,
    "link.listen": v.hostport,
    "state.adapter.name": v.choice("kv", "redis", "bridge"),
    "state.adapter.kv.store_method": v.choice("in_memory", "file_based"),
    "state.adapter.kv.file_path": v.string(),
    "state.adapter.kv.fsync": v.choice("always", "interval", "never"),
    "state.adapter.kv.save_interval_ms": SAVE_INTERVAL,
    "state.adapter.redis.redis_url": v.redis_url,
    "state.triggers_enabled": v.boolean,
    "state.max_value_bytes": _max_value_bytes,
}


def parse_settings(
    text: str,
    *,
    source: str,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from config text. Raises only :class:`ConfigError` (names file, line and key).

    Notes for the operator (ignored modules, an empty file) are logged as warnings on the
    ``gateway.config`` logger.
    """
    doc = Document.parse(text, source=source, env=env)
    warnings: list[str] = []
    settings = build_settings(doc, warnings)
    for note in warnings:
        log.warning("%s: %s", source, note)
    return _finish(settings, overrides)


def load_settings(
    path: str | None, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from the file at ``path``; no path: the defaults (embedded file_based store in
    ``./data/state_store``, ports 49134 and 3111, no link listener)."""
    if path is None:
        return _finish(Settings(), overrides)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror or exc}", file=path) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config file is larger than {MAX_CONFIG_BYTES} bytes", file=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte offset {exc.start})", file=path) from None
    return parse_settings(text, source=path, env=env, overrides=overrides)


def apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with each ``{attribute.path: value}`` applied, checked like the file's keys.

    ``data_dir`` is applied first and moves the kv store and the bridge outbox into the new
    directory (an explicit ``state.adapter.kv.file_path`` override still wins).
    """
    ordered = sorted(overrides.items(), key=lambda kv: kv[0] != "data_dir")
    for key, raw in ordered:
        check = OVERRIDE_KEYS.get(key)
        if check is None:
            raise ConfigError(
                f"unknown setting; expected one of {', '.join(OVERRIDE_KEYS)}", file=OVERRIDES_SOURCE, key=key
            )
        try:
            value = check(raw)
        except v.Invalid as exc:
            raise ConfigError(str(exc), file=OVERRIDES_SOURCE, key=key) from None
        settings = _replace_path(settings, key.split("."), value)
        if key == "data_dir":
            adapter = settings.state.adapter
            adapter = replace(
                adapter,
                kv=replace(adapter.kv, file_path=os.path.join(value, "state_store")),
                bridge=replace(
                    adapter.bridge, outbox=replace(adapter.bridge.outbox, path=os.path.join(value, "outbox"))
                ),
            )
            settings = replace(settings, state=replace(settings.state, adapter=adapter))
    return settings


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    assert is_dataclass(obj) and not isinstance(obj, type)
    name = parts[0]
    assert name in {f.name for f in fields(obj)}, name
    if len(parts) == 1:
        return replace(obj, **{name: value})
    return replace(obj, **{name: _replace_path(getattr(obj, name), parts[1:], value)})


def _finish(settings: Settings, overrides: Mapping[str, Any] | None) -> Settings:
    if overrides:
        settings = apply_overrides(settings, overrides)
    check_consistency(settings)
    return settings


def check_consistency(settings: Settings) -> None:
    """Rules across sections, checked after overrides. Keys are named as in the file."""
    where = settings.source or OVERRIDES_SOURCE
    link = settings.link
    if link.listen is not None:
        for key, value in (("identity", link.identity), ("authorized_peers", link.authorized_peers)):
            if value is None:
                raise ConfigError(
                    "required when the link listener is on (link.listen); add it to the link: section",
                    file=where,
                    key=f"link.{key}",
                )
    ports: dict[int, str] = {}
    named = [
        ("gateway.worker_port", settings.server.worker_port),
        ("gateway.http_port", settings.server.http_port),
    ]
    if link.listen is not None:
        named.append(("link.listen", int(link.listen.rsplit(":", 1)[1])))
    for key, port in named:
        if port != 0 and port in ports:
            raise ConfigError(f"port {port} is also used by {ports[port]}", file=where, key=key)
        ports[port] = key
    adapter = settings.state.adapter
    if adapter.name == "bridge" and (adapter.bridge.identity is None or not adapter.bridge.upstreams):
        raise ConfigError(
            "the bridge adapter needs its config (identity, upstreams) in the config file",
            file=where,
            key="state.adapter.bridge",
        )
