"""Link security against a real gateway (the composition root, in this event loop).

Each attack is made on a real socket, either by a real client with the wrong credentials or by
a raw peer that writes frames by hand. For each one the test checks the refusal the attacker
receives (the ``Close`` code and reason), the counter on the gateway's real ``/metrics``
endpoint, and that an authorized peer connected all along is still served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config.settings import (
    AdapterSettings,
    KvSettings,
    LinkSettings,
    ServerSettings,
    Settings,
    StateSettings,
)
from gateway.errors import AuthError, ForbiddenError, GatewayError, LinkBroken
from gateway.link import (
    AuthRateLimiter,
    ClientHandshake,
    FrameDecoder,
    GetArgs,
    ListGroupsArgs,
    SetArgs,
    WatchArgs,
    encode_frame,
)
from gateway.link.client import LinkClient, connect
from gateway.link.messages import Auth, Challenge, WatchEvent
from tests.helpers.federation import KeyFile, Peer, eventually, write_key, write_peers


class Central:
    """A running gateway with the link on, plus its keys, peers file and metrics scraper."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = write_key(tmp / "keys", "central")
        self.edge = write_key(tmp / "keys", "edge")
        self.limited = write_key(tmp / "keys", "limited")
        self.stranger = write_key(tmp / "keys", "stranger")
        self.peers_file = tmp / "peers.yaml"
        self.write_peers()
        self.gateway: Gateway | None = None

    def write_peers(self, peers: list[Peer] | None = None) -> None:
        write_peers(
            self.peers_file,
            peers
            if peers is not None
            else [
                Peer("edge", self.edge),
                Peer("limited", self.limited, read=["pub-*"], write=["pub-*"], watch=["pub-*"]),
            ],
        )

    async def start(self) -> Gateway:
        settings = Settings(
            engine_id="central",
            server=ServerSettings(worker_port=0, http_port=0),
            state=StateSettings(adapter=AdapterSettings(name="kv", kv=KvSettings(store_method="in_memory"))),
            link=LinkSettings(
                listen="127.0.0.1:0", identity=str(self.key.path), authorized_peers=str(self.peers_file)
            ),
            data_dir=str(self.tmp / "data"),
        )
        self.gateway = Gateway(settings)
        await self.gateway.start()
        return self.gateway

    @property
    def port(self) -> int:
        assert self.gateway is not None and self.gateway.link_port is not None
        return self.gateway.link_port

    async def client(self, key: KeyFile, *, pinned: KeyFile | None = None, **kwargs: Any) -> LinkClient:
        server_key = (pinned or self.key).key.public_key()
        return await connect(
            "127.0.0.1",
            self.port,
            private_key=key.key,
            client_id=key.path.stem,
            server_key=server_key,
            **kwargs,
        )

    async def metric(self, name: str, **labels: str) -> float:
        """One sample from the gateway's /metrics endpoint (0 when absent)."""
        assert self.gateway is not None
        url = f"http://127.0.0.1:{self.gateway.http_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0


class RawPeer:
    """A peer that writes frames (or any bytes) by hand and reads the gateway's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(64 * 1024 * 1024)

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    def send(self, frame: dict[str, Any]) -> None:
        self.writer.write(encode_frame(frame))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> dict[str, Any] | None:
        """The next frame, or None at EOF."""
        async with asyncio.timeout(10):
            while (frame := self.decoder.next_frame()) is None:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)
        return frame

    async def until_close(self) -> dict[str, Any]:
        """Read until the gateway's Close frame; then the gateway must end the connection."""
        while (frame := await self.recv()) is not None:
            if frame["type"] == "close":
                assert await self.recv() is None, "the gateway kept the connection open"
                await self.aclose()
                return frame
        raise AssertionError("the connection ended without a Close frame")

    async def handshake(
        self, key: KeyFile, server: KeyFile, *, tamper: Callable[[Auth], Auth] | None = None, **hs: Any
    ) -> dict[str, Any] | None:
        """Run the client side of the handshake by hand; returns the answer to AUTH (or None)."""
        client = ClientHandshake(
            private_key=key.key, client_id="raw", server_key=server.key.public_key(), **hs
        )
        hello = client.hello().to_wire()
        self.hello = hello
        self.send(hello)
        raw = await self.recv()
        assert raw is not None
        if raw["type"] != "challenge":
            return raw
        auth = client.on_challenge(Challenge.from_wire(raw), raw)
        if tamper is not None:
            auth = tamper(auth)
        self.send(auth.to_wire())
        return await self.recv()


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    c = Central(tmp_path)
    await c.start()
    yield c
    assert c.gateway is not None
    await c.gateway.stop()


@pytest.fixture
async def bystander(central: Central) -> AsyncIterator[LinkClient]:
    """An authorized peer connected before the attacks: it must be served throughout."""
    client = await central.client(central.edge)
    await client.request(SetArgs("s", "k", "v"))
    yield client
    assert (await client.request(GetArgs("s", "k")))["value"] == "v"
    await client.aclose()


async def test_unknown_key_is_refused(central: Central, bystander: LinkClient) -> None:
    with pytest.raises(AuthError) as info:
        await central.client(central.stranger)
    assert info.value.reason == "unknown_key"
    assert await central.metric("iii_gateway_auth_failures_total", reason="unknown_key") == 1


async def test_bad_signature_is_refused(central: Central, bystander: LinkClient) -> None:
    raw = await RawPeer.open(central.port)
    answer = await raw.handshake(central.edge, central.key, tamper=lambda auth: Auth(bytes(64)))
    assert answer == {"type": "close", "code": "UNAUTHORIZED", "reason": "bad_signature"}
    assert await raw.recv() is None
    await raw.aclose()
    assert await central.metric("iii_gateway_auth_failures_total", reason="bad_signature") == 1


async def test_replayed_handshake_is_refused(central: Central, bystander: LinkClient) -> None:
    first = await RawPeer.open(central.port)
    ok = await first.handshake(central.edge, central.key)
    assert ok is not None and ok["type"] == "auth_ok"
    replay = await RawPeer.open(central.port)
    replay.send(first.hello)  # the very same HELLO, nonce included
    assert await replay.until_close() == {"type": "close", "code": "UNAUTHORIZED", "reason": "replay"}
    await first.aclose()
    assert await central.metric("iii_gateway_auth_failures_total", reason="replay") == 1


async def test_expired_timestamp_is_refused(central: Central, bystander: LinkClient) -> None:
    raw = await RawPeer.open(central.port)
    answer = await raw.handshake(central.edge, central.key, wall_clock=lambda: time.time() - 3600)
    assert answer == {"type": "close", "code": "UNAUTHORIZED", "reason": "expired"}
    await raw.aclose()
    assert await central.metric("iii_gateway_auth_failures_total", reason="expired") == 1


async def test_client_refuses_an_upstream_with_another_key(central: Central, bystander: LinkClient) -> None:
    with pytest.raises(AuthError) as info:
        await central.client(central.edge, pinned=central.stranger)
    assert info.value.reason == "bad_server_key"
    # The client refuses before signing anything; the gateway counts the refusal it was sent.
    await eventually(lambda: central.gateway is not None)
    assert await central.metric("iii_gateway_auth_failures_total", reason="bad_server_key") == 1


async def test_forbidden_scopes_per_op_and_for_watch(central: Central, bystander: LinkClient) -> None:
    await bystander.request(SetArgs("secret", "k", 1))
    limited = await central.client(central.limited)
    for args in (GetArgs("secret", "k"), SetArgs("secret", "k", 2)):
        with pytest.raises(ForbiddenError):
            await limited.request(args)

    class Sink:
        def on_event(self, event: WatchEvent) -> None:
            pass

        def on_backlog_end(self, revision: int, epoch: str) -> None:
            pass

        def on_progress(self, revision: int) -> None:
            pass

    denied = limited.watch(WatchArgs(("*",)), Sink())
    with pytest.raises(ForbiddenError):
        await denied.done
    await limited.request(SetArgs("pub-a", "k", 1))  # allowed, and the link is still up
    assert await limited.request(ListGroupsArgs()) == ["pub-a"]  # "s" and "secret" are hidden
    assert await central.metric("iii_gateway_forbidden_total", op="get") == 1
    assert await central.metric("iii_gateway_forbidden_total", op="set") == 1
    assert await central.metric("iii_gateway_forbidden_total", op="watch") == 1
    await limited.aclose()


async def test_frames_over_the_limit_are_refused_before_and_after_the_handshake(
    central: Central, bystander: LinkClient
) -> None:
    early = await RawPeer.open(central.port)
    early.send_bytes((64 * 1024).to_bytes(4, "big"))  # a 64 KiB HELLO: over the pre-auth limit
    close = await early.until_close()
    assert close["code"] == "FRAME_TOO_LARGE"
    late = await RawPeer.open(central.port)
    assert (await late.handshake(central.edge, central.key) or {})["type"] == "auth_ok"
    late.send_bytes((64 * 1024 * 1024).to_bytes(4, "big") + b"x" * 1024)
    assert (await late.until_close())["code"] == "FRAME_TOO_LARGE"
    assert (
        await central.metric("iii_gateway_protocol_errors_total", protocol="link", reason="FRAME_TOO_LARGE")
        == 2
    )
    assert await central.metric("iii_gateway_auth_failures_total", reason="malformed") == 1


async def test_garbage_before_and_after_the_handshake(central: Central, bystander: LinkClient) -> None:
    http = await RawPeer.open(central.port)
    http.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a length of 1 GiB: refused from the header
    assert (await http.until_close())["code"] == "FRAME_TOO_LARGE"
    junk = await RawPeer.open(central.port)
    junk.send_bytes(b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1")  # a small frame that is not msgpack
    assert (await junk.until_close())["code"] == "MALFORMED_FRAME"
    late = await RawPeer.open(central.port)
    assert (await late.handshake(central.edge, central.key) or {})["type"] == "auth_ok"
    late.send_bytes(b"\x00\x00\x00\x03\x93\x01\x02")  # msgpack, but an array, not a frame map
    assert (await late.until_close())["code"] == "MALFORMED_FRAME"
    assert await central.metric("iii_gateway_auth_failures_total", reason="malformed") == 2
    assert (
        await central.metric("iii_gateway_protocol_errors_total", protocol="link", reason="MALFORMED_FRAME")
        == 2
    )


async def test_failed_handshakes_are_rate_limited_per_address(
    central: Central, bystander: LinkClient
) -> None:
    assert central.gateway is not None and central.gateway.link is not None
    central.gateway.link.server.rate_limiter = AuthRateLimiter(burst=2, refill_seconds=3600)
    for _ in range(2):
        with pytest.raises(AuthError):
            await central.client(central.stranger)
    with pytest.raises(AuthError) as info:
        await central.client(central.edge)  # a valid key, but this address used up its budget
    assert info.value.reason == "rate_limited"
    assert await central.metric("iii_gateway_auth_failures_total", reason="rate_limited") == 1


async def test_reloading_peers_revokes_keys_and_applies_new_permissions(central: Central) -> None:
    edge = await central.client(central.edge)
    limited = await central.client(central.limited)
    await limited.request(SetArgs("pub-a", "k", 1))
    central.write_peers([Peer("limited", central.limited, read=["*"], write=[], watch=[])])
    assert central.gateway is not None
    assert central.gateway.reload_peers()
    closed = await asyncio.wait_for(edge.closed, 10)
    assert (closed.code, closed.reason) == ("UNAUTHORIZED", "revoked")
    with pytest.raises(LinkBroken):
        await edge.request(GetArgs("s", "k"))
    with pytest.raises(ForbiddenError):
        await limited.request(SetArgs("pub-a", "k", 2))  # write taken away on the open link
    assert (await limited.request(GetArgs("pub-a", "k")))["value"] == 1
    with pytest.raises(AuthError):
        await central.client(central.edge)
    central.peers_file.write_text("peers: [{name: broken}]")
    assert not central.gateway.reload_peers()  # invalid file: the old peers stay
    assert (await limited.request(GetArgs("pub-a", "k")))["value"] == 1
    await limited.aclose()
    with pytest.raises(GatewayError):
        await limited.request(GetArgs("pub-a", "k"))
