"""The Redis adapter keeps the reference engine's layout and copes with what others write there."""

from __future__ import annotations

import logging

import pytest

from adapters.redis import RedisAdapter
from gateway.config.settings import RedisSettings
from gateway.errors import ConfigError, CorruptDataError
from gateway.state.adapter import Entry
from gateway.state.ops import append_op, increment_op, set_op
from tests.integration.conftest import AdapterFactory
from tests.integration.redis_server import RedisServer


def scan_all(server: RedisServer, pattern: str) -> set[bytes]:
    found: set[bytes] = set()
    cursor = b"0"
    while True:
        reply = server.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        assert isinstance(reply, list)
        cursor, keys = reply
        found.update(keys)
        if cursor == b"0":
            return found


async def test_values_are_plain_json_text_in_state_hashes(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server)
    value = {"b": [], "a": 2**63 + 5, "nested": {"z": [], "y": -(2**70)}, "s": "é\u2028"}
    await a.set("users", "u1", value)
    await a.update("users", "u2", [increment_op("n", 2**60), set_op("e", [])])
    raw = redis_server.command("HGET", "state:users", "u1")
    # Compact, keys sorted, integers exact, empty arrays kept: what the reference writes.
    expected = '{"a":9223372036854775813,"b":[],"nested":{"y":-1180591620717411303424,"z":[]},"s":"é\u2028"}'
    assert raw == expected.encode()
    assert redis_server.command("HGET", "state:users", "u2") == b'{"e":[],"n":1152921504606846976}'
    entry = await a.get("users", "u2")
    assert entry is not None and entry.value == {"e": [], "n": 2**60}
    # Only scopes match the reference engine's SCAN; bookkeeping lives under the prefix.
    assert scan_all(redis_server, "state:*") == {b"state:users"}
    assert all(k.startswith(b"iii-gateway:") for k in scan_all(redis_server, "*") - {b"state:users"})


async def test_foreign_hash_is_read_and_listed_after_reconcile(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, start=False)
    a.reconcile_interval = 0  # no background reconcile: this test runs it by hand
    await a.start()
    await a.set("mine", "k", 1)
    # What a reference engine does: HSET JSON text, no revision, no index, no event.
    redis_server.command("HSET", "state:ref", "x", '{"from":"reference"}', "y", "[1,2]")
    redis_server.command("SET", "state:not-a-hash", "1")
    assert await a.get("ref", "x") == Entry({"from": "reference"}, 0)
    listed = await a.list("ref")
    assert len(listed) == 2 and {"from": "reference"} in listed and [1, 2] in listed
    assert await a.list_groups() == ["mine"]  # not indexed yet
    assert await a.reconcile_scopes() == 2  # mine and ref; the string key is not a scope
    assert await a.list_groups() == ["mine", "ref"]
    # A foreign writer empties a scope: it drops out at once, without a reconcile.
    redis_server.command("DEL", "state:mine")
    assert await a.list_groups() == ["ref"]
    # The adapter's own writes keep the index.
    await a.update("ref", "y", [append_op(3)])
    assert redis_server.command("HGET", "state:ref", "y") == b"[1,2,3]"
    await a.delete("ref", "x")
    await a.delete("ref", "y")
    assert await a.list_groups() == []
    assert redis_server.command("EXISTS", "state:ref") == 0


async def test_groups_are_bytewise_sorted_and_names_round_trip(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server)
    a._scopes.page = 2  # exercise the paging of the index reads
    scopes = ["é", "a", "Z", "", "B", "a:b*[x]", "日本"]
    for scope in scopes:
        await a.set(scope, "k" + scope, scope)
    assert await a.list_groups() == sorted(scopes, key=lambda s: s.encode())
    for scope in scopes:
        assert await a.get(scope, "k" + scope) is not None
    assert redis_server.command("HGET", "state:日本", "k日本") == '"日本"'.encode()


async def test_corrupt_json_is_reported_with_scope_and_key(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await redis_adapter_factory(redis_server)
    await a.set("s", "good", {"ok": True})
    redis_server.command("HSET", "state:s", "bad", "{not json")
    with pytest.raises(CorruptDataError) as info:
        await a.get("s", "bad")
    assert "'s'" in str(info.value) and "'bad'" in str(info.value)
    with pytest.raises(CorruptDataError, match="'bad'"):
        await a.update("s", "bad", [increment_op("n", 1)])
    redis_server.command("HSET", "state:s", "binary", b"\xff\xfe1")  # not even UTF-8
    with pytest.raises(CorruptDataError, match="'binary'"):
        await a.get("s", "binary")
    assert redis_server.command("HGET", "state:s", "bad") == b"{not json"  # update wrote nothing
    with caplog.at_level(logging.ERROR, logger="adapters.redis.adapter"):
        assert await a.list("s") == [{"ok": True}]
        items = await a.items("s")
    assert [k for k, _ in items] == ["good"]  # both bad ones skipped
    assert any("'bad'" in r.getMessage() and "state:s" in r.getMessage() for r in caplog.records)
    assert a.statistics()["redis_corrupt_values_total"] >= 4
    # set repairs it (the corrupt old value reads as None), delete removes it.
    repaired = await a.set("s", "bad", 1)
    assert (repaired.existed, repaired.old_value) == (True, None)
    assert await a.get("s", "bad") == Entry(1, repaired.revision)


async def test_custom_prefix_and_forbidden_prefix(
    redis_server: RedisServer, redis_adapter_factory: AdapterFactory
) -> None:
    a = await redis_adapter_factory(redis_server, key_prefix="gw{1}:")
    await a.set("s", "k", 1)
    keys = scan_all(redis_server, "*")
    assert b"gw{1}:revision" in keys and b"gw{1}:events" in keys and b"state:s" in keys
    assert not any(k.startswith(b"iii-gateway:") for k in keys)
    with pytest.raises(ConfigError, match="state:"):
        RedisAdapter(RedisSettings(redis_url=redis_server.url, key_prefix="state:gw:"), engine_id="e")
    with pytest.raises(ConfigError):
        RedisAdapter(RedisSettings(redis_url=redis_server.url), engine_id="")
