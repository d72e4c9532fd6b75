"""Latency helpers shared by the benchmarks: percentiles and N callers driving one operation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["concurrent", "pct"]


def pct(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of an already sorted, non-empty list (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def concurrent(n: int, callers: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    """Run ``op(i)`` for i in 0..n-1 from ``callers`` concurrent tasks; ops/s, p50 and p99 in us."""
    lat: list[float] = []

    async def worker(start: int) -> None:
        for i in range(start, n, callers):
            t0 = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(callers)))
    total = time.perf_counter() - started
    lat.sort()
    return {"ops_s": n / total, "p50_us": pct(lat, 0.5) * 1e6, "p99_us": pct(lat, 0.99) * 1e6}
