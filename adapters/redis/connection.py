"""Connections to Redis: URL forms, a pool of pipelined connections, honest error mapping.

URL forms accepted in ``redis_url``:

* ``redis://[[user]:password@]host[:port][/db][?option=value...]``: plain TCP.
* ``rediss://...``: TLS. Options from redis-py apply, e.g. ``?ssl_ca_certs=/etc/ca.pem``,
  ``ssl_certfile=``/``ssl_keyfile=`` for client certificates, ``ssl_cert_reqs=none``.
* ``unix:///path/to/redis.sock[?db=0]``: a Unix socket.
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db][?options]``:
  ask the Sentinels for the current master of ``service_name`` and follow failovers.
  ``rediss+sentinel://`` uses TLS for the Sentinels and the data nodes. The user/password in
  the URL authenticate to the data nodes; ``sentinel_username=``/``sentinel_password=`` query
  options authenticate to the Sentinels. IPv6 hosts are written ``[::1]:26379``.

Why commands are sent by hand instead of through ``redis.asyncio.Redis``: its retry policy
resends a command after a connection error even when the server may already have run it. For a
write that means a second revision and a second event, and for ``update`` a second application
of the ops. Here only the connect phase is retried (redis-py's connection ``Retry`` with
exponential jittered backoff), and a command is resent only when it provably did not run
(never written, refused while loading, refused by a demoted master) or when it is a read. A
write whose connection broke after it was written fails with :class:`AdapterUnavailable` saying
that its outcome is unknown (the event stream shows whether it happened). And commands share
connections (:mod:`adapters.redis.pipeline`): concurrent callers' commands leave in batches,
which is what makes the adapter keep up with a bare client despite doing more per operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.pipeline import NotSent, Pipe
from adapters.redis.scripts import Script
from gateway.errors import AdapterError, AdapterTimeout, AdapterUnavailable, ConfigError

__all__ = ["Health", "RedisExecutor", "RedisTarget", "parse_redis_url", "redact_url"]

log = logging.getLogger(__name__)

Arg = bytes | str | int | float

# The connection error redis-py raises when a Sentinel-managed master answered READONLY: the
# server refused the command, so resending it to the new master is safe.
_DEMOTED_MASTER = "The previous master is now a slave"
_MAYBE_APPLIED = " (outcome unknown: the write may have been applied; the event stream will tell)"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis_url``: where to connect and how (never holds the raw URL)."""

    display: str  # the URL with the password replaced by ***, for messages and logs
    connection_kwargs: dict[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sentinel(self) -> bool:
        return self.service_name is not None


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (URLs end up in logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable redis url>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    return parts._replace(netloc=netloc).geturl()


def _split_host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"sentinel address {item!r} has no host in {redact_url(url)}", key="redis_url")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"bad port in sentinel address {item!r}", key="redis_url") from None
    return host, port


def _parse_sentinel_url(url: str) -> RedisTarget:
    scheme, _, rest = url.partition("://")
    tls = scheme == "rediss+sentinel"
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    kwargs: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if password:
            kwargs["password"] = unquote(password)
    sentinels = tuple(_split_host_port(h, 26379, url) for h in netloc.split(",") if h)
    segments = [unquote(p) for p in path.split("/") if p]
    if not sentinels or not segments:
        raise ConfigError(
            f"{redact_url(url)}: expected redis+sentinel://host:port[,host:port...]/service_name[/db]",
            key="redis_url",
        )
    service = segments[0]
    if len(segments) > 1:
        try:
            kwargs["db"] = int(segments[1])
        except ValueError:
            raise ConfigError(f"bad database number {segments[1]!r}", key="redis_url") from None
    sentinel_kwargs: dict[str, Any] = {}
    for name, values in parse_qs(query).items():
        value = values[-1]
        if name in ("sentinel_password", "sentinel_username"):
            sentinel_kwargs[name.removeprefix("sentinel_")] = value
        elif name == "db":
            kwargs["db"] = int(value)
        else:
            kwargs[name] = value
    if tls:
        kwargs["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in kwargs:
                sentinel_kwargs[name] = kwargs[name]
        sentinel_kwargs["connection_class"] = SSLConnection
    return RedisTarget(
        display=redact_url(url),
        connection_kwargs=kwargs,
        sentinels=sentinels,
        service_name=service,
        sentinel_kwargs=sentinel_kwargs,
    )


def parse_redis_url(url: str) -> RedisTarget:
    """Parse any of the accepted URL forms (module docstring); ConfigError names the problem."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _parse_sentinel_url(url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"unsupported scheme in {redact_url(url)}: use redis://, rediss://, unix:// or "
            "redis+sentinel://host:port[,host:port]/service_name",
            key="redis_url",
        )
    try:
        kwargs = dict(parse_url(url))
    except ValueError as exc:
        raise ConfigError(f"{redact_url(url)}: {exc}", key="redis_url") from exc
    return RedisTarget(display=redact_url(url), connection_kwargs=kwargs)


class Health:
    """Whether Redis answered lately, shared by the command path and the event tailer.

    ``reconnects`` counts transitions from down to up, so it says how often Redis was lost.
    """

    def __init__(self) -> None:
        self.up = False
        self.ever_up = False
        self.reconnects = 0
        self.last_error = ""

    def mark_up(self) -> None:
        if not self.up:
            if self.ever_up:
                self.reconnects += 1
                log.info("redis reachable again (reconnect %d)", self.reconnects)
            self.up = True
            self.ever_up = True

    def mark_down(self, reason: str) -> None:
        self.last_error = reason
        if self.up:
            self.up = False
            log.warning("redis unreachable: %s", reason)


def _load(pipe: Pipe) -> int:
    return pipe.load


class RedisExecutor:
    """Runs single commands and scripts over a pool of ``pool_size`` pipelined connections.

    Each command goes to a :class:`~adapters.redis.pipeline.Pipe` (first fit, see ``_pick``);
    concurrent commands share connections and leave in batches. At most ``pool_size * PIPE_DEPTH``
    commands are in flight; more callers wait on a semaphore (bounded by each operation's
    deadline, which the adapter sets). Errors come out as the gateway's ``AdapterError`` tree
    with a message naming the Redis address (password redacted).
    """

    #: Commands in flight per connection before callers queue.
    PIPE_DEPTH = 256
    #: Commands in flight on a connection before new ones go to the next connection.
    PIPE_SPILL = 32

    def __init__(
        self,
        target: RedisTarget,
        *,
        pool_size: int,
        connect_timeout: float,
        backoff_base: float,
        backoff_cap: float,
        connect_retries: int,
        command_timeout: float,
        health: Health,
    ) -> None:
        self.target = target
        self.health = health
        self._slots = asyncio.Semaphore(pool_size * self.PIPE_DEPTH)
        self._retry = Retry(ExponentialWithJitterBackoff(cap=backoff_cap, base=backoff_base), connect_retries)
        self._connect_timeout = connect_timeout
        self._sentinel: Sentinel | None = None
        self.pool = self._make_pool(pool_size)  # the connection factory (follows Sentinel)
        make = self.make_dedicated_connection
        self._pipes = [Pipe(make, read_timeout=command_timeout) for _ in range(pool_size)]

    def connection_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.target.connection_kwargs)
        kwargs.setdefault("protocol", 2)  # RESP2 unless the URL asks: works with every Redis, no HELLO
        kwargs.update(
            socket_timeout=None,  # operations are bounded by asyncio.timeout (see below)
            socket_connect_timeout=self._connect_timeout,
            socket_keepalive=True,
            retry=self._retry,
            decode_responses=False,
            driver_info=None,  # no CLIENT SETINFO round trips on connect
        )
        return kwargs

    def _make_pool(self, pool_size: int) -> ConnectionPool:
        kwargs = self.connection_kwargs()
        if not self.target.is_sentinel:
            return ConnectionPool(max_connections=pool_size, **kwargs)
        sentinel_kwargs = {
            "socket_timeout": self._connect_timeout,
            "socket_connect_timeout": self._connect_timeout,
            "driver_info": None,
            **self.target.sentinel_kwargs,
        }
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            list(self.target.sentinels), sentinel_kwargs=sentinel_kwargs
        )
        assert self.target.service_name is not None
        return SentinelConnectionPool(  # type: ignore[no-untyped-call]
            self.target.service_name, self._sentinel, max_connections=pool_size, **kwargs
        )

    def make_dedicated_connection(self) -> AbstractConnection:
        """A new connection (each pipe's, and the event tailer's, which blocks in XREAD).

        It has no socket timeout: redis-py enforces that with
        ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation that arrives as the
        send completes (a task that cannot be stopped). Callers bound their I/O with
        ``asyncio.timeout`` instead.
        """
        conn: AbstractConnection = self.pool.make_connection()  # type: ignore[no-untyped-call]
        return conn

    async def aclose(self) -> None:
        for pipe in self._pipes:
            await pipe.aclose()
        await self.pool.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    # --- running commands ---

    async def _once(self, args: Sequence[Arg]) -> Any:
        async with self._slots:
            return await self._pick().request(args)

    def _pick(self) -> Pipe:
        """First fit: fill one connection up to PIPE_SPILL commands in flight before using the
        next. Batches only form when commands share a connection, so spreading them evenly
        would undo the pipelining; spilling over bounds head-of-line waits behind a big reply."""
        for pipe in self._pipes:
            if pipe.load < self.PIPE_SPILL:
                return pipe
        return min(self._pipes, key=_load)

    def _reset_pipes(self) -> None:
        """After a Sentinel failover: make every pipe reconnect (asking for the new master)."""
        for pipe in self._pipes:
            pipe.reset()

    async def call(self, *args: Arg, write: bool = False) -> Any:
        """Run one command. ``write=True``: never resent once it may have reached Redis."""
        name = str(args[0])
        resent = False
        while True:
            try:
                reply = await self._once(args)
            except NotSent as exc:
                if not exc.connecting and not resent:
                    resent = True  # queued when its connection broke, never written: resend
                    continue
                raise self._unavailable(exc.cause, name) from exc.cause
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                demoted = isinstance(exc, RedisConnectionError) and str(exc).startswith(_DEMOTED_MASTER)
                if demoted:
                    # A demoted master refused the command (READONLY: not applied). The other
                    # connections still point at it: reconnect them all, via Sentinel.
                    self._reset_pipes()
                if (demoted or not write) and not resent:
                    # Resend once to the new master, or a read whose connection broke under it
                    # (Redis restarted).
                    resent = True
                    continue
                raise self._unavailable(exc, name, maybe_applied=write) from exc
            except ResponseError:
                self.health.mark_up()  # Redis answered; the command itself failed
                raise
            self.health.mark_up()
            return reply

    async def run_script(
        self, script: Script, keys: Sequence[bytes], args: Sequence[Arg], *, write: bool
    ) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script) after NOSCRIPT.

        NOSCRIPT means Redis did not run anything, so the fallback is safe for writes; it is
        needed after every Redis restart or SCRIPT FLUSH.
        """
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args, write=write)
        except NoScriptError:
            log.debug("script %s not cached by redis, sending its source", script.name)
            return await self.call("EVAL", script.source, len(keys), *keys, *args, write=write)

    def _unavailable(self, exc: BaseException, command: str, *, maybe_applied: bool = False) -> AdapterError:
        where = self.target.display
        if isinstance(exc, AuthenticationError):
            msg = f"redis at {where} refused the credentials: {exc}"
        elif isinstance(exc, BusyLoadingError):
            msg = f"redis at {where} is loading its dataset"
        else:
            msg = f"redis at {where} unreachable during {command}: {exc}"
        if maybe_applied:
            msg += _MAYBE_APPLIED
        self.health.mark_down(msg)
        if isinstance(exc, RedisTimeoutError | TimeoutError):
            return AdapterTimeout(msg)
        return AdapterUnavailable(msg)

    def timeout_error(self, command: str, seconds: float, *, maybe_applied: bool = False) -> AdapterTimeout:
        msg = f"redis at {self.target.display} did not answer {command} within {seconds:g}s"
        if maybe_applied:
            msg += _MAYBE_APPLIED
        self.health.mark_down(msg)
        return AdapterTimeout(msg)
