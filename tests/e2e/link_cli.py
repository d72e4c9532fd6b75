"""Helpers for the admin CLI tests: gateway processes with a link listener, CLI subprocesses.

``LinkGateway`` is :class:`~tests.integration.sdk_helpers.GatewayProcess` (``python -m gateway
serve`` on free ports, file-based store) with a config file that turns the link listener on,
its own identity key and an authorized-peers file (``tests.helpers.federation``). ``start``
returns once ``/readyz`` answers 200, which the app only does after the link listener is up
(probing the link port itself would count as a failed handshake there).

``cli(...)`` runs ``python -m gateway ARGS`` to completion; ``Lines`` reads a running
subprocess's output line by line with a timeout (a reader thread and a queue, no sleeps).
``link_client(...)`` is a real in-process link client, for seeding data fast and for reading
it back independently of the CLI.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from gateway.link.client import LinkClient, connect
from tests.helpers.federation import KeyFile, Peer, TlsSet, write_key, write_peers
from tests.integration.sdk_helpers import ROOT, GatewayProcess, free_port

__all__ = ["CLI_TIMEOUT", "Lines", "LinkGateway", "cli", "link_client", "spawn", "start_all"]

CLI_TIMEOUT = 60.0


class LinkGateway(GatewayProcess):
    """A gateway process with the link on (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        peers: Sequence[Peer],
        *,
        state_config: str = "",
        tls: TlsSet | None = None,
    ) -> None:
        """``state_config``: YAML for the top of the config file (e.g. a ``workers:`` section with
        a Bridge adapter); without it the store is the embedded file-based kv. ``tls``: serve the
        link over TLS, requiring a client certificate from its CA (mTLS)."""
        super().__init__(data_dir)
        self.name = name
        self.link_port = free_port()
        self.key = write_key(data_dir / "keys", name)
        self.peers_file = data_dir / "peers.yaml"
        self.set_peers(peers)
        self.state_config = state_config
        self.tls = tls
        self.config = data_dir / "gateway.yaml"
        tls_yaml = (
            f"  tls: {{cert: {tls.server_cert}, key: {tls.server_key}, client_ca: {tls.ca}}}\n" if tls else ""
        )
        self.config.write_text(
            state_config + "link:\n"
            f"  listen: 127.0.0.1:{self.link_port}\n"
            f"  identity: {self.key.path}\n"
            f"  authorized_peers: {self.peers_file}\n" + tls_yaml
        )

    def set_peers(self, peers: Sequence[Peer]) -> None:
        write_peers(self.peers_file, peers)

    def reload_peers(self) -> None:
        """SIGHUP: the gateway re-reads its authorized-peers file."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def command(self) -> list[str]:
        command = [*super().command(), "-c", str(self.config), "--engine-id", self.name, "--fsync", "never"]
        if self.state_config:  # keep the config's adapter: drop --store file_based
            i = command.index("--store")
            del command[i : i + 2]
        return command

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/readyz`` says 200 (the app answers so once every listener is up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.http_url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become ready: {self.log_path.read_text()[-2000:]}")
            self.proc_wait(0.05)  # the poll interval: returns at once if the process died

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self.link_port}"

    @property
    def public(self) -> str:
        return self.key.public

    def flags(self, key: KeyFile, *, pinned: str | None = None) -> list[str]:
        """The CLI's connection flags for reaching this gateway as ``key``."""
        flags = ["--gateway", self.url, "--identity", str(key.path), "--upstream-key", pinned or self.public]
        if self.tls:
            t = self.tls
            flags += ["--tls-ca", str(t.ca), "--tls-cert", str(t.client_cert), "--tls-key", str(t.client_key)]
        return flags


def start_all(*gateways: LinkGateway) -> None:
    """Start independent gateways side by side (each start waits for its own readiness)."""
    threads = [threading.Thread(target=gw.start) for gw in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for gw in gateways:
        gw.wait_ready(0.1)  # raises here, in the test, if one of them did not come up


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` to completion (text output, UTF-8)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=CLI_TIMEOUT,
        cwd=cwd or ROOT,
        env=_env(),
    )


def spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """``python -m gateway ARGS`` running, stdout and stderr piped (text, line-buffered)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        bufsize=1,
        cwd=cwd or ROOT,
        env=_env(),
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Lines:
    """The lines of a stream, read by a thread; ``next(timeout)`` or AssertionError."""

    def __init__(self, stream: IO[str]) -> None:
        self._q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next(self, timeout: float = 20.0) -> str:
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; seen so far: {self.seen[-5:]}") from None
        if line is None:
            raise AssertionError(f"the stream ended; seen: {self.seen[-5:]}")
        self.seen.append(line)
        return line

    def rest(self, timeout: float = 20.0) -> list[str]:
        """Every line until the stream ends."""
        out = []
        while True:
            try:
                line = self._q.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout} s") from None
            if line is None:
                return out
            self.seen.append(line)
            out.append(line)


@contextlib.asynccontextmanager
async def link_client(
    gw: LinkGateway, key: KeyFile, client_id: str = "test-client"
) -> AsyncIterator[LinkClient]:
    """A real link client to ``gw`` authenticated as ``key``."""
    from gateway.link import parse_public_key

    client = await connect(
        "127.0.0.1",
        gw.link_port,
        private_key=key.key,
        client_id=client_id,
        server_key=parse_public_key(gw.public),
    )
    try:
        yield client
    finally:
        await client.aclose()
