"""How the adapter reaches Redis: URL forms, passwords and ACL users, TLS, Sentinel failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.redis.connection import parse_redis_url, redact_url
from gateway.errors import AdapterError, AdapterUnavailable, ConfigError
from gateway.state.adapter import Change
from tests.integration.conftest import AdapterFactory, RedisFactory
from tests.integration.redis_server import RedisSentinel, RedisServer, make_tls_files


def test_url_forms() -> None:
    plain = parse_redis_url("redis://app:p%40ss@10.0.0.5:6380/3?socket_keepalive=true")
    assert plain.connection_kwargs["host"] == "10.0.0.5" and plain.connection_kwargs["port"] == 6380
    assert plain.connection_kwargs["db"] == 3 and plain.connection_kwargs["username"] == "app"
    assert plain.connection_kwargs["password"] == "p@ss" and "p@ss" not in plain.display
    assert not plain.is_sentinel
    tls = parse_redis_url("rediss://h:6379/0?ssl_ca_certs=/etc/ca.pem")
    assert tls.connection_kwargs["connection_class"].__name__ == "SSLConnection"
    assert tls.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert parse_redis_url("unix:///run/redis.sock?db=2").connection_kwargs["path"] == "/run/redis.sock"

    sentinel = parse_redis_url(
        "redis+sentinel://:pw@s1:26379,[::1]:26380,s3/mymaster/2?sentinel_password=spw"
    )
    assert sentinel.is_sentinel and sentinel.service_name == "mymaster"
    assert sentinel.sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26379))
    assert sentinel.connection_kwargs == {"password": "pw", "db": 2}
    assert sentinel.sentinel_kwargs == {"password": "spw"}
    assert "pw" not in sentinel.display.replace("sentinel_password=spw", "")
    secure = parse_redis_url("rediss+sentinel://s1:26379/m?ssl_ca_certs=/ca.pem")
    assert secure.connection_kwargs["ssl"] is True and secure.sentinel_kwargs["ssl_ca_certs"] == "/ca.pem"

    for bad in ("http://h:1", "redis+sentinel://s1:26379", "redis+sentinel:///m", "redis+sentinel://s:x/m"):
        with pytest.raises(ConfigError):
            parse_redis_url(bad)
    assert redact_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


async def test_password_in_url(redis_factory: RedisFactory, redis_adapter_factory: AdapterFactory) -> None:
    server = redis_factory(password="s3cret-pw")
    a = await redis_adapter_factory(server)
    await a.set("s", "k", 1)
    assert server.command("HGET", "state:s", "k") == b"1"
    wrong = server.url.replace("s3cret-pw", "nope-nope")
    with pytest.raises(AdapterUnavailable) as info:
        await redis_adapter_factory(wrong, engine_id="other")
    assert "refused the credentials" in str(info.value) and "nope-nope" not in str(info.value)


async def test_acl_user_limited_to_gateway_keys(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    acl = ["on", ">gw-pw", "~state:*", "~iii-gateway:*", "+@all"]
    redis_server.command("ACL", "SETUSER", "gateway", *acl)
    redis_server.command("ACL", "SETUSER", "narrow", "on", ">n-pw", "~state:*", "+@all")
    port = redis_server.port
    a = await redis_adapter_factory(f"redis://gateway:gw-pw@127.0.0.1:{port}/0", engine_id="acl")
    seen: list[Change] = []
    a.subscribe(seen.append)
    rev = (await a.set("s", "k", {"v": 1})).revision
    await a.wait_delivered(rev, timeout=10)
    assert [c.new_value for c in seen] == [{"v": 1}]
    # A user that may not touch the bookkeeping keys gets a clear refusal, not a crash.
    with pytest.raises(AdapterError, match=r"refused start: .*no permissions"):
        await redis_adapter_factory(f"redis://narrow:n-pw@127.0.0.1:{port}/0", engine_id="narrow")


async def test_tls(
    tmp_path: Path, redis_factory: RedisFactory, redis_adapter_factory: AdapterFactory
) -> None:
    server = redis_factory(tls=make_tls_files(tmp_path / "tls"))
    a = await redis_adapter_factory(server.tls_url)
    seen: list[Change] = []
    a.subscribe(seen.append)
    rev = (await a.update("s", "k", [])).revision
    await a.wait_delivered(rev, timeout=10)
    assert [c.new_value for c in seen] == [{}]
    assert server.command("HGET", "state:s", "k") == b"{}"
    # Without the CA the server certificate is not trusted.
    untrusted = f"rediss://localhost:{server.tls_port}/0"
    with pytest.raises(AdapterUnavailable):
        await redis_adapter_factory(untrusted, engine_id="untrusted", connect_timeout_ms=1000)


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition on another process (with a deadline)."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def wait_for_failover(sentinel: RedisSentinel, old: RedisServer, new: RedisServer) -> None:
    """Sentinel failover runs in other processes; poll its view (with a deadline) until the new
    master is announced, then demote the old master as Sentinel itself would (it does so on its
    next INFO round, up to 10 s later)."""
    wait_until(lambda: sentinel.master_address()[1] == new.port)
    old.command("REPLICAOF", new.host, new.port)


async def test_sentinel_discovery_and_failover(
    tmp_path: Path, redis_factory: RedisFactory, redis_adapter_factory: AdapterFactory
) -> None:
    master = redis_factory(extra_args=["--repl-diskless-sync-delay", "0"])  # no 5 s wait for replicas
    replica = redis_factory(extra_args=["--replicaof", master.host, str(master.port)])
    replica.wait_replication_link()
    sentinel = RedisSentinel(tmp_path / "sentinel", master)
    sentinel.start()
    try:
        a = await redis_adapter_factory(sentinel.url(), engine_id="gw-a", command_timeout_ms=2000)
        seen: list[int] = []
        a.subscribe(lambda change: seen.append(change.revision))
        for i in range(5):
            await a.set("s", f"k{i}", i)
        # Make sure the replica has everything before the switch (replication is async).
        await asyncio.to_thread(wait_until, lambda: replica.command("GET", "iii-gateway:revision") == b"5")
        await asyncio.to_thread(sentinel.failover)
        await asyncio.to_thread(wait_for_failover, sentinel, master, replica)
        # The first write after the switch may land on the demoted master's connection and be
        # refused (READONLY); the adapter goes back to Sentinel and uses the new master.
        last = 0
        for i in range(5, 10):
            last = (await a.set("s", f"k{i}", i)).revision
        assert replica.command("HGET", "state:s", "k9") == b"9"
        await a.wait_delivered(last, timeout=15)
        assert seen == list(range(1, 11))
        assert sorted(await a.list("s")) == list(range(10))
    finally:
        sentinel.kill()
