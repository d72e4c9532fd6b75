"""Real ``redis-server`` processes for tests: start, stop, kill -9, restart, Sentinel, TLS.

Tests that need Redis never share the machine's default instance: each :class:`RedisServer`
runs its own process on a free loopback port, with its working directory (and its AOF/RDB
files when persistence is on) in a per-test temporary directory, and is killed at teardown.

Readiness is checked by speaking RESP over a plain socket (``PING`` until ``+PONG``), so the
helpers depend on nothing but the standard library and can be used from synchronous and
asynchronous tests alike (``a*`` methods run the blocking waits in a worker thread so an event
loop under test keeps running while Redis restarts).

Typical use (fixtures in ``tests/integration/conftest.py``)::

    def test_x(redis_server: RedisServer) -> None:
        redis_server.command("HSET", "state:s", "k", "1")
        redis_server.kill()            # SIGKILL, like a crash
        redis_server.start()           # same port, same data dir
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REDIS_SERVER_BIN",
    "RedisError",
    "RedisSentinel",
    "RedisServer",
    "TlsFiles",
    "free_port",
    "make_tls_files",
    "redis_available",
]

REDIS_SERVER_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


class RedisError(Exception):
    """An error reply (``-ERR ...``) from :meth:`RedisServer.command`."""


def redis_available() -> bool:
    """True when a ``redis-server`` binary can be run (tests skip otherwise)."""
    return os.access(REDIS_SERVER_BIN, os.X_OK)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a tiny RESP client: enough for PING and test assertions, no dependency on redis-py ---


def _encode_command(args: Sequence[str | bytes | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by redis-server")
        self._buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def read(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")


def resp_command(
    host: str, port: int, *args: str | bytes | int, password: str | None = None, timeout: float = 5.0
) -> object:
    """Send one command on a fresh connection and return the decoded reply (raises RedisError)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = _Reader(sock)
        if password is not None:
            sock.sendall(_encode_command(["AUTH", password]))
            reply = reader.read()
            if isinstance(reply, RedisError):
                raise reply
        sock.sendall(_encode_command(list(args)))
        reply = reader.read()
    if isinstance(reply, RedisError):
        raise reply
    return reply


@dataclass
class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its own data directory.

    ``appendonly=True`` turns on the AOF with ``appendfsync always``, so every acknowledged
    write survives :meth:`kill`. ``extra_args`` are passed as command-line config
    (``["--maxmemory", "10mb"]``). ``password`` sets ``requirepass`` (the default user).
    """

    data_dir: Path
    appendonly: bool = False
    password: str | None = None
    extra_args: Sequence[str] = ()
    port: int = 0
    host: str = "127.0.0.1"
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.tls_port = free_port() if self.tls is not None else 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.data_dir / "redis.log"

    # --- addresses ---

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """``rediss://`` URL of the TLS port, trusting the test CA (needs ``tls=``)."""
        assert self.tls is not None, "server started without TLS files"
        return f"rediss://localhost:{self.tls_port}/0?ssl_ca_certs={self.tls.ca_cert}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- lifecycle ---

    def _argv(self) -> list[str]:
        argv = [
            REDIS_SERVER_BIN,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--logfile", str(self._log),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        if self.tls is not None:
            argv += [
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca_cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        argv += list(self.extra_args)
        return argv

    def start(self) -> None:
        """Start the process (same port and directory on a restart) and wait until it answers."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self._proc = subprocess.Popen(
            self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.002
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {self._tail_log()}")
            try:
                if self.command("PING", timeout=1.0) == "PONG":
                    return
            except (OSError, ConnectionError, RedisError):
                pass  # not listening yet, or still loading the AOF
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} not ready: {self._tail_log()}")
            time.sleep(delay)  # polling a readiness condition with a deadline
            delay = min(delay * 2, 0.05)

    def _tail_log(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the process (a crash: no shutdown save) and reap it."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process (a clean shutdown) and reap it."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill -9 and start again on the same port with the same data directory."""
        self.kill()
        self.start()

    def wait_replication_link(self) -> None:
        """For a server started with ``--replicaof``: poll ``ROLE`` (with a deadline) until the
        initial sync is done and the link streams writes (before that, WAIT is not reliable)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            role = self.command("ROLE")
            if isinstance(role, list) and role[0] == b"slave" and role[3] == b"connected":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica on port {self.port} did not sync: {role!r}")
            time.sleep(0.01)  # polling a replication condition with a deadline

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    # --- talking to it ---

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """Run one command on a fresh connection (test assertions, setup of foreign data)."""
        return resp_command(self.host, self.port, *args, password=self.password, timeout=timeout)

    async def acommand(self, *args: str | bytes | int) -> object:
        return await asyncio.to_thread(self.command, *args)


@dataclass
class RedisSentinel:
    """One ``redis-server --sentinel`` process monitoring ``master`` under ``service``.

    Quorum 1 and short timeouts, so a test can force a failover with
    ``SENTINEL FAILOVER <service>`` and see it complete in about a second.
    """

    data_dir: Path
    master: RedisServer
    service: str = "mymaster"
    port: int = 0

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.data_dir / "sentinel.conf"
        lines = [
            f"port {self.port}",
            f"bind {self.master.host}",
            f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'sentinel.log'}",
            f"sentinel monitor {self.service} {self.master.host} {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.service} 1000",
            f"sentinel failover-timeout {self.service} 5000",
        ]
        if self.master.password:
            lines.append(f"sentinel auth-pass {self.service} {self.master.password}")
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [REDIS_SERVER_BIN, str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                reply = self.command("SENTINEL", "get-master-addr-by-name", self.service, timeout=1.0)
                if isinstance(reply, list) and reply:
                    return
            except (OSError, ConnectionError, RedisError):
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"sentinel on port {self.port} not ready")
            time.sleep(0.01)  # polling a readiness condition with a deadline

    def master_address(self) -> tuple[str, int]:
        """The master as clients discover it (``SENTINEL MASTER``, which switches only when a
        failover has completed; ``get-master-addr-by-name`` answers the promoted replica early)."""
        reply = self.command("SENTINEL", "MASTER", self.service)
        assert isinstance(reply, list)
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        host, port = fields[b"ip"], fields[b"port"]
        assert isinstance(host, bytes) and isinstance(port, bytes)
        return host.decode(), int(port)

    def failover(self) -> None:
        """``SENTINEL FAILOVER``, retried while the Sentinel has not yet seen a usable replica
        (it learns replicas from INFO a moment after start: NOGOODSLAVE until then)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.command("SENTINEL", "FAILOVER", self.service)
                return
            except RedisError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)  # polling the Sentinel's view with a deadline

    def url(self, db: int = 0) -> str:
        auth = f":{self.master.password}@" if self.master.password else ""
        return f"redis+sentinel://{auth}{self.master.host}:{self.port}/{self.service}/{db}"

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        return resp_command(self.master.host, self.port, *args, timeout=timeout)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for ``localhost``/127.0.0.1 (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iii-gateway test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
