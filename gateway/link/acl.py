"""Scope authorization for link peers: who may read, write and watch which scopes.

Modelled on Redis ACL key patterns: each authorized peer has three lists of glob patterns over
scope names, one per :class:`Action`. A pattern has two wildcards, ``*`` (any run of characters,
also none) and ``?`` (exactly one character); every other character is literal, so ``*`` alone
means "all scopes" and an empty list means "nothing".

**Pattern requests** (``watch`` and ``snapshot`` take scope *patterns*, not scopes) are allowed
only when every scope the requested pattern can match is allowed. Deciding that exactly is
regular-language inclusion; we use a simpler, *sound* relation instead and call it coverage:
``allowed`` covers ``requested`` when ``requested`` can be read as a specialisation of
``allowed`` symbol by symbol -

- a literal in ``allowed`` must meet the same literal in ``requested``;
- a ``?`` in ``allowed`` must meet one literal or ``?`` (never ``*``, which may match nothing or
  many characters);
- a ``*`` in ``allowed`` may absorb any run of ``requested``'s symbols, wildcards included.

So ``orders:*`` covers ``orders:*``, ``orders:eu-*`` and ``orders:??``, and not ``order*`` or
``*``. Soundness (coverage implies every matched scope is allowed) is property-tested; the
relation is not complete (``?*`` does not cover ``*a`` although both need one character), which
can only refuse, never over-grant. A request is allowed when *one* allowed pattern covers it.

The authorized-peers file maps keys to these lists::

    peers:                       # or the list itself at top level
      - name: edge-1
        public_key: ed25519:...  # or public_keys: [...] while rotating keys
        read: ["*"]
        write: ["orders:*"]
        watch: ["orders:*"]
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from gateway.errors import ConfigError, ForbiddenError
from gateway.link.auth import parse_public_key, public_key_bytes
from gateway.link.requests import (
    DeleteArgs,
    GetArgs,
    ItemsArgs,
    ListArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
    WatchArgs,
)

__all__ = [
    "Action",
    "AuthorizedPeer",
    "PeerDirectory",
    "Permissions",
    "glob_match",
    "load_authorized_peers",
    "parse_authorized_peers",
    "pattern_covers",
]


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    WATCH = "watch"


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def glob_match(pattern: str, scope: str) -> bool:
    """True when ``scope`` matches ``pattern`` (``*`` any run, ``?`` one character)."""
    if pattern == "*":
        return True
    return _compile(pattern).fullmatch(scope) is not None


def pattern_covers(allowed: str, requested: str) -> bool:
    """True when ``allowed`` covers ``requested`` (module docstring): a sound inclusion test."""
    if allowed == requested or allowed == "*":
        return True
    n, m = len(allowed), len(requested)
    # cov[j] for the current i holds covers(allowed[i:], requested[j:]); filled from i = n down.
    nxt = [False] * (m + 1)
    nxt[m] = True  # empty covers empty only
    for i in range(n - 1, -1, -1):
        a = allowed[i]
        cur = [False] * (m + 1)
        if a == "*":
            cur[m] = nxt[m]
            for j in range(m - 1, -1, -1):
                cur[j] = nxt[j] or cur[j + 1]
        else:
            for j in range(m - 1, -1, -1):
                r = requested[j]
                # "?" takes one literal or "?"; a literal takes only itself.
                ok = r != "*" if a == "?" else r == a
                cur[j] = ok and nxt[j + 1]
        nxt = cur
    return nxt[0]


@dataclass(frozen=True, slots=True)
class Permissions:
    """The scope patterns one peer may read, write and watch."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()

    @classmethod
    def allow_all(cls) -> Permissions:
        return cls(read=("*",), write=("*",), watch=("*",))

    def patterns(self, action: Action) -> tuple[str, ...]:
        if action is Action.READ:
            return self.read
        if action is Action.WRITE:
            return self.write
        return self.watch

    def allows(self, action: Action, scope: str) -> bool:
        """May this peer do ``action`` on ``scope``?"""
        return any(glob_match(p, scope) for p in self.patterns(action))

    def allows_pattern(self, action: Action, pattern: str) -> bool:
        """May this peer do ``action`` on every scope ``pattern`` can match? (conservative)"""
        return any(pattern_covers(p, pattern) for p in self.patterns(action))

    def check(self, args: RequestArgs) -> ForbiddenError | None:
        """The refusal of a request by these permissions, or None when it is allowed.

        ``list_groups``, ``ping`` and ``info`` need no scope permission; the server must filter
        ``list_groups`` results with :meth:`allows` (``read``).
        """
        if isinstance(args, GetArgs | ListArgs | ItemsArgs):
            return self._scope(Action.READ, args.OP, args.scope)
        if isinstance(args, SetArgs | DeleteArgs | UpdateArgs):
            return self._scope(Action.WRITE, args.OP, args.scope)
        if isinstance(args, WatchArgs):
            return self._patterns(Action.WATCH, args.OP, args.patterns)
        if isinstance(args, SnapshotArgs):
            return self._patterns(Action.READ, args.OP, args.patterns)
        return None

    def _scope(self, action: Action, op: str, scope: str) -> ForbiddenError | None:
        if self.allows(action, scope):
            return None
        return ForbiddenError(f"{op}: this peer may not {action} scope {scope!r:.200}")

    def _patterns(self, action: Action, op: str, patterns: Iterable[str]) -> ForbiddenError | None:
        for pattern in patterns:
            if not self.allows_pattern(action, pattern):
                return ForbiddenError(
                    f"{op}: this peer may not {action} every scope matching {pattern!r:.200}"
                )
        return None

    def to_wire(self) -> dict[str, list[str]]:
        return {"read": list(self.read), "write": list(self.write), "watch": list(self.watch)}

    @classmethod
    def from_wire(cls, perms: Mapping[str, list[str]]) -> Permissions:
        """From an AUTH_OK ``perms`` map (types already checked); unknown actions ignored."""
        return cls(
            read=tuple(perms.get("read", ())),
            write=tuple(perms.get("write", ())),
            watch=tuple(perms.get("watch", ())),
        )


@dataclass(frozen=True, slots=True)
class AuthorizedPeer:
    """One entry of the authorized-peers file: a name, its keys (raw bytes), its permissions."""

    name: str
    keys: tuple[bytes, ...]
    permissions: Permissions


class PeerDirectory:
    """Authorized peers by raw public key. Immutable: reload by building a new one."""

    def __init__(self, peers: Iterable[AuthorizedPeer] = ()) -> None:
        self.peers: tuple[AuthorizedPeer, ...] = tuple(peers)
        self._by_key: dict[bytes, AuthorizedPeer] = {}
        for peer in self.peers:
            for key in peer.keys:
                if key in self._by_key:
                    raise ValueError(f"key appears twice ({self._by_key[key].name!r} and {peer.name!r})")
                self._by_key[key] = peer

    def lookup(self, key: bytes) -> AuthorizedPeer | None:
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self.peers)


_ENTRY_KEYS: Final = frozenset({"name", "public_key", "public_keys", *(a.value for a in Action)})


def _patterns_of(entry: Mapping[str, Any], action: Action, where: str, file: str | None) -> tuple[str, ...]:
    value = entry.get(action.value, [])
    if value is None:
        value = []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError("must be a list of scope patterns (strings)", file=file, key=f"{where}.{action}")
    return tuple(value)


def _keys_of(entry: Mapping[str, Any], where: str, file: str | None) -> tuple[bytes, ...]:
    if ("public_key" in entry) == ("public_keys" in entry):
        raise ConfigError("needs exactly one of public_key or public_keys", file=file, key=where)
    field = "public_key" if "public_key" in entry else "public_keys"
    texts = entry[field]
    if field == "public_key":
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise ConfigError("must be a non-empty list of public keys", file=file, key=f"{where}.{field}")
    keys = []
    for text in texts:
        try:
            keys.append(public_key_bytes(parse_public_key(text)))
        except ValueError as exc:
            raise ConfigError(str(exc), file=file, key=f"{where}.{field}") from None
    return tuple(keys)


def parse_authorized_peers(data: Any, *, file: str | None = None) -> PeerDirectory:
    """Validate an authorized-peers structure (as loaded from YAML) into a directory.

    Errors are :class:`ConfigError` naming the file, the entry (by index and name) and the key.
    Names and keys must be unique.
    """
    if isinstance(data, Mapping):
        unknown = set(data) - {"peers"}
        if unknown:
            raise ConfigError(f"unknown key {sorted(map(str, unknown))[0]!r}", file=file)
        data = data.get("peers")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConfigError("must be a list of peers", file=file, key="peers")
    peers: list[AuthorizedPeer] = []
    names: set[str] = set()
    owners: dict[bytes, str] = {}
    for index, entry in enumerate(data):
        where = f"peers[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError("must be a mapping with name and public_key", file=file, key=where)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("must be a non-empty string", file=file, key=f"{where}.name")
        where = f"peers[{index}] ({name})"
        extra = sorted(str(k) for k in entry if k not in _ENTRY_KEYS)
        if extra:
            raise ConfigError(f"unknown key {extra[0]!r}", file=file, key=where)
        if name in names:
            raise ConfigError(f"duplicate peer name {name!r}", file=file, key=f"{where}.name")
        names.add(name)
        keys = _keys_of(entry, where, file)
        for key in keys:
            if key in owners:
                raise ConfigError(f"key already belongs to peer {owners[key]!r}", file=file, key=where)
            owners[key] = name
        perms = Permissions(
            read=_patterns_of(entry, Action.READ, where, file),
            write=_patterns_of(entry, Action.WRITE, where, file),
            watch=_patterns_of(entry, Action.WATCH, where, file),
        )
        peers.append(AuthorizedPeer(name=name, keys=keys, permissions=perms))
    return PeerDirectory(peers)


def load_authorized_peers(path: str) -> PeerDirectory:
    """Read and validate an authorized-peers YAML file (ConfigError naming the file on failure)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the authorized peers: {exc.strerror}", file=path) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=path) from exc
    return parse_authorized_peers(data, file=path)
