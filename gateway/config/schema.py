"""The config file's top level: both module-list shapes plus our own sections.

Accepted top-level keys:

* ``modules:`` (the seed documents; entries ``{class: modules::...::X, config}``) and
  ``workers:`` (the current engine; entries ``{name: iii-x, config, image?}``). Either list
  takes either entry spelling; both lists may appear together.
* ``port:``: the reference's worker WebSocket port (``port: ${III_PORT:49134}`` in its docs).
* ``gateway:`` and ``link:``: what the reference has no place for.

Each module entry is one of three kinds:

* *implemented*: the state module (its ``config`` is parsed strictly by
  :mod:`gateway.config.state_schema`), the REST API / ``iii-http`` module (``port`` and ``host``
  become our HTTP listener, ``default_timeout`` the invocation timeout) and
  ``iii-worker-manager`` (``port``, ``host``, ``max_message_size`` of the worker listener);
* *known but not implemented* (streams, queue, pubsub, otel, ...): accepted, their config is
  not read (so not validated and not env-expanded), and one warning lists them;
* anything else: an error naming the entry.

The same setting may be given in several places (``port``, ``iii-worker-manager.port``,
``gateway.worker_port``); different values are an error naming both keys, so a config never
silently means something other than what one of its lines says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import validators as v
from gateway.config.document import Document, Path, Section, format_path
from gateway.config.settings import (
    DEFAULT_DATA_DIR,
    LinkSettings,
    ServerSettings,
    ServerTlsSettings,
    Settings,
    StateSettings,
)
from gateway.config.state_schema import parse_state

__all__ = ["IGNORED_MODULES", "LOG_LEVELS", "build_settings", "check_engine_id"]

TOP_KEYS = ("modules", "workers", "port", "gateway", "link", "registration_namespace_grace_ms")
ENTRY_KEYS = ("class", "name", "config", "image")
GATEWAY_KEYS = (
    "engine_id",
    "host",
    "worker_port",
    "http_port",
    "log_level",
    "max_message_bytes",
    "invocation_timeout_ms",
    "data_dir",
)
LINK_KEYS = ("listen", "identity", "authorized_peers", "tls")
SERVER_TLS_KEYS = ("cert", "key", "client_ca")
HTTP_KEYS = ("port", "host", "default_timeout", "concurrency_request_limit", "cors")
WORKER_MANAGER_KEYS = ("port", "host", "max_message_size", "middleware_function_id", "rbac")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_LEVEL = v.choice(*LOG_LEVELS, aliases={"warn": "warning", "fatal": "critical"})
PORT = v.integer(0, 65535)
MAX_MESSAGE_BYTES = v.integer(1024, 1024 * 1024 * 1024)
INVOCATION_TIMEOUT_MS = v.integer(1, 3_600_000)

_STATE, _HTTP, _WORKER_MANAGER = "state", "http", "worker-manager"
_KINDS = {
    "modules::state::StateModule": _STATE,
    "iii-state": _STATE,
    "state": _STATE,
    "modules::api::RestApiModule": _HTTP,
    "iii-http": _HTTP,
    "http": _HTTP,
    "iii-worker-manager": _WORKER_MANAGER,
}
_NOT_HERE = "not implemented by iii-gateway"
IGNORED_MODULES: dict[str, str] = {
    "modules::stream::StreamModule": _NOT_HERE,
    "iii-stream": _NOT_HERE,
    "modules::queue::QueueModule": _NOT_HERE,
    "iii-queue": _NOT_HERE,
    "queue": _NOT_HERE,
    "modules::pubsub::PubSubModule": _NOT_HERE,
    "iii-pubsub": _NOT_HERE,
    "pubsub": _NOT_HERE,
    "modules::cron::CronModule": "cron triggers are built in; the module's config is not used",
    "iii-cron": "cron triggers are built in; the module's config is not used",
    "cron": "cron triggers are built in; the module's config is not used",
    "modules::observability::OtelModule": "not implemented; metrics are served at /metrics",
    "iii-observability": "not implemented; metrics are served at /metrics",
    "modules::http_functions::HttpFunctionsModule": _NOT_HERE,
    "modules::shell::ExecModule": _NOT_HERE,
    "iii-exec": _NOT_HERE,
    "modules::bridge_client::BridgeClientModule": "not implemented; use the state Bridge adapter",
    "iii-bridge": "not implemented; use the state Bridge adapter",
    "modules::telemetry::TelemetryModule": _NOT_HERE,
    "modules::kv_server::KvServer": _NOT_HERE,
    "configuration": "not implemented; configuration is read from this file at start",
    "iii-engine-functions": _NOT_HERE,
    "iii-sandbox": _NOT_HERE,
    "iii-worker-ops": _NOT_HERE,
}


@dataclass
class _Collected:
    """Settings gathered from the file, each with the key path that set it (for conflicts)."""

    doc: Document
    values: dict[str, tuple[Any, Path]] = field(default_factory=dict)

    def put(self, name: str, value: Any, path: Path) -> None:
        if name in self.values:
            old, old_path = self.values[name]
            if old != value:
                raise self.doc.error(
                    path,
                    f"conflicts with {format_path(old_path)} ({old!r} there, {value!r} here); "
                    "both set the same setting",
                )
            return
        self.values[name] = (value, path)

    def take(self, sec: Section, key: str, name: str, validator: v.Validator[Any]) -> None:
        value = sec.optional(key, validator)
        if value is not None:
            self.put(name, value, sec.at(key))

    def get(self, name: str, default: Any) -> Any:
        return self.values[name][0] if name in self.values else default


def build_settings(doc: Document, warnings: list[str]) -> Settings:
    """The :class:`Settings` a document describes; notes for the operator go to ``warnings``."""
    if doc.root is None:
        warnings.append(f"{doc.source}: the file is empty; using the defaults")
        return Settings(source=doc.source)
    if isinstance(doc.root, list):
        raise doc.error(
            (),
            "the top level must be a mapping (modules:, workers:, gateway:, link:); "
            "module entries such as '- class: modules::state::StateModule' go under 'modules:'",
        )
    top = doc.section((), doc.root, TOP_KEYS, what="a mapping at the top level (modules:, workers:, ...)")
    got = _Collected(doc)
    gw = top.child("gateway", GATEWAY_KEYS)
    data_dir = gw.get("data_dir", v.string(), DEFAULT_DATA_DIR)
    got.take(top, "port", "worker_port", PORT)
    if top.has("registration_namespace_grace_ms"):
        warnings.append("registration_namespace_grace_ms: not used by iii-gateway; ignored")

    state: StateSettings | None = None
    state_path: Path = ()
    ignored: list[str] = []
    for list_key in ("modules", "workers"):
        for path, item in top.items(list_key, what="a list of module entries"):
            entry = doc.section(path, item, ENTRY_KEYS, what="a module entry ({class: ..., config: ...})")
            kind, label = _entry_kind(entry)
            config_path, config = (*path, "config"), entry.data.get("config")
            if kind == _STATE:
                if state is not None:
                    raise doc.error(
                        path, f"the state module is configured twice (also at {format_path(state_path)})"
                    )
                state = parse_state(doc, config_path, config, data_dir=data_dir, warnings=warnings)
                state_path = path
            elif kind == _HTTP:
                _parse_http(doc.section(config_path, config, HTTP_KEYS), got, warnings)
            elif kind == _WORKER_MANAGER:
                _parse_worker_manager(doc.section(config_path, config, WORKER_MANAGER_KEYS), got)
            else:
                ignored.append(f"{format_path(path)} ({label}: {kind})")
    if ignored:
        warnings.append("ignoring module entries: " + "; ".join(ignored))

    # Our own section last, so a conflict message points at the reference-form key first.
    got.take(gw, "host", "host", v.host)
    got.take(gw, "worker_port", "worker_port", PORT)
    got.take(gw, "http_port", "http_port", PORT)
    got.take(gw, "max_message_bytes", "max_message_bytes", MAX_MESSAGE_BYTES)
    got.take(gw, "invocation_timeout_ms", "invocation_timeout_ms", INVOCATION_TIMEOUT_MS)
    d = ServerSettings()
    server = ServerSettings(
        host=got.get("host", d.host),
        worker_port=got.get("worker_port", d.worker_port),
        http_port=got.get("http_port", d.http_port),
        max_message_bytes=got.get("max_message_bytes", d.max_message_bytes),
        invocation_timeout_ms=got.get("invocation_timeout_ms", d.invocation_timeout_ms),
    )
    if state is None:
        state = parse_state(doc, (), None, data_dir=data_dir, warnings=warnings)
    return Settings(
        engine_id=gw.get("engine_id", check_engine_id, ""),
        server=server,
        state=state,
        link=_parse_link(top),
        log_level=gw.get("log_level", LOG_LEVEL, "info"),
        data_dir=data_dir,
        source=doc.source,
    )


def check_engine_id(value: Any) -> str:
    """Empty (generate one) or an identifier: it travels in every event's ``origin``."""
    if value == "":
        return ""
    return v.identifier(value)


def _entry_kind(entry: Section) -> tuple[str, str]:
    """(kind, label) of a module entry: _STATE/_HTTP/_WORKER_MANAGER or an ignore reason."""
    if entry.has("class") and entry.has("name"):
        raise entry.error("class", "give either 'class' (modules: form) or 'name' (workers: form), not both")
    key = "class" if entry.has("class") else "name"
    if not entry.has(key):
        raise entry.error(None, "a module entry needs 'class' (e.g. modules::state::StateModule) or 'name'")
    label = entry.require(key, v.string())
    lookup = label.split("#", 1)[0] if key == "name" else label  # "iii-http#1": an instance
    kind = _KINDS.get(lookup)
    if entry.has("image"):
        if kind is not None:
            raise entry.error("image", f"{label} is built into iii-gateway and cannot have an image")
        entry.require("image", v.string())
        return "an external worker image; iii-gateway does not start workers", label
    if kind is not None:
        return kind, label
    if lookup in IGNORED_MODULES:
        return IGNORED_MODULES[lookup], label
    known = ", ".join(sorted(k for k in _KINDS if ("::" in k) == (key == "class")))
    raise entry.error(key, f"unknown module {label!r}; iii-gateway implements: {known}")


def _parse_http(sec: Section, got: _Collected, warnings: list[str]) -> None:
    got.take(sec, "port", "http_port", PORT)
    got.take(sec, "host", "host", v.host)
    got.take(sec, "default_timeout", "invocation_timeout_ms", INVOCATION_TIMEOUT_MS)
    for key in ("concurrency_request_limit", "cors"):
        if sec.has(key):
            warnings.append(f"{format_path(sec.at(key))}: not implemented by iii-gateway; ignored")


def _parse_worker_manager(sec: Section, got: _Collected) -> None:
    for key in ("middleware_function_id", "rbac"):
        if sec.has(key):
            raise sec.error(
                key,
                "worker middleware and RBAC are not implemented by iii-gateway; remove the key "
                "(refusing to start without a protection the config asks for)",
            )
    got.take(sec, "port", "worker_port", PORT)
    got.take(sec, "host", "host", v.host)
    got.take(sec, "max_message_size", "max_message_bytes", MAX_MESSAGE_BYTES)


def _parse_link(top: Section) -> LinkSettings:
    if not top.has("link"):
        return LinkSettings()
    sec = top.child("link", LINK_KEYS)
    listen = sec.require("listen", v.hostport, why=" (e.g. 0.0.0.0:49135)")
    identity = sec.require("identity", v.string(), why=" (this gateway's private key file, from keygen)")
    peers = sec.require("authorized_peers", v.string(), why=" (the file of peer keys and their scopes)")
    options: dict[str, Any] = {"identity": identity, "authorized_peers": peers}
    tls: ServerTlsSettings | None = None
    if sec.has("tls"):
        tsec = sec.child("tls", SERVER_TLS_KEYS)
        tls = ServerTlsSettings(
            cert=tsec.require("cert", v.string(), why=" (the server certificate chain, PEM)"),
            key=tsec.require("key", v.string(), why=" (the server private key, PEM)"),
            client_ca=tsec.optional("client_ca", v.string()),
        )
        options["tls"] = {"cert": tls.cert, "key": tls.key, "client_ca": tls.client_ca}
    return LinkSettings(listen=listen, options=options, identity=identity, authorized_peers=peers, tls=tls)
