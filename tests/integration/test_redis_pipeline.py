"""The pipelined connection: replies reach the right caller whatever happens around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.pipeline import NotSent, Pipe, pack
from tests.integration.redis_server import RedisServer, free_port


def make_pipe(port: int, read_timeout: float = 5.0) -> Pipe:
    return Pipe(lambda: Connection(host="127.0.0.1", port=port, protocol=2), read_timeout=read_timeout)


@pytest.fixture
async def pipe(redis_server: RedisServer) -> AsyncIterator[Pipe]:
    p = make_pipe(redis_server.port)
    yield p
    await p.aclose()


def test_pack_matches_redis_py() -> None:
    conn = Connection()
    for args in [("SET", b"k\x00\xff", "vé", 5, -1.5), ("EVALSHA", "ab", 0), ("PING",)]:
        assert pack(args) == b"".join(conn.pack_command(*args))
    with pytest.raises(TypeError):
        pack(("SET", None))  # type: ignore[arg-type]


async def test_concurrent_replies_match_their_commands(pipe: Pipe, redis_server: RedisServer) -> None:
    redis_server.command("SET", "str", "x")
    replies = await asyncio.gather(
        *(
            pipe.request(("ECHO", f"m{i}")) if i % 50 else pipe.request(("HGET", "str", "f"))
            for i in range(500)
        ),
        return_exceptions=True,
    )
    for i, reply in enumerate(replies):
        if i % 50:
            assert reply == f"m{i}".encode()
        else:  # an error reply fails its own command only
            assert isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply)
    assert pipe.load == 0


async def test_cancelled_caller_does_not_shift_replies(pipe: Pipe) -> None:
    slow = asyncio.create_task(pipe.request(("BLPOP", "nothing", "0.2")))
    after = asyncio.create_task(pipe.request(("ECHO", "mine")))
    while pipe.load < 2:
        await asyncio.sleep(0)  # let both get queued
    slow.cancel()
    assert await after == b"mine"
    assert await pipe.request(("ECHO", "next")) == b"next"
    assert slow.cancelled()


async def test_hung_connection_fails_in_flight_and_recovers(redis_server: RedisServer) -> None:
    pipe = make_pipe(redis_server.port, read_timeout=0.3)
    try:
        assert await pipe.request(("PING",)) == b"PONG"
        # BLPOP blocks the connection server-side well past the read timeout: a stand-in for a
        # hung server. What is in flight fails as "may have run"; the next command reconnects.
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                pipe.request(("BLPOP", "nothing", "3")), pipe.request(("ECHO", "x")), return_exceptions=True
            )
        assert isinstance(results[0], RedisTimeoutError) and "no reply" in str(results[0])
        assert isinstance(results[1], RedisConnectionError) and not isinstance(results[1], NotSent)
        assert await pipe.request(("ECHO", "again")) == b"again"
    finally:
        await pipe.aclose()


async def test_unreachable_is_not_sent_and_server_loss_is_ambiguous(redis_server: RedisServer) -> None:
    nowhere = make_pipe(free_port())
    with pytest.raises(NotSent) as info:
        await nowhere.request(("PING",))
    assert info.value.connecting
    await nowhere.aclose()

    pipe = make_pipe(redis_server.port)
    try:
        assert await pipe.request(("PING",)) == b"PONG"
        pending = asyncio.create_task(pipe.request(("BLPOP", "nothing", "5")))
        while pipe.load < 1:
            await asyncio.sleep(0)
        await redis_server.akill()
        with pytest.raises(RedisConnectionError):  # it was sent: it may have run
            await pending
        with pytest.raises(NotSent):
            await pipe.request(("PING",))
    finally:
        await pipe.aclose()
