"""The upstream's idempotency table: once per (peer, key), repeats answered, cancels survived."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.idempotency import FILE_NAME, IdempotencyTable


async def test_a_repeat_gets_the_first_result_without_running_again() -> None:
    table = IdempotencyTable()
    runs: list[int] = []

    async def write() -> int:
        runs.append(1)
        return len(runs)

    assert await table.run("edge", "k1", write) == 1
    assert await table.run("edge", "k1", write) == 1
    assert await table.run("other", "k1", write) == 2  # keys are per peer
    assert runs == [1, 1] and table.repeats_total == 1


async def test_a_repeat_during_the_first_waits_for_it() -> None:
    table = IdempotencyTable()
    gate = asyncio.Event()
    runs = 0

    async def write() -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "done"

    first = asyncio.ensure_future(table.run("edge", "k", write))
    second = asyncio.ensure_future(table.run("edge", "k", write))
    await asyncio.sleep(0)
    gate.set()
    assert list(await asyncio.gather(first, second)) == ["done", "done"] and runs == 1


async def test_a_cancelled_request_does_not_cut_its_write_short() -> None:
    table = IdempotencyTable()
    gate = asyncio.Event()
    applied: list[str] = []

    async def write() -> str:
        await gate.wait()
        applied.append("x")
        return "ok"

    request = asyncio.ensure_future(table.run("edge", "k", write))
    await asyncio.sleep(0)
    request.cancel()  # the link was lost mid-write
    with pytest.raises(asyncio.CancelledError):
        await request
    gate.set()
    assert await table.run("edge", "k", write) == "ok"  # the replay: waits, not re-applied
    assert applied == ["x"]


async def test_a_failed_write_is_not_remembered_and_the_window_is_bounded() -> None:
    table = IdempotencyTable(capacity=2)

    async def fail() -> None:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await table.run("edge", "k", fail)

    async def ok() -> str:
        return "ok"

    assert await table.run("edge", "k", ok) == "ok"
    for key in ("a", "b", "c"):
        await table.run("edge", key, ok)
    assert len(table) == 2


async def test_keys_survive_a_restart_through_the_file(tmp_path: Path) -> None:
    runs: list[str] = []

    async def write() -> dict[str, int]:
        runs.append("x")
        return {"revision": len(runs)}

    first = IdempotencyTable(directory=str(tmp_path))
    assert await first.run("edge", "k", write) == {"revision": 1}
    again = IdempotencyTable(directory=str(tmp_path))  # the upstream restarted
    assert await again.run("edge", "k", write) == {"revision": 1}
    assert runs == ["x"] and again.repeats_total == 1


async def test_a_torn_tail_is_cut_and_the_file_is_compacted(tmp_path: Path) -> None:
    table = IdempotencyTable(capacity=3, directory=str(tmp_path))

    async def ok() -> str:
        return "ok"

    for i in range(20):
        await table.run("edge", f"k{i}", ok)
    log = tmp_path / FILE_NAME
    assert len(IdempotencyTable(capacity=3, directory=str(tmp_path))) == 3
    size = log.stat().st_size
    assert size < 10 * 40  # rewritten with the live keys, not one record per write ever made
    log.write_bytes(log.read_bytes() + b"\x01\x02\x03")  # a torn append
    reopened = IdempotencyTable(capacity=3, directory=str(tmp_path))
    assert log.stat().st_size == size and len(reopened) == 3


def test_an_unusable_directory_keeps_the_window_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    table = IdempotencyTable(directory=str(blocker / "sub"))
    assert table.file is None
