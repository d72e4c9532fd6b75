"""The Redis adapter returns what the embedded kv adapter returns, op for op.

Both run the same seeded random workload (sets, deletes and update batches over a handful of
keys, with values that trip a cjson round trip: integers beyond 2^53, empty arrays and
objects, unicode, deep nesting). Results and final contents must be identical except for
revision numbers, which each store assigns on its own.
"""

from __future__ import annotations

import random
from typing import Any

from adapters.kv.store import KvAdapter
from gateway.config.settings import KvSettings
from gateway.errors import ValueTooLarge
from gateway.state.adapter import StateAdapter, WriteResult
from gateway.state.ops import (
    UpdateOp,
    append_op,
    decrement_op,
    increment_op,
    merge_op,
    remove_op,
    set_op,
)
from tests.integration.conftest import AdapterFactory
from tests.integration.redis_server import RedisServer

TRICKY: list[Any] = [
    0, -1, 2**53 + 1, -(2**63), 2**64 + 7, 1.5, 1e300, "", "é日本\u2028", True, None, [], {},
    [[]], {"a": []}, {"b": {"c": {}}}, [1, [2, [3, []]]], {"z": 1, "a": 2, "m": [{}, []]},
]  # fmt: skip
PATHS = ["a", "b", "n", "list", "x.y", ""]


def random_op(rng: random.Random) -> UpdateOp:
    kind = rng.randrange(6)
    path = rng.choice(PATHS)
    if kind == 0:
        return set_op(path, rng.choice(TRICKY))
    if kind == 1:
        return merge_op(rng.choice([{"a": rng.choice(TRICKY)}, {"n": 1, "list": []}, [], 3]))
    if kind == 2:
        return increment_op(path or "n", rng.choice([1, -5, 2**62, 2**53]))
    if kind == 3:
        return decrement_op(path or "n", rng.choice([1, 7]))
    if kind == 4:
        return append_op(rng.choice(TRICKY), rng.choice([None, "list", ["list"], "a"]))
    return remove_op(path or "a")


def comparable(result: WriteResult) -> tuple[Any, ...]:
    return (result.existed, result.old_value, result.new_value, result.errors)


async def run_workload(adapter: StateAdapter, seed: int, steps: int) -> list[Any]:
    rng = random.Random(seed)
    trace: list[Any] = []
    for _ in range(steps):
        key = f"k{rng.randrange(4)}"
        roll = rng.random()
        if roll < 0.2:
            trace.append(("set", comparable(await adapter.set("p", key, rng.choice(TRICKY)))))
        elif roll < 0.3:
            trace.append(("delete", comparable(await adapter.delete("p", key))))
        else:
            ops = [random_op(rng) for _ in range(rng.randrange(4))]
            try:
                result = await adapter.update("p", key, ops, max_value_bytes=rng.choice([None, None, 40]))
                trace.append(("update", comparable(result)))
            except ValueTooLarge as exc:
                trace.append(("too large", exc.size, exc.limit))
    for key in ("k0", "k1", "k2", "k3"):
        entry = await adapter.get("p", key)
        trace.append(("get", key, None if entry is None else entry.value))
    # Values compare as JSON values (object key order is not part of a value).
    trace.append(("items", sorted(((k, e.value) for k, e in await adapter.items("p")), key=lambda t: t[0])))
    trace.append(("groups", await adapter.list_groups()))
    return trace


async def test_same_results_as_kv(redis_server: RedisServer, redis_adapter_factory: AdapterFactory) -> None:
    redis = await redis_adapter_factory(redis_server)
    kv = KvAdapter(KvSettings(store_method="in_memory"), engine_id="kv")
    await kv.start()
    try:
        for seed in range(6):
            expected = await run_workload(kv, seed, 150)
            got = await run_workload(redis, seed, 150)
            assert got == expected, f"seed {seed}"
            for adapter in (kv, redis):
                for key in ("k0", "k1", "k2", "k3"):
                    await adapter.delete("p", key)
    finally:
        await kv.close()
