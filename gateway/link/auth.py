"""Keys and the mutual Ed25519 handshake of the federation link (pure apart from key files).

Why this design (``reference/anchors.md`` section 5): NATS NKEYs sign only a server nonce, so a
relay in the middle can forward the signature. Here both sides contribute 32 fresh random bytes,
both sign a hash of the *whole* handshake (both nonces, both keys, both ids, the times, the TLS
certificate hash the client saw), each under its own domain-separation label, so a signature is
worthless on any other connection, for any other role, or in any other protocol::

    C -> S  HELLO      {v: [1], client_id, client_pub, nc: 32 B, t: unix ms, ch: sha256(cert) | nil}
    S -> C  CHALLENGE  {v, server_id, server_pub, ns: 32 B, t, session: 16 B}
    transcript = sha256(b"iii-gateway/link/v1\\0" + canonical(HELLO) + canonical(CHALLENGE))
    C -> S  AUTH       {sig: sign_client(b"iii-gateway/link/v1/client\\0" + transcript)}
    S -> C  AUTH_OK    {sig: sign_server(b"iii-gateway/link/v1/server\\0" + transcript), perms}

The client refuses a CHALLENGE whose ``server_pub`` is not its pinned upstream key *before*
signing anything, and verifies AUTH_OK against that key, so it authenticates the server too.
The server checks, at HELLO: a common version, ``|t - now| <= window``, that ``nc`` was not seen
in the window (replay cache), the channel binding; at AUTH: the signature, *then* that the key
is an authorized peer. Checking authorization after the signature means only the holder of a
private key learns whether its key is authorized.

Failures are :class:`gateway.errors.AuthError` with ``reason`` from :class:`AuthFailure`, a
bounded set used as the ``reason`` label of ``iii_gateway_auth_failures_total``.

Keys: private keys are PKCS#8 PEM files written 0600 and refused at load when group or others
can read them; public keys are text ``ed25519:<base64url of the 32 raw bytes>``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import heapq
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import AuthError, ConfigError
from gateway.link.frames import HEADER_SIZE, PRE_AUTH_MAX_FRAME_SIZE, canonical_pack
from gateway.link.messages import (
    NONCE_SIZE,
    PROTOCOL_VERSIONS,
    SESSION_SIZE,
    Auth,
    AuthOk,
    Challenge,
    Hello,
)

if TYPE_CHECKING:
    from gateway.link.acl import AuthorizedPeer, PeerDirectory

__all__ = [
    "CLIENT_LABEL",
    "DEFAULT_WINDOW_MS",
    "PUBLIC_KEY_PREFIX",
    "SERVER_LABEL",
    "TRANSCRIPT_LABEL",
    "AuthFailure",
    "AuthRateLimiter",
    "ClientHandshake",
    "ReplayCache",
    "ServerHandshake",
    "format_public_key",
    "generate_private_key",
    "load_private_key",
    "parse_public_key",
    "public_key_bytes",
    "save_private_key",
    "transcript_hash",
]

TRANSCRIPT_LABEL: Final = b"iii-gateway/link/v1\0"
CLIENT_LABEL: Final = b"iii-gateway/link/v1/client\0"
SERVER_LABEL: Final = b"iii-gateway/link/v1/server\0"
PUBLIC_KEY_PREFIX: Final = "ed25519:"
DEFAULT_WINDOW_MS: Final = 30_000
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")

WallClock = Callable[[], float]  # unix seconds (time.time)
RandomBytes = Callable[[int], bytes]  # secrets.token_bytes


class AuthFailure(enum.StrEnum):
    """Why a handshake was refused; the values are metric labels and the ``Close`` reason."""

    UNKNOWN_KEY = "unknown_key"  # signature fine, key not in authorized peers
    BAD_SIGNATURE = "bad_signature"  # a transcript signature did not verify
    REPLAY = "replay"  # HELLO nonce already seen inside the window
    EXPIRED = "expired"  # HELLO timestamp outside the window (clock skew or replay)
    BAD_SERVER_KEY = "bad_server_key"  # client side: upstream is not the pinned key
    VERSION = "version"  # no common protocol version
    MALFORMED = "malformed"  # a handshake frame was invalid
    TIMEOUT = "timeout"  # the handshake did not finish in time
    RATE_LIMITED = "rate_limited"  # too many failures from this address
    CHANNEL_BINDING = "channel_binding"  # client saw another TLS certificate than ours
    DENIED = "denied"  # the peer refused without a reason we know


# -- keys ---------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh identity key (from the OS CSPRNG)."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a public key (of a private key's public half)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def format_public_key(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """``ed25519:<base64url, no padding>``: the text form for config files and the CLI."""
    raw = key if isinstance(key, bytes) else public_key_bytes(key)
    return PUBLIC_KEY_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key of ``ed25519:<base64url>`` text; ValueError saying what is wrong otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a public key must be a string like '{PUBLIC_KEY_PREFIX}<base64url>'")
    text = text.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"a public key must start with '{PUBLIC_KEY_PREFIX}'")
    body = text[len(PUBLIC_KEY_PREFIX) :].rstrip("=")
    if not _BASE64URL.fullmatch(body):
        raise ValueError("the public key is not valid base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("the public key is not valid base64url") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one decodes to {len(raw)}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("the public key is not a valid Ed25519 key") from None


def save_private_key(key: Ed25519PrivateKey, path: str, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM readable by the owner only (mode 0600).

    The file is created with mode 0600 from the start (never world-readable, not even briefly)
    and written to a temporary name then renamed, so a crash leaves no half-written key.
    Refuses to replace an existing file unless ``overwrite``.
    """
    if not overwrite and os.path.lexists(path):
        raise ConfigError("file exists; refusing to overwrite a private key", file=path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # the umask can only remove bits; make the mode exact
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Read a private key file, refusing it when group or others may read or write it.

    Raises :class:`ConfigError` naming the file: missing, unreadable, too open (with the
    ``chmod`` that fixes it), or not an Ed25519 PKCS#8 PEM key.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the private key: {exc.strerror}", file=path) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("the private key is not a regular file", file=path)
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(
            f"the private key is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}",
            file=path,
        )
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the private key: {exc.strerror}", file=path) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("not an unencrypted PEM private key", file=path) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"expected an Ed25519 key, found {type(key).__name__}", file=path)
    return key


# -- replay cache and rate limiter --------------------------------------------------------


class ReplayCache:
    """The HELLO nonces seen while their timestamp is still inside the window.

    A nonce with timestamp ``t`` can only pass the window check until ``t + window``, so it is
    kept exactly that long (``expires_at_ms``). One cache is shared by every connection of a
    server. Bounded: when full, the entry closest to expiry is evicted and counted. That trades
    replay *early rejection* for availability under a flood; it cannot make a replay succeed,
    because the server's fresh nonce is in the signed transcript.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.evictions = 0
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, nonce: bytes, expires_at_ms: int, now_ms: int) -> bool:
        """Record ``nonce``; False if it is already recorded and not expired (a replay)."""
        self._purge(now_ms)
        if nonce in self._expiry:
            return False
        while len(self._expiry) >= self.max_entries:
            _, old = heapq.heappop(self._heap)
            del self._expiry[old]
            self.evictions += 1
        self._expiry[nonce] = expires_at_ms
        heapq.heappush(self._heap, (expires_at_ms, nonce))
        return True

    def _purge(self, now_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, nonce = heapq.heappop(heap)
            del self._expiry[nonce]


class AuthRateLimiter:
    """A token bucket of failed handshakes per remote address (pure; clock injected).

    Each address may fail ``burst`` times, then one more time per ``refill_seconds``. The server
    asks :meth:`allow` when a connection arrives (refusing it with ``rate_limited`` when False)
    and calls :meth:`record_failure` after each refused handshake. At most ``max_addresses`` are
    tracked; full buckets are forgotten first (they are the same as absent), then the least
    recently failing ones.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        refill_seconds: float = 6.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or refill_seconds <= 0 or max_addresses < 1:
            raise ValueError("burst, refill_seconds and max_addresses must be positive")
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        entry = self._buckets.get(address)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(float(self.burst), tokens + (now - at) / self.refill_seconds)

    def allow(self, address: str) -> bool:
        """True when ``address`` may try a handshake now."""
        return self._tokens(address, self._clock()) >= 1.0

    def record_failure(self, address: str) -> None:
        now = self._clock()
        tokens = max(0.0, self._tokens(address, now) - 1.0)
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens, now)  # re-insert: dict order = least recent first
        if len(self._buckets) > self.max_addresses:
            self._shrink(now)

    def _shrink(self, now: float) -> None:
        for addr in [a for a in self._buckets if self._tokens(a, now) >= self.burst]:
            del self._buckets[addr]
        while len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


# -- the handshake ------------------------------------------------------------------------


def transcript_hash(hello: Mapping[str, Any], challenge: Mapping[str, Any]) -> bytes:
    """sha256 over the label and the canonical encodings of the two raw handshake maps."""
    return hashlib.sha256(TRANSCRIPT_LABEL + canonical_pack(hello) + canonical_pack(challenge)).digest()


def _now_ms(wall_clock: WallClock) -> int:
    return int(wall_clock() * 1000)


class ClientHandshake:
    """The client half: builds HELLO and AUTH, checks CHALLENGE and AUTH_OK.

    ``server_key`` is the pinned upstream key from the Bridge config; the handshake fails with
    ``bad_server_key`` if the server presents anything else.
    """

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        client_id: str,
        server_key: Ed25519PublicKey,
        cert_hash: bytes | None = None,
        versions: tuple[int, ...] = PROTOCOL_VERSIONS,
        wall_clock: WallClock = time.time,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self._key = private_key
        self._server_key = server_key
        self._server_key_raw = public_key_bytes(server_key)
        self.client_id = client_id
        self.cert_hash = cert_hash
        self.versions = versions
        self._wall_clock = wall_clock
        self._random_bytes = random_bytes
        self._hello_wire: dict[str, Any] | None = None
        self._transcript: bytes | None = None
        self.challenge: Challenge | None = None

    def hello(self, max_frame_size: int | None = None) -> Hello:
        """The HELLO to send first (a fresh nonce each call); advertises our receive limit."""
        hello = Hello(
            versions=self.versions,
            client_id=self.client_id,
            client_pub=public_key_bytes(self._key),
            nonce=self._random_bytes(NONCE_SIZE),
            timestamp_ms=_now_ms(self._wall_clock),
            cert_hash=self.cert_hash,
            max_frame_size=max_frame_size,
        )
        self._hello_wire = hello.to_wire()
        return hello

    def on_challenge(self, challenge: Challenge, raw: Mapping[str, Any]) -> Auth:
        """Check the CHALLENGE (``raw`` is its frame, hashed as received) and sign the transcript."""
        if self._hello_wire is None:
            raise RuntimeError("on_challenge() before hello()")
        if challenge.version not in self.versions:
            raise AuthError(
                f"the server chose protocol version {challenge.version}, we speak {list(self.versions)}",
                reason=AuthFailure.VERSION,
            )
        if challenge.server_pub != self._server_key_raw:
            raise AuthError(
                f"the upstream presented key {format_public_key(challenge.server_pub)}, "
                f"not the pinned {format_public_key(self._server_key_raw)}",
                reason=AuthFailure.BAD_SERVER_KEY,
            )
        self.challenge = challenge
        self._transcript = transcript_hash(self._hello_wire, raw)
        return Auth(signature=self._key.sign(CLIENT_LABEL + self._transcript))

    def on_auth_ok(self, ok: AuthOk) -> None:
        """Verify the server's signature with the pinned key; AuthError(bad_signature) if not."""
        if self._transcript is None:
            raise RuntimeError("on_auth_ok() before on_challenge()")
        try:
            self._server_key.verify(ok.signature, SERVER_LABEL + self._transcript)
        except InvalidSignature:
            raise AuthError(
                "the upstream's handshake signature does not verify", reason=AuthFailure.BAD_SIGNATURE
            ) from None


class ServerHandshake:
    """The server half: checks HELLO and AUTH, builds CHALLENGE and AUTH_OK.

    ``peers`` is the authorized-peers directory (swap in a new one to reload the file; each
    connection reads it once, at AUTH). ``replay_cache`` must be shared by all connections of a
    server. ``cert_hash`` is the sha256 of our TLS certificate when the link runs over TLS.
    """

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        server_id: str,
        peers: PeerDirectory,
        replay_cache: ReplayCache,
        window_ms: int = DEFAULT_WINDOW_MS,
        cert_hash: bytes | None = None,
        versions: tuple[int, ...] = PROTOCOL_VERSIONS,
        wall_clock: WallClock = time.time,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self._key = private_key
        self.server_id = server_id
        self._peers = peers
        self._replay = replay_cache
        self.window_ms = window_ms
        self.cert_hash = cert_hash
        self.versions = versions
        self._wall_clock = wall_clock
        self._random_bytes = random_bytes
        self._transcript: bytes | None = None
        self.hello: Hello | None = None
        self.challenge: Challenge | None = None
        self.peer: AuthorizedPeer | None = None

    def on_hello(self, hello: Hello, raw: Mapping[str, Any], max_frame_size: int | None = None) -> Challenge:
        """Check HELLO (version, time window, replay, channel binding) and build CHALLENGE.

        ``raw`` is the HELLO frame as received (it is hashed as is); ``max_frame_size`` is our
        receive limit, advertised in CHALLENGE.
        """
        common = set(hello.versions) & set(self.versions)
        if not common:
            raise AuthError(
                f"no common protocol version (client {list(hello.versions)}, server {list(self.versions)})",
                reason=AuthFailure.VERSION,
            )
        now = _now_ms(self._wall_clock)
        if abs(hello.timestamp_ms - now) > self.window_ms:
            raise AuthError(
                f"handshake timestamp is {(hello.timestamp_ms - now) / 1000:+.1f} s from the server clock "
                f"(window {self.window_ms / 1000:.0f} s)",
                reason=AuthFailure.EXPIRED,
            )
        if not self._replay.add(hello.nonce, hello.timestamp_ms + self.window_ms, now):
            raise AuthError("handshake nonce already used", reason=AuthFailure.REPLAY)
        if hello.cert_hash is not None and self.cert_hash is not None and hello.cert_hash != self.cert_hash:
            raise AuthError(
                "the client saw a different TLS certificate (a TLS proxy in between?)",
                reason=AuthFailure.CHANNEL_BINDING,
            )
        challenge = Challenge(
            version=max(common),
            server_id=self.server_id,
            server_pub=public_key_bytes(self._key),
            nonce=self._random_bytes(NONCE_SIZE),
            timestamp_ms=now,
            session=self._random_bytes(SESSION_SIZE),
            max_frame_size=max_frame_size,
        )
        self.hello = hello
        self.challenge = challenge
        self._transcript = transcript_hash(raw, challenge.to_wire())
        return challenge

    def on_auth(self, auth: Auth) -> AuthOk:
        """Verify the client's signature, then its authorization; sign AUTH_OK."""
        if self.hello is None or self._transcript is None:
            raise RuntimeError("on_auth() before on_hello()")
        try:
            client_key = Ed25519PublicKey.from_public_bytes(self.hello.client_pub)
            client_key.verify(auth.signature, CLIENT_LABEL + self._transcript)
        except (InvalidSignature, ValueError):
            raise AuthError(
                "the client's handshake signature does not verify", reason=AuthFailure.BAD_SIGNATURE
            ) from None
        peer = self._peers.lookup(self.hello.client_pub)
        if peer is None:
            raise AuthError(
                f"key {format_public_key(self.hello.client_pub)} is not an authorized peer",
                reason=AuthFailure.UNKNOWN_KEY,
            )
        self.peer = peer
        signature = self._key.sign(SERVER_LABEL + self._transcript)
        ok = AuthOk(signature=signature, permissions=peer.permissions.to_wire())
        if len(canonical_pack(ok.to_wire())) > PRE_AUTH_MAX_FRAME_SIZE - HEADER_SIZE:
            ok = AuthOk(signature=signature, permissions=None)  # the client could not read it
        return ok
