"""The composition root: the only place that turns Settings into running components.

``Gateway(settings)`` builds every component and wires them (adapter -> change sinks -> state
triggers -> function registry <- worker protocol); ``start()`` opens the store and the
listeners, ``stop()`` shuts down in the reverse order and flushes the store. ``run(settings)``
is what ``iii-gateway serve`` calls: it adds signal handling (SIGTERM/SIGINT = graceful stop).
No other module picks a concrete adapter or creates a task without an owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import signal
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.config.settings import AdapterSettings, Settings
from gateway.errors import ConfigError, GatewayError
from gateway.federation import LinkService, build_link_service
from gateway.functions import FunctionRegistry
from gateway.link.history import DEFAULT_HISTORY_SIZE
from gateway.metrics import Metrics
from gateway.state.adapter import StateAdapter
from gateway.state.module import StateModule
from gateway.state.triggers import StateTriggerType
from gateway.triggers.cron import CronTriggerType
from gateway.triggers.http import HttpTriggerType
from gateway.triggers.registry import TriggerRegistry
from gateway.web.worker_ws import WorkerHub

__all__ = ["Gateway", "make_adapter", "run"]

log = logging.getLogger(__name__)


def make_adapter(
    settings: AdapterSettings, *, engine_id: str, metrics: Metrics, data_dir: str | None = None
) -> StateAdapter:
    """Pick the storage backend named in the config (a Bridge keeps its relay position in
    ``data_dir``, so a restarted gateway's triggers resume where they stopped)."""
    if settings.name == "kv":
        from adapters.kv.store import KvAdapter

        return KvAdapter(settings.kv, engine_id=engine_id, metrics=metrics)
    if settings.name == "redis":
        from adapters.redis.adapter import RedisAdapter

        return RedisAdapter(settings.redis, engine_id=engine_id, metrics=metrics)
    if settings.name == "bridge":
        from adapters.bridge import BridgeAdapter

        return BridgeAdapter(settings.bridge, engine_id=engine_id, metrics=metrics, position_dir=data_dir)
    raise ConfigError(f"adapter '{settings.name}' is not available in this build", key="adapter.name")


class Gateway:
    """One gateway process: its store, functions, triggers and listeners."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        server = settings.server
        self.engine_id = settings.engine_id or _stored_engine_id(settings.data_dir, server.worker_port)
        self.metrics = Metrics(registry)
        self.functions = FunctionRegistry(
            metrics=self.metrics, default_timeout=server.invocation_timeout_ms / 1000
        )
        self.triggers = TriggerRegistry()

        st = settings.state
        self.adapter = make_adapter(
            st.adapter, engine_id=self.engine_id, metrics=self.metrics, data_dir=settings.data_dir
        )
        self.state_triggers = StateTriggerType(
            self.functions,
            metrics=self.metrics,
            enabled=st.triggers_enabled,
            queue_size=st.trigger_queue_size,
            timeout=st.trigger_timeout_ms / 1000,
            concurrency=st.trigger_concurrency,
        )
        self.adapter.subscribe(self.state_triggers)
        self.triggers.add_type(self.state_triggers)
        self.state = StateModule(self.adapter, max_value_bytes=st.max_value_bytes, metrics=self.metrics)
        self.state.register(self.functions)

        self.hub = WorkerHub(self.functions, self.triggers, server, self.metrics)
        self.http_triggers = HttpTriggerType(self.functions, self.metrics)
        self.triggers.add_type(self.http_triggers, "api")
        self.cron = CronTriggerType(self.functions, self.metrics)
        self.triggers.add_type(self.cron)

        live = self.metrics.live
        live.add(self.functions.statistics)
        live.add(self.triggers.statistics)
        live.add(self.state_triggers.statistics)
        live.add(self.hub.statistics)
        live.add(self.http_triggers.statistics)
        live.add(self.cron.statistics)
        adapter_stats = getattr(self.adapter, "statistics", None)
        if callable(adapter_stats):
            live.add(adapter_stats, labels={"adapter": st.adapter.name})

        # The federation listener (upstream role), when link.listen is set.
        self.link: LinkService | None = None
        self.link_port: int | None = None
        if settings.link.listen:
            history = st.adapter.kv.history_size if st.adapter.name == "kv" else DEFAULT_HISTORY_SIZE
            self.link = build_link_service(
                settings.link,
                self.adapter,
                engine_id=self.engine_id,
                metrics=self.metrics,
                history_size=max(1, history),
                state_dir=settings.data_dir,
            )
            live.add(self.link.statistics)

        self._runners: list[web.AppRunner] = []
        self.worker_port: int | None = None
        self.http_port: int | None = None
        self._started = False
        self._stopped = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then start listening. Raises GatewayError if anything fails."""
        await self.adapter.start()
        await self.cron.start()
        server = self.settings.server
        try:
            self.http_port = await self._serve(self._http_app(), server.host, server.http_port)
            self.worker_port = await self._serve(self._worker_app(), server.host, server.worker_port)
            if self.link is not None:
                await self.link.start()
                self.link_port = self.link.port
        except OSError as exc:
            await self.stop()
            raise GatewayError(f"cannot listen on {server.host}: {exc}", code="LISTEN_ERROR") from exc
        self._started = True
        log.info(
            "gateway %s ready: workers ws://%s:%s/ http://%s:%s/ adapter=%s",
            self.engine_id,
            server.host,
            self.worker_port,
            server.host,
            self.http_port,
            self.settings.state.adapter.name,
        )
        if self.link is not None:
            log.info("gateway %s: federation link on port %s", self.engine_id, self.link_port)

    async def stop(self) -> None:
        """Stop listeners, let in-flight trigger deliveries end, then flush and close the store."""
        self._started = False
        if self.link is not None:
            await self.link.stop()
        await self.hub.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.cron.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.state_triggers.drain()
        await self.state_triggers.close()
        await self.adapter.close()
        self._stopped.set()

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        addresses = runner.addresses
        return int(addresses[-1][1]) if addresses else port

    def reload_peers(self) -> bool:
        """Re-read the link's authorized-peers file (SIGHUP); False when it is invalid."""
        return self.link.reload_peers() if self.link is not None else False

    # -- HTTP port ----------------------------------------------------------------------------

    def _http_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_message_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.add_routes(self.http_triggers.routes())  # catch-all: after our own routes
        return app

    def _worker_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_message_bytes)
        app.add_routes(self.hub.routes())
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "engine_id": self.engine_id})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, Any] = {"started": self._started, "adapter": self.adapter.ready()}
        ok = all(checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _stored_engine_id(data_dir: str, worker_port: int) -> str:
    """The engine id generated on first start and kept in ``<data_dir>/engine_id``.

    It must be stable across restarts: events carry it as their origin, and a gateway on Redis
    resumes its event stream under it. When the data dir cannot be written (a read-only
    deployment), fall back to host and port, which are stable too unless the port is 0.
    """
    path = Path(data_dir) / "engine_id"
    try:
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    except OSError:
        pass
    host = re.sub(r"[^A-Za-z0-9_-]", "", socket.gethostname().split(".")[0])[:40] or "gateway"
    fresh = f"{host}-{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(fresh + "\n", encoding="utf-8")
        tmp.replace(path)
        return fresh
    except OSError:
        log.warning("cannot keep the engine id in %s; using host and port", path)
        return f"{host}-{worker_port}" if worker_port else fresh


async def _serve_until_signal(settings: Settings) -> int:
    gateway = Gateway(settings)
    try:
        await gateway.start()
    except GatewayError as exc:
        log.error("%s", exc.message)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_peers)
    await stop.wait()
    log.info("shutting down")
    await gateway.stop()
    log.info("stopped")
    return 0


def run(settings: Settings) -> int:
    """Run a gateway until SIGTERM or SIGINT; returns the process exit code."""
    try:
        import uvloop

        return uvloop.run(_serve_until_signal(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_serve_until_signal(settings))
