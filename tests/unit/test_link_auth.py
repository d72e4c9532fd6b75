"""Keys, key files, the handshake halves, the replay cache and the auth rate limiter."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.errors import AuthError, ConfigError
from gateway.link.acl import AuthorizedPeer, PeerDirectory, Permissions
from gateway.link.auth import (
    CLIENT_LABEL,
    SERVER_LABEL,
    AuthFailure,
    AuthRateLimiter,
    ClientHandshake,
    ReplayCache,
    ServerHandshake,
    format_public_key,
    generate_private_key,
    load_private_key,
    parse_public_key,
    public_key_bytes,
    save_private_key,
    transcript_hash,
)
from gateway.link.messages import Auth, AuthOk, Challenge, Hello
from tests.helpers.link_pair import WALL_START, DeterministicRandom, FakeClock, fixed_key

# -- keys -----------------------------------------------------------------------------------


def test_public_key_text_round_trips() -> None:
    key = generate_private_key()
    text = format_public_key(key)
    assert text.startswith("ed25519:") and "=" not in text and len(text) == len("ed25519:") + 43
    assert public_key_bytes(parse_public_key(text)) == public_key_bytes(key)
    assert format_public_key(key.public_key()) == text == format_public_key(public_key_bytes(key))
    assert public_key_bytes(parse_public_key(f"  {text}\n")) == public_key_bytes(key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ssh-ed25519 AAAA", "must start with 'ed25519:'"),
        ("ed25519:!!!!", "not valid base64url"),
        ("ed25519:" + "A" * 10, "32 bytes"),
        (42, "must be a string"),
    ],
)
def test_public_key_parse_errors_say_what_is_wrong(text: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_public_key(text)


def test_private_key_file_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = str(tmp_path / "edge.key")
    key = generate_private_key()
    old_umask = os.umask(0)  # even with a permissive umask the file is owner-only
    try:
        save_private_key(key, path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Path(path).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(key)
    assert [p.name for p in tmp_path.iterdir()] == ["edge.key"]  # no temporary left behind


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = str(tmp_path / "k")
    first, second = generate_private_key(), generate_private_key()
    save_private_key(first, path)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_private_key(second, path)
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(first)
    save_private_key(second, path, overwrite=True)
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(second)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_group_or_world_accessible_keys(tmp_path: Path, mode: int) -> None:
    path = str(tmp_path / "k")
    save_private_key(generate_private_key(), path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as info:
        load_private_key(path)
    assert path in info.value.message
    assert f"chmod 600 {path}" in info.value.message
    assert oct(mode)[2:] in info.value.message


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(missing)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(ConfigError, match="PEM") as info:
        load_private_key(str(garbage))
    assert info.value.file == str(garbage)
    other = tmp_path / "x25519"
    other.write_bytes(
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    other.chmod(0o600)
    with pytest.raises(ConfigError, match="expected an Ed25519 key"):
        load_private_key(str(other))
    with pytest.raises(ConfigError, match="not a regular file"):
        load_private_key(str(tmp_path))


# -- the handshake halves -------------------------------------------------------------------

CLIENT, SERVER = fixed_key("c"), fixed_key("s")


def peers(*keys: bytes) -> PeerDirectory:
    return PeerDirectory([AuthorizedPeer(f"p{i}", (k,), Permissions.allow_all()) for i, k in enumerate(keys)])


def client_hs(**kw: Any) -> ClientHandshake:
    args: dict[str, Any] = {
        "private_key": CLIENT,
        "client_id": "edge",
        "server_key": SERVER.public_key(),
        "wall_clock": FakeClock(WALL_START),
        "random_bytes": DeterministicRandom(b"c"),
    }
    return ClientHandshake(**(args | kw))


def server_hs(**kw: Any) -> ServerHandshake:
    args: dict[str, Any] = {
        "private_key": SERVER,
        "server_id": "central",
        "peers": peers(public_key_bytes(CLIENT)),
        "replay_cache": ReplayCache(),
        "wall_clock": FakeClock(WALL_START),
        "random_bytes": DeterministicRandom(b"s"),
    }
    return ServerHandshake(**(args | kw))


def run(client: ClientHandshake, server: ServerHandshake) -> tuple[Hello, Challenge, Auth, AuthOk]:
    hello = client.hello()
    challenge = server.on_hello(hello, hello.to_wire())
    auth = client.on_challenge(challenge, challenge.to_wire())
    ok = server.on_auth(auth)
    client.on_auth_ok(ok)
    return hello, challenge, auth, ok


def refused(reason: AuthFailure) -> Any:
    class _Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            assert isinstance(exc, AuthError), f"expected AuthError({reason}), got {exc!r}"
            assert exc.reason == reason and exc.code == "UNAUTHORIZED"
            return True

    return _Check()


def test_a_successful_handshake_signs_the_shared_transcript() -> None:
    client, server = client_hs(), server_hs()
    hello, challenge, auth, ok = run(client, server)
    transcript = transcript_hash(hello.to_wire(), challenge.to_wire())
    CLIENT.public_key().verify(auth.signature, CLIENT_LABEL + transcript)
    SERVER.public_key().verify(ok.signature, SERVER_LABEL + transcript)
    assert server.peer is not None and server.peer.name == "p0"
    assert ok.permissions == Permissions.allow_all().to_wire()
    assert challenge.version == 1 and len(challenge.session) == 16 and len(challenge.nonce) == 32
    assert hello.nonce != challenge.nonce


def test_signatures_are_domain_separated_by_role() -> None:
    """The client's AUTH signature cannot be passed off as the server's, or vice versa."""
    client, server = client_hs(), server_hs()
    hello, challenge, auth, _ = run(client, server)
    assert auth.signature != CLIENT.sign(SERVER_LABEL + transcript_hash(hello.to_wire(), challenge.to_wire()))


def test_unknown_key_only_after_a_valid_signature() -> None:
    server = server_hs(peers=peers())
    client = client_hs()
    hello = client.hello()
    challenge = server.on_hello(hello, hello.to_wire())  # not refused at HELLO
    auth = client.on_challenge(challenge, challenge.to_wire())
    with refused(AuthFailure.UNKNOWN_KEY):
        server.on_auth(auth)
    with refused(AuthFailure.BAD_SIGNATURE):  # a forger never learns whether the key is known
        server.on_auth(Auth(bytes(64)))


def test_an_auth_from_another_session_does_not_verify() -> None:
    """A signature captured on one connection is useless on another (fresh server nonce)."""
    first_client, first_server = client_hs(), server_hs()
    _, _, captured_auth, _ = run(first_client, first_server)
    second_server = server_hs(random_bytes=DeterministicRandom(b"other"))
    hello = client_hs(random_bytes=DeterministicRandom(b"c2")).hello()
    second_server.on_hello(hello, hello.to_wire())
    with refused(AuthFailure.BAD_SIGNATURE):
        second_server.on_auth(captured_auth)


def test_fields_added_in_transit_break_the_signature() -> None:
    client, server = client_hs(), server_hs()
    hello = client.hello()
    tampered = hello.to_wire() | {"extra": "injected by a proxy"}
    challenge = server.on_hello(Hello.from_wire(tampered), tampered)
    auth = client.on_challenge(challenge, challenge.to_wire())
    with refused(AuthFailure.BAD_SIGNATURE):
        server.on_auth(auth)


def test_replay_needs_the_shared_cache() -> None:
    cache = ReplayCache()
    hello = client_hs().hello()
    server_hs(replay_cache=cache).on_hello(hello, hello.to_wire())
    with refused(AuthFailure.REPLAY):
        server_hs(replay_cache=cache).on_hello(hello, hello.to_wire())
    server_hs().on_hello(hello, hello.to_wire())  # another server's cache: not a replay there


def test_expired_timestamps() -> None:
    late = FakeClock(WALL_START + 30.001)
    with refused(AuthFailure.EXPIRED):
        hello = client_hs().hello()
        server_hs(wall_clock=late).on_hello(hello, hello.to_wire())
    early = FakeClock(WALL_START - 31)
    with refused(AuthFailure.EXPIRED):
        hello = client_hs().hello()
        server_hs(wall_clock=early).on_hello(hello, hello.to_wire())
    hello = client_hs().hello()
    server_hs(wall_clock=FakeClock(WALL_START + 30)).on_hello(hello, hello.to_wire())  # edge: inside


def test_the_client_refuses_a_server_it_did_not_pin() -> None:
    client = client_hs(server_key=fixed_key("other").public_key())
    hello = client.hello()
    challenge = server_hs().on_hello(hello, hello.to_wire())
    with refused(AuthFailure.BAD_SERVER_KEY):
        client.on_challenge(challenge, challenge.to_wire())


def test_the_client_refuses_a_bad_server_signature() -> None:
    client, server = client_hs(), server_hs()
    hello = client.hello()
    challenge = server.on_hello(hello, hello.to_wire())
    client.on_challenge(challenge, challenge.to_wire())
    with refused(AuthFailure.BAD_SIGNATURE):
        client.on_auth_ok(AuthOk(bytes(64), None))


def test_versions_are_negotiated() -> None:
    server = server_hs(versions=(1, 2, 3))
    hello = client_hs(versions=(2, 3, 4)).hello()
    assert server.on_hello(hello, hello.to_wire()).version == 3  # the highest common one
    with refused(AuthFailure.VERSION):
        hello = client_hs(versions=(4,)).hello()
        server_hs().on_hello(hello, hello.to_wire())
    client = client_hs(versions=(1,))
    hello = client.hello()
    bad = Challenge(2, "central", public_key_bytes(SERVER), b"n" * 32, 0, b"s" * 16)
    with refused(AuthFailure.VERSION):
        client.on_challenge(bad, bad.to_wire())


def test_large_permissions_are_left_out_of_auth_ok() -> None:
    many = tuple(f"scope-{i:05}-*" for i in range(400))
    directory = PeerDirectory([AuthorizedPeer("p", (public_key_bytes(CLIENT),), Permissions(read=many))])
    _, _, _, ok = run(client_hs(), server_hs(peers=directory))
    assert ok.permissions is None


# -- replay cache and rate limiter ----------------------------------------------------------


def test_replay_cache_forgets_a_nonce_when_its_window_ends() -> None:
    cache = ReplayCache()
    assert cache.add(b"a", expires_at_ms=1000, now_ms=0)
    assert not cache.add(b"a", expires_at_ms=1000, now_ms=999)
    assert cache.add(b"a", expires_at_ms=2000, now_ms=1000)
    assert len(cache) == 1


def test_replay_cache_is_bounded_and_evicts_the_soonest_to_expire() -> None:
    cache = ReplayCache(max_entries=3)
    for i, expiry in enumerate([50, 10, 30]):
        assert cache.add(bytes([i]), expires_at_ms=expiry, now_ms=0)
    assert cache.add(b"new", expires_at_ms=100, now_ms=0)
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.add(bytes([1]), expires_at_ms=100, now_ms=0)  # the evicted one (expiry 10)
    assert not cache.add(bytes([0]), expires_at_ms=100, now_ms=0)  # still remembered


def test_rate_limiter_allows_a_burst_then_one_per_refill() -> None:
    clock = FakeClock(0.0)
    limiter = AuthRateLimiter(burst=3, refill_seconds=10.0, clock=clock)
    for _ in range(3):
        assert limiter.allow("10.0.0.1")
        limiter.record_failure("10.0.0.1")
    assert not limiter.allow("10.0.0.1")
    assert limiter.allow("10.0.0.2")  # per address
    clock.advance(9.9)
    assert not limiter.allow("10.0.0.1")
    clock.advance(0.1)
    assert limiter.allow("10.0.0.1")
    limiter.record_failure("10.0.0.1")
    assert not limiter.allow("10.0.0.1")


def test_rate_limiter_tracks_a_bounded_number_of_addresses() -> None:
    clock = FakeClock(0.0)
    limiter = AuthRateLimiter(burst=2, refill_seconds=1.0, max_addresses=3, clock=clock)
    for i in range(10):
        limiter.record_failure(f"a{i}")
        limiter.record_failure(f"a{i}")
        assert len(limiter) <= 3
    assert not limiter.allow("a9")  # the most recent offenders are kept
    clock.advance(100)
    limiter.record_failure("b")
    assert len(limiter) <= 3


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        AuthRateLimiter(burst=0)
    with pytest.raises(ValueError):
        ReplayCache(max_entries=0)
