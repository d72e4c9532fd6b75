"""Gateway processes for federation end-to-end tests: ``python -m gateway serve -c <file>``.

``FedGateway`` writes a real config file (the ``workers:`` shape, with a ``link:`` section when
it serves downstreams and a ``bridge`` adapter when it has upstreams), starts the gateway as a
subprocess on fixed free ports (so it can be killed and restarted on the same ports and data),
and scrapes its real ``/metrics`` endpoint. Readiness is awaited on ``/readyz`` (the adapter is
ready: a kv store is open, a Bridge has live links), never with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.federation import KeyFile, Peer, write_key, write_peers
from tests.integration.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0

__all__ = ["FedGateway", "bridge_adapter", "kv_adapter", "redis_adapter"]


def kv_adapter(directory: Path, fsync: str = "always") -> dict[str, Any]:
    return {
        "name": "kv",
        "config": {"store_method": "file_based", "file_path": str(directory / "state"), "fsync": fsync},
    }


def redis_adapter(url: str) -> dict[str, Any]:
    return {"name": "redis", "config": {"redis_url": url}}


def bridge_adapter(
    identity: KeyFile, upstreams: list[tuple[str, list[int], str]], **extra: Any
) -> dict[str, Any]:
    """``upstreams``: (name, link ports tried in order, pinned public key), all scopes."""
    return {
        "name": "bridge",
        "config": {
            "identity": str(identity.path),
            "upstreams": [
                {
                    "name": name,
                    "endpoints": [f"tcp://127.0.0.1:{port}" for port in ports],
                    "public_key": key,
                    "scopes": ["*"],
                }
                for name, ports, key in upstreams
            ],
            **extra,
        },
    }


class FedGateway:
    """One gateway subprocess with its own directory, key and (optionally) link listener."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        adapter: dict[str, Any] | None = None,
        peers: list[Peer] | None = None,
        key: KeyFile | None = None,
    ) -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self.key = key or write_key(directory, name)
        self.adapter = adapter or kv_adapter(directory)
        self.peers = peers
        self.worker_port = free_port()
        self.http_port = free_port()
        self.link_port = free_port() if peers is not None else None
        self.peers_file = directory / "peers.yaml"
        self.config_path = directory / "gateway.yaml"
        self.log_path = directory / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    @property
    def public(self) -> str:
        return self.key.public

    @property
    def worker_url(self) -> str:
        return f"ws://127.0.0.1:{self.worker_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> None:
        config: dict[str, Any] = {
            "gateway": {
                "engine_id": self.name,
                "host": "127.0.0.1",
                "worker_port": self.worker_port,
                "http_port": self.http_port,
                "data_dir": str(self.directory / "data"),
                "log_level": "info",
            },
            "workers": [{"name": "iii-state", "config": {"adapter": self.adapter}}],
        }
        if self.peers is not None:
            write_peers(self.peers_file, self.peers)
            config["link"] = {
                "listen": f"127.0.0.1:{self.link_port}",
                "identity": str(self.key.path),
                "authorized_peers": str(self.peers_file),
            }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "-c", str(self.config_path)],
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``/readyz`` says ready (fails early if the process exits)."""
        try:
            async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
                while True:
                    if self.proc is not None and self.proc.poll() is not None:
                        raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{self.http_url}/readyz") as response:
                            if response.status == 200:
                                return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"{self.name} not ready: {self.log_tail()}") from None

    async def start_ready(self) -> None:
        self.start()
        await self.ready()

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    async def stop(self) -> int | None:
        """SIGTERM and wait (a graceful stop); the exit code."""
        self._signal(signal.SIGTERM)
        if self.proc is None:
            return None
        try:
            return await asyncio.to_thread(self.proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def hup(self) -> None:
        self._signal(signal.SIGHUP)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the matching samples on ``/metrics`` (0 when none)."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.http_url}/metrics") as response:
            text = await response.text()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total
