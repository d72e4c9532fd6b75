"""Two sans-IO link ends wired together, with fake clocks and deterministic randomness.

Like h11's ``ConnectionPair``: ``LinkPair`` holds a client and a server ``LinkConnection``
whose bytes are carried by hand (``pump``), so a test can drive a whole conversation, or stop
between any two frames and tamper with them, without sockets or an event loop.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.link import (
    NEED_DATA,
    AuthorizedPeer,
    ClientHandshake,
    HandshakeComplete,
    LinkConnection,
    LinkEvent,
    PeerDirectory,
    Permissions,
    ReplayCache,
    ServerHandshake,
    State,
    public_key_bytes,
)

WALL_START = 1_700_000_000.0  # a fixed "now" for handshake timestamps (unix seconds)


class FakeClock:
    """A clock that moves only when told (monotonic or wall, depending on the start)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DeterministicRandom:
    """``random_bytes(n)`` from a seeded hash chain: same seed, same nonces and sessions."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._seed + str(next(self._counter)).encode()).digest()
        return out[:n]


def fixed_key(seed: str) -> Ed25519PrivateKey:
    """A deterministic private key (tests only: the seed is public)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def drain(conn: LinkConnection) -> list[LinkEvent]:
    """Every event ``conn`` can produce from what it has buffered."""
    events: list[LinkEvent] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


class LinkPair:
    """A client and a server connection with their keys, clocks and peer directory."""

    def __init__(
        self,
        *,
        permissions: Permissions | None = None,
        authorize_client: bool = True,
        pinned_server_key: Ed25519PrivateKey | None = None,
        client_versions: tuple[int, ...] = (1,),
        server_versions: tuple[int, ...] = (1,),
        replay_cache: ReplayCache | None = None,
        client_kwargs: dict[str, Any] | None = None,
        server_kwargs: dict[str, Any] | None = None,
        client_hs_kwargs: dict[str, Any] | None = None,
        server_hs_kwargs: dict[str, Any] | None = None,
        seed: str = "pair",
    ) -> None:
        self.clock = FakeClock()
        self.client_wall = FakeClock(WALL_START)
        self.server_wall = FakeClock(WALL_START)
        self.client_key = fixed_key("client")
        self.server_key = fixed_key("server")
        self.permissions = permissions if permissions is not None else Permissions.allow_all()
        peers = [AuthorizedPeer("edge-1", (public_key_bytes(self.client_key),), self.permissions)]
        self.peers = PeerDirectory(peers if authorize_client else [])
        self.replay_cache = replay_cache if replay_cache is not None else ReplayCache()
        pinned = pinned_server_key if pinned_server_key is not None else self.server_key
        self.client_handshake = ClientHandshake(
            private_key=self.client_key,
            client_id="edge-1",
            server_key=pinned.public_key(),
            versions=client_versions,
            wall_clock=self.client_wall,
            random_bytes=DeterministicRandom(f"{seed}/client".encode()),
            **(client_hs_kwargs or {}),
        )
        self.server_handshake = ServerHandshake(
            private_key=self.server_key,
            server_id="central",
            peers=self.peers,
            replay_cache=self.replay_cache,
            versions=server_versions,
            wall_clock=self.server_wall,
            random_bytes=DeterministicRandom(f"{seed}/server".encode()),
            **(server_hs_kwargs or {}),
        )
        self.client = LinkConnection(self.client_handshake, clock=self.clock, **(client_kwargs or {}))
        self.server = LinkConnection(self.server_handshake, clock=self.clock, **(server_kwargs or {}))

    def to_server(self, tamper: Callable[[bytes], bytes] | None = None) -> list[LinkEvent]:
        """Carry the client's pending bytes to the server; the server's events."""
        data = self.client.data_to_send()
        if tamper is not None:
            data = tamper(data)
        if data:
            self.server.receive_data(data)
        return drain(self.server) if self.server.state is not State.CONNECTING else []

    def to_client(self, tamper: Callable[[bytes], bytes] | None = None) -> list[LinkEvent]:
        """Carry the server's pending bytes to the client; the client's events."""
        data = self.server.data_to_send()
        if tamper is not None:
            data = tamper(data)
        if data:
            self.client.receive_data(data)
        return drain(self.client) if self.client.state is not State.CONNECTING else []

    def pump(self) -> tuple[list[LinkEvent], list[LinkEvent]]:
        """Carry bytes both ways until neither side has any; (client events, server events)."""
        client_events: list[LinkEvent] = []
        server_events: list[LinkEvent] = []
        for _ in range(100):
            server_events += self.to_server()
            client_events += self.to_client()
            if (
                not self.client.statistics()["outbound_bytes"]
                and not self.server.statistics()["outbound_bytes"]
            ):
                return client_events, server_events
        raise AssertionError("the two ends kept talking for 100 rounds")

    def start(self) -> None:
        self.client.start()
        self.server.start()

    def handshake(self) -> tuple[HandshakeComplete, HandshakeComplete]:
        """Run the whole handshake; (what the client learned, what the server learned)."""
        self.start()
        client_events, server_events = self.pump()
        assert self.client.state is State.OPEN, client_events
        assert self.server.state is State.OPEN, server_events
        [client_done] = client_events
        [server_done] = server_events
        assert isinstance(client_done, HandshakeComplete)
        assert isinstance(server_done, HandshakeComplete)
        return client_done, server_done
