"""The Redis state backend: reference key layout, atomic Lua writes, a shared event stream."""

from adapters.redis.adapter import RedisAdapter

__all__ = ["RedisAdapter"]
