"""The link over TLS 1.3: server authentication, mutual TLS, and the handshake's channel binding.

The upstream's listener is built from ``link.tls`` settings (cert, key, optional client CA); the
Bridge dials ``tls://`` endpoints with ``tls`` settings (CA, optional client certificate). The
Ed25519 handshake signs the hash of the server certificate the client saw, so a TLS proxy in
the middle (with another valid certificate) is refused even though TLS itself succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.bridge import BridgeAdapter
from gateway.config.settings import (
    BridgeSettings,
    ClientTlsSettings,
    Endpoint,
    ServerTlsSettings,
    UpstreamSettings,
)
from gateway.metrics import Metrics
from tests.helpers.federation import (
    ChangeLog,
    InProcessUpstream,
    Peer,
    TlsSet,
    eventually,
    fast_backoff,
    make_tls,
    write_key,
)


@pytest.fixture
def tls(tmp_path: Path) -> TlsSet:
    return make_tls(tmp_path / "tls")


@pytest.fixture
async def cleanup() -> AsyncIterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, BridgeAdapter):
            await thing.close()
        elif isinstance(thing, InProcessUpstream):
            await thing.stop()


async def test_bridge_over_tls_with_a_pinned_key(tmp_path: Path, tls: TlsSet, cleanup: list[object]) -> None:
    edge_key = write_key(tmp_path / "keys", "edge-tls")
    up = InProcessUpstream(
        tmp_path / "central",
        [Peer("edge", edge_key)],
        tls=ServerTlsSettings(str(tls.server_cert), str(tls.server_key)),
    )
    await up.start()
    cleanup.append(up)
    settings = BridgeSettings(
        identity=str(edge_key.path),
        upstreams=(
            UpstreamSettings("central", (up.endpoint(),), up.public, tls=ClientTlsSettings(ca=str(tls.ca))),
        ),
    )
    edge = BridgeAdapter(settings, engine_id="edge", backoff=fast_backoff)
    cleanup.append(edge)
    log = ChangeLog()
    edge.subscribe(log)
    await edge.start()
    assert edge.ready()
    assert edge.upstreams[0].client is not None
    ssl_object = edge.upstreams[0].client.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
    assert ssl_object.version() == "TLSv1.3"
    written = await edge.set("s", "k", 1)
    await log.wait_for(lambda changes: changes and changes[-1].revision == written.revision)


async def test_mutual_tls_requires_a_client_certificate(
    tmp_path: Path, tls: TlsSet, cleanup: list[object]
) -> None:
    edge_key = write_key(tmp_path / "keys", "edge-tls")
    server_tls = ServerTlsSettings(str(tls.server_cert), str(tls.server_key), client_ca=str(tls.ca))
    up = InProcessUpstream(tmp_path / "central", [Peer("edge", edge_key)], tls=server_tls)
    await up.start()
    cleanup.append(up)

    def make(client_tls: ClientTlsSettings) -> tuple[BridgeAdapter, Metrics]:
        settings = BridgeSettings(
            identity=str(edge_key.path),
            upstreams=(UpstreamSettings("central", (up.endpoint(),), up.public, tls=client_tls),),
            timeout_ms=3000,
        )
        metrics = Metrics()
        adapter = BridgeAdapter(settings, engine_id="edge", metrics=metrics, backoff=fast_backoff)
        cleanup.append(adapter)
        return adapter, metrics

    without, metrics = make(ClientTlsSettings(ca=str(tls.ca)))
    await without.start()
    assert not without.ready()
    assert metrics.registry.get_sample_value(
        "iii_gateway_link_connects_total", {"upstream": "central", "result": "unreachable"}
    )
    with_cert, _ = make(ClientTlsSettings(ca=str(tls.ca), cert=str(tls.client_cert), key=str(tls.client_key)))
    await with_cert.start()
    assert with_cert.ready()
    assert (await with_cert.set("s", "k", "mtls")).new_value == "mtls"


async def test_a_tls_proxy_in_the_middle_is_refused(
    tmp_path: Path, tls: TlsSet, cleanup: list[object]
) -> None:
    edge_key = write_key(tmp_path / "keys", "edge-tls")
    up = InProcessUpstream(
        tmp_path / "central",
        [Peer("edge", edge_key)],
        tls=ServerTlsSettings(str(tls.server_cert), str(tls.server_key)),
    )
    await up.start()
    cleanup.append(up)
    # The proxy holds another certificate the edge's CA trusts, and re-encrypts to the upstream.
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    front.load_cert_chain(tls.other_cert, tls.other_key)
    back = ssl.create_default_context(cafile=str(tls.ca))
    pumps: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", up.port, ssl=back)
        for task in (
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ):
            pumps.add(task)
            task.add_done_callback(pumps.discard)

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=front)
    try:
        port = proxy.sockets[0].getsockname()[1]
        settings = BridgeSettings(
            identity=str(edge_key.path),
            upstreams=(
                UpstreamSettings(
                    "central",
                    (Endpoint("tls", "127.0.0.1", port),),
                    up.public,
                    tls=ClientTlsSettings(ca=str(tls.ca)),
                ),
            ),
            timeout_ms=3000,
        )
        metrics = Metrics()
        edge = BridgeAdapter(settings, engine_id="edge", metrics=metrics, backoff=fast_backoff)
        cleanup.append(edge)
        await edge.start()
        assert not edge.ready()
        await eventually(lambda: up.counter("iii_gateway_auth_failures_total", reason="channel_binding") >= 1)
        assert metrics.registry.get_sample_value(
            "iii_gateway_link_connects_total", {"upstream": "central", "result": "channel_binding"}
        )
        await edge.close()
    finally:
        proxy.close()
        for task in list(pumps):
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
