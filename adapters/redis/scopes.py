"""The scope index behind ``list_groups``: a sorted set kept by the write scripts.

Why an index: the reference engine answers ``list_groups`` with ``SCAN state:*`` over the
whole keyspace on every call. Here the write scripts add a scope to ``P scopes`` (score 0, so
ZRANGEBYLEX returns it in bytewise order, as ``list_groups`` must) and the delete script removes
it when the hash becomes empty, so a call reads the index page by page instead.

Two kinds of drift come from writers that do not keep the index (a reference engine sharing
the Redis, an operator's HSET/DEL, FLUSHDB):

* a hash that vanished: every ``groups()`` page is checked by a script that keeps only the
  names whose hash exists and drops the others from the index (atomically, so a scope written
  again meanwhile is never dropped);
* a hash created by someone else: found by :meth:`ScopeIndex.reconcile_page`, a ``SCAN MATCH
  state:* TYPE hash`` page whose names are added to the index. The adapter runs full passes in
  the background (at start, then every ``reconcile_interval``) and on demand; never on a request.
"""

from __future__ import annotations

from adapters.redis import scripts as lua
from adapters.redis.connection import Arg, RedisExecutor
from adapters.redis.scripts import KeyLayout

__all__ = ["ScopeIndex"]


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class ScopeIndex:
    """Reads and repairs ``P scopes``; callers bound each call with their deadline."""

    def __init__(self, executor: RedisExecutor, layout: KeyLayout, *, page: int = 1000) -> None:
        self._exec = executor
        self._keys = layout
        self.page = page

    async def groups(self) -> list[str]:
        """Every indexed scope whose hash exists, bytewise sorted; vanished ones are dropped."""
        groups: list[str] = []
        start = b"-"
        while True:
            names = await self._exec.call(
                "ZRANGEBYLEX", self._keys.scopes, start, b"+", "LIMIT", 0, self.page
            )
            if not names:
                return groups
            keys = [self._keys.scopes]
            for raw in names:
                scope = _name(raw)
                keys += [self._keys.scope_hash(scope), self._keys.key_revisions(scope)]
            live = await self._exec.run_script(lua.PRUNE_SCOPES, keys, names, write=False)
            groups += [_name(raw) for raw in live]
            if len(names) < self.page:
                return groups
            start = b"(" + names[-1]

    async def reconcile_page(self, cursor: int) -> tuple[int, int]:
        """One SCAN page: index the ``state:*`` hashes found. Returns (next cursor, found);
        a pass is done when the cursor comes back as 0."""
        next_cursor, names = await self._exec.call(
            "SCAN", cursor, "MATCH", lua.SCOPE_HASH_PREFIX + b"*", "COUNT", self.page, "TYPE", "hash"
        )
        if names:
            members: list[Arg] = []
            for raw in names:
                members += [0, raw[len(lua.SCOPE_HASH_PREFIX) :]]
            await self._exec.call("ZADD", self._keys.scopes, *members)
        return int(next_cursor), len(names)
