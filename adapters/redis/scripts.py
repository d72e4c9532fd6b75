"""The Redis key layout and the Lua scripts that make each write one atomic step.

Layout (``P`` is ``RedisSettings.key_prefix``, default ``iii-gateway:``)::

    state:<scope>        hash   field = key, value = compact JSON text   (the reference layout)
    P revision           string INCR counter: the store revision
    P epoch              string random id, SET NX at first use: the store identity
    P events             stream one entry per write, id ``<revision>-0``, MAXLEN ~ stream_max_len
    P scopes             zset   every scope that holds keys, score 0 (so ZRANGE is bytewise order)
    P rev:<scope>        hash   field = key, value = revision of the last gateway write of that key
    P cursor:<engine_id> string ``<epoch>:<revision>``: the last event that engine delivered

Why each piece is there:

* The values stay exactly where and how the reference engine keeps them, so both engines can
  share one Redis; nothing of ours matches ``SCAN state:*`` (the prefix must not start with
  ``state:``; the adapter refuses such a prefix).
* A write script does, in one atomic step: check the epoch, read the old value, INCR the
  revision, write the value and its per-key revision, keep the scope index, and XADD the change
  event. The event stream therefore holds every revision exactly once, contiguous, and a reader
  can tell a trimmed history (a jump in ids) from a quiet one.
* Values are opaque strings to Lua. Scripts never decode or encode JSON, so what Python wrote
  (large integers, empty arrays, key order) is what every reader gets. Update ops run in Python
  (``gateway.state.ops.apply_ops``); Lua only does the compare-and-set of the stored text.
* Scripts reject a write when ``P epoch`` is not the epoch the caller knows (the reply is an
  ``EPOCH`` error): after a FLUSHALL or a Redis that lost its data the counter restarts, and a
  write must not mix revisions of two histories. The adapter then adopts the new epoch and retries.

Order inside a write script: reads first, then INCR, then XADD, then the data writes. Redis
refuses the first write of a script when it is out of memory, so OOM stops a script before it
changes anything; the XADD is the only later command that can fail (someone added an entry
with a larger id to the stream), and then only a revision number is burned (readers count it
as a missed event), never a value changed without its event.

Event entry: one field ``m``, a msgpack array of six strings ``[kind, scope, key, old, new,
origin]``: kind ``c`` created, ``u`` updated, ``d`` deleted; old JSON text (empty: the key did
not exist); new JSON text (empty for a delete); the origin engine id. One packed field rather
than six keeps the reader's work per event small (the event stream is read by every gateway);
``cmsgpack`` only frames the strings, the JSON texts inside stay untouched bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "DELETE",
    "GET",
    "INIT_EPOCH",
    "ITEMS",
    "PRUNE_SCOPES",
    "SCOPE_HASH_PREFIX",
    "SET",
    "UPDATE_CAS",
    "KeyLayout",
    "Script",
]

SCOPE_HASH_PREFIX = b"state:"


def _b(text: str) -> bytes:
    """Names are arbitrary strings; surrogateescape keeps foreign non-UTF-8 names round-trippable."""
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Every Redis key name the adapter uses, derived from one bookkeeping prefix."""

    prefix: bytes
    revision: bytes = field(init=False)
    epoch: bytes = field(init=False)
    events: bytes = field(init=False)
    scopes: bytes = field(init=False)

    def __post_init__(self) -> None:
        if self.prefix.startswith(SCOPE_HASH_PREFIX) or not self.prefix:
            raise ValueError(
                f"key prefix {self.prefix!r} must be non-empty and must not start with 'state:' "
                "(SCAN state:* must only see scopes)"
            )
        object.__setattr__(self, "revision", self.prefix + b"revision")
        object.__setattr__(self, "epoch", self.prefix + b"epoch")
        object.__setattr__(self, "events", self.prefix + b"events")
        object.__setattr__(self, "scopes", self.prefix + b"scopes")

    @staticmethod
    def scope_hash(scope: str) -> bytes:
        return SCOPE_HASH_PREFIX + _b(scope)

    def key_revisions(self, scope: str) -> bytes:
        return self.prefix + b"rev:" + _b(scope)

    def cursor(self, engine_id: str) -> bytes:
        return self.prefix + b"cursor:" + _b(engine_id)

    def write_keys(self, scope: str) -> tuple[bytes, ...]:
        """KEYS of the write scripts, in the order the scripts index them."""
        return (
            self.scope_hash(scope),
            self.key_revisions(scope),
            self.revision,
            self.events,
            self.scopes,
            self.epoch,
        )


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run with EVALSHA (its sha1 is computed here, no SCRIPT LOAD round trip)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# KEYS of the write scripts: 1 scope hash, 2 per-key revision hash, 3 revision counter,
# 4 event stream, 5 scope index, 6 epoch.
_WRITE_PROLOGUE = """
if redis.call('GET', KEYS[6]) ~= ARGV[1] then
  return redis.error_reply('EPOCH store epoch changed')
end
"""

_APPEND_EVENT = """
local function append_event(rev, kind, scope, key, old, new, origin, maxlen)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, string.format('%d-0', rev),
    'm', cmsgpack.pack({kind, scope, key, old, new, origin}))
end
"""

# ARGV: 1 epoch, 2 scope, 3 key, 4 value JSON, 5 origin, 6 stream maxlen.
# Reply: {revision, existed 0|1, old JSON text or ''}.
SET = Script(
    "set",
    _WRITE_PROLOGUE
    + _APPEND_EVENT
    + """
local old = redis.call('HGET', KEYS[1], ARGV[3])
local existed, kind = 1, 'u'
if not old then existed, kind, old = 0, 'c', '' end
local rev = redis.call('INCR', KEYS[3])
append_event(rev, kind, ARGV[2], ARGV[3], old, ARGV[4], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[3], rev)
redis.call('ZADD', KEYS[5], 0, ARGV[2])
return {rev, existed, old}
""",
)

# ARGV: 1 epoch, 2 scope, 3 key, 4 origin, 5 stream maxlen.
# Reply: {revision, existed 0|1, old JSON text or ''}. A missing key still gets a revision and
# an event (the reference engine fires state:deleted for it too).
DELETE = Script(
    "delete",
    _WRITE_PROLOGUE
    + _APPEND_EVENT
    + """
local old = redis.call('HGET', KEYS[1], ARGV[3])
local existed = 1
if not old then existed, old = 0, '' end
local rev = redis.call('INCR', KEYS[3])
append_event(rev, 'd', ARGV[2], ARGV[3], old, '', ARGV[4], ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[3])
if existed == 1 then
  redis.call('HDEL', KEYS[1], ARGV[3])
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[5], ARGV[2]) end
end
return {rev, existed, old}
""",
)

# ARGV: 1 epoch, 2 scope, 3 key, 4 expected existed '0'|'1', 5 expected old JSON text,
# 6 new JSON text, 7 origin, 8 stream maxlen.
# Reply: {0} when the stored text is not what the caller read (nothing written), else {revision}.
# Comparing the exact text (not a revision) also catches writes by engines that keep no
# revisions, such as a reference engine sharing the Redis.
UPDATE_CAS = Script(
    "update_cas",
    _WRITE_PROLOGUE
    + _APPEND_EVENT
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[3])
if ARGV[4] == '1' then
  if cur ~= ARGV[5] then return {0} end
elseif cur then
  return {0}
end
local kind = 'u'
if not cur then kind, cur = 'c', '' end
local rev = redis.call('INCR', KEYS[3])
append_event(rev, kind, ARGV[2], ARGV[3], cur, ARGV[6], ARGV[7], ARGV[8])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[3], rev)
redis.call('ZADD', KEYS[5], 0, ARGV[2])
return {rev}
""",
)

# KEYS: 1 epoch. ARGV: 1 a fresh random id. Reply: the epoch now stored (ours if there was none).
INIT_EPOCH = Script(
    "init_epoch",
    """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
""",
)

# KEYS: 1 scope hash, 2 per-key revision hash. ARGV: 1 key.
# Reply: {value JSON text or nil, revision or nil}, read atomically together.
GET = Script(
    "get",
    """
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
""",
)

# KEYS: 1 scope hash, 2 per-key revision hash. Reply: {HGETALL values, HGETALL revisions}.
ITEMS = Script(
    "items",
    """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
""",
)

# KEYS: 1 scope index, then per scope its hash and its per-key revision hash (2, 3, 4, 5, ...).
# ARGV: the scope names, same order. Reply: the names whose hash exists; the others are removed
# from the index and their revision hash is dropped (a foreign engine or FLUSHDB removed the
# values). Atomic, so a scope re-created meanwhile is never dropped.
PRUNE_SCOPES = Script(
    "prune_scopes",
    """
local live = {}
for i = 2, #KEYS, 2 do
  local name = ARGV[(i / 2)]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    live[#live + 1] = name
  else
    redis.call('ZREM', KEYS[1], name)
    redis.call('DEL', KEYS[i + 1])
  end
end
return live
""",
)
