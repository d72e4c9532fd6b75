"""``iii-gateway export`` and ``import`` between two real gateway processes.

``source`` holds 10,000 keys in four scopes, with values chosen to break a careless round trip
(64-bit extremes, unicode beyond the BMP, U+2028, floats, nulls, nested empties). They are
exported by the CLI, imported by the CLI into ``target``, and read back through a separate
link client from both gateways: every value's canonical JSON must be identical. Interrupted
imports resume from their state file (checked against the number of writes the target saw);
damaged files are refused before anything is written; an export taken while another client
writes is exactly the state at its one revision.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.jsonutil import dumps
from gateway.link import DeleteArgs, InfoArgs, ItemsArgs, SetArgs, WatchArgs, WatchEvent
from gateway.link.client import LinkClient
from tests.e2e.link_cli import Lines, LinkGateway, cli, link_client, spawn, start_all
from tests.helpers.federation import KeyFile, Peer, write_key
from tests.integration.sdk_helpers import ROOT

pytestmark = pytest.mark.slow

SCOPES = ("alpha", "beta", "delta", "gamma")  # sorted: the order of an export file
KEYS = 10_000


def value_for(i: int) -> Any:
    kinds: list[Any] = [
        {
            "i": i,
            "max": 2**64 - 1,
            "min": -(2**63),
            "text": f"ü€🚀\u2028«{i}»",
            "nested": {"b": [i, None, True], "a": {}},
        },
        f'plain text {i} ✓ "q" \\ \n',
        i * 2**40,
        None,
        [i, "x", 1.5e300, -0.0, i / 7],
        {"deep": [[[{"e": []}]]], "k": "כן"},
    ]
    return kinds[i % len(kinds)]


def key_for(i: int) -> str:
    return f"k{i:05d}" if i % 3 else f"ключ-{i:05d}"


@dataclass
class Pair:
    source: LinkGateway
    target: LinkGateway
    admin: KeyFile
    limited: KeyFile
    tmp: Path
    export: Path
    summary: dict[str, Any]


async def seed(client: LinkClient) -> None:
    pending = [SetArgs(SCOPES[i % len(SCOPES)], key_for(i), value_for(i)) for i in range(KEYS)]
    for start in range(0, KEYS, 1000):
        await asyncio.gather(*(client.request(a) for a in pending[start : start + 1000]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("exchange")
    admin = write_key(tmp / "client-keys", "admin")
    limited = write_key(tmp / "client-keys", "limited")
    source = LinkGateway(tmp / "source", "source", [Peer("admin", admin)])
    target = LinkGateway(
        tmp / "target",
        "target",
        [Peer("admin", admin), Peer("limited", limited, write=["alpha", "beta"])],
    )
    start_all(source, target)
    try:
        try:

            async def fill() -> None:
                async with link_client(source, admin) as client:
                    await seed(client)

            asyncio.run(fill())
            export = tmp / "all.jsonl"
            scopes = [a for s in SCOPES for a in ("--scope", s)]
            result = cli("export", *source.flags(admin), *scopes, "-o", str(export), "--json")
            assert result.returncode == 0, result.stderr
            yield Pair(source, target, admin, limited, tmp, export, json.loads(result.stdout))
        finally:
            target.stop()
    finally:
        source.stop()


async def read_scopes(gw: LinkGateway, key: KeyFile, scopes: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """Every (scope, key) -> canonical JSON of its value, through a plain link client."""
    out: dict[tuple[str, str], str] = {}
    async with link_client(gw, key) as client:
        for scope in scopes:
            for k, value, _rev in await client.request(ItemsArgs(scope)):
                out[(scope, k)] = dumps(value)
    return out


def file_records(path: Path) -> tuple[dict[str, Any], dict[tuple[str, str], str], dict[str, Any]]:
    """Header, (scope, key) -> canonical value text as written in the file, trailer."""
    # Split on "\n" only: values hold U+2028, which str.splitlines() would also split on.
    lines = path.read_bytes().decode("utf-8").rstrip("\n").split("\n")
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    records = {}
    for line in lines[1:-1]:
        rec = json.loads(line)
        records[(rec["scope"], rec["key"])] = dumps(rec["value"])
        assert line == dumps(rec), "records are written in canonical form"
    return header, records, trailer


def import_cmd(pair: Pair, *args: str, key: KeyFile | None = None) -> list[str]:
    return ["import", *pair.target.flags(key or pair.admin), *args]


async def test_round_trip_of_10000_keys_through_a_killed_and_resumed_import(pair: Pair) -> None:
    header, records, trailer = file_records(pair.export)
    async with link_client(pair.source, pair.admin) as client:
        info = await client.request(InfoArgs())
    assert header["format"] == "iii-gateway-export" and header["version"] == 1
    assert header["source"]["engine"] == "source" and header["mode"] == "snapshot"
    assert header["revision"] == KEYS and header["epoch"] == info["epoch"]  # right after the seed
    assert header["scopes"] == list(SCOPES) and header["keys"] == KEYS
    assert trailer["keys"] == KEYS and trailer["scopes"] == {s: KEYS // 4 for s in SCOPES}
    assert pair.summary["sha256"] == trailer["sha256"]
    source = await read_scopes(pair.source, pair.admin, SCOPES)
    assert len(source) == KEYS and records == source  # the file is exactly the source
    assert source[("alpha", "ключ-00000")] == dumps(value_for(0))

    state = pair.tmp / "killed.state"
    # Rate-limited so that it is surely still running when its first checkpoint is reported.
    proc = spawn(
        *import_cmd(pair, str(pair.export), "--state", str(state), "--batch", "500", "--max-rate", "2000")
    )
    err = Lines(proc.stderr)  # type: ignore[arg-type]
    try:
        assert err.next().startswith("import: ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = json.loads(state.read_text())
    assert 500 <= first["done"] < KEYS and first["complete"] is False and first["runs"] == 1

    writes, result = await writes_made_by(
        pair, "resumer", *import_cmd(pair, str(pair.export), "--state", str(state), "--json")
    )
    assert result["code"] == 0, result["stderr"]
    summary = json.loads(result["stdout"])
    assert summary["keys_skipped"] == first["done"] and summary["complete"] is True
    # Exactly the rest was written: the target saw that many writes from the second run.
    assert writes == summary["keys_written"] == KEYS - first["done"]
    final = json.loads(state.read_text())
    assert final["done"] == KEYS and final["complete"] is True and final["runs"] == 2
    assert final["writes"] == first["writes"] + KEYS - first["done"]
    # Byte for byte: the canonical JSON of every value read back from the target.
    assert await read_scopes(pair.target, pair.admin, SCOPES) == source

    again = cli(*import_cmd(pair, str(pair.export), "--state", str(state)))
    assert again.returncode == 0 and "already imported" in again.stderr


async def test_corrupt_or_incomplete_files_are_refused_before_writing(pair: Pair) -> None:
    lines = pair.export.read_bytes().split(b"\n")
    middle = len(lines) // 2
    damaged = pair.tmp / "damaged.jsonl"
    changed = list(lines)
    record = json.loads(changed[middle])
    record["value"] = "tampered"  # still a valid record, in canonical form: only the checksum tells
    changed[middle] = dumps(record).encode()
    damaged.write_bytes(b"\n".join(changed))
    truncated = pair.tmp / "truncated.jsonl"
    truncated.write_bytes(b"\n".join(lines[: middle + 1]) + b"\n")
    garbage = pair.tmp / "garbage.jsonl"
    garbage.write_bytes(b"\n".join([*lines[:middle], b"{not json", *lines[middle + 1 :]]))

    async with link_client(pair.target, pair.admin) as client:
        before = await client.request(InfoArgs())
    for path, reason in (
        (damaged, "checksum mismatch"),
        (truncated, "no trailer"),
        (garbage, "not valid JSON"),
    ):
        result = cli(*import_cmd(pair, str(path)))
        assert result.returncode == 2, (path, result.stderr)
        assert "refused" in result.stderr and reason in result.stderr, result.stderr
        assert not Path(f"{path}.import-state").exists()
    dry = cli(*import_cmd(pair, str(pair.export), "--dry-run", "--json"))
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["keys"] == KEYS and json.loads(dry.stdout)["dry_run"] is True
    async with link_client(pair.target, pair.admin) as client:
        after = await client.request(InfoArgs())
    assert after["revision"] == before["revision"]  # not one write reached the target


class Origins:
    """Counts the target's change events by origin (who made each write)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.barrier = asyncio.Event()

    def on_event(self, event: WatchEvent) -> None:
        if event.scope == "zz-barrier":
            self.barrier.set()
        self.counts[event.origin] = self.counts.get(event.origin, 0) + 1

    def on_backlog_end(self, revision: int, epoch: str) -> None:
        pass

    def on_progress(self, revision: int) -> None:
        pass


async def writes_made_by(pair: Pair, origin: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the CLI; return how many writes with ``origin`` the target applied, and its result."""
    origins = Origins()
    async with link_client(pair.target, pair.admin, "test-observer") as client:
        stream = client.watch(WatchArgs((*SCOPES, "zz-barrier")), origins)
        await client.request(InfoArgs())  # the watch is registered before the run starts
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, "--client-id", origin,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        # Events reach a watch in commit order: once ours is seen, every earlier one has been.
        await client.request(SetArgs("zz-barrier", "b", origin))
        await asyncio.wait_for(origins.barrier.wait(), 20)
        stream.cancel()
    result = {"code": proc.returncode, "stdout": out.decode(), "stderr": err.decode()}
    return origins.counts.get(origin, 0), result


async def test_refused_write_stops_at_that_key_and_a_rerun_continues(pair: Pair) -> None:
    """``limited`` may write beta but not delta: the import stops at the first delta key."""
    part = pair.tmp / "beta-delta.jsonl"
    exported = cli(
        "export", *pair.source.flags(pair.admin), "--scope", "beta", "--scope", "delta", "-o", str(part)
    )
    assert exported.returncode == 0, exported.stderr
    state = pair.tmp / "refused.state"
    first = cli(*import_cmd(pair, str(part), "--state", str(state), key=pair.limited))
    assert first.returncode == 1 and first.stderr.startswith("error: FORBIDDEN:")
    assert "2500 of 5000 keys imported" in first.stderr and "'delta'" in first.stderr
    assert json.loads(state.read_text())["done"] == 2500  # everything before the refused key
    # Rerun with an identity that may write delta: in slices (--stop-after), from where it was.
    writes, result = await writes_made_by(
        pair, "rerun", *import_cmd(pair, str(part), "--state", str(state), "--stop-after", "1000", "--json")
    )
    assert result["code"] == 0 and writes == 1000
    assert json.loads(result["stdout"])["complete"] is False
    rest = cli(*import_cmd(pair, str(part), "--state", str(state), "--json"))
    assert rest.returncode == 0 and json.loads(rest.stdout)["keys_written"] == 1500
    assert json.loads(state.read_text())["complete"] is True


async def test_export_scope_by_scope_is_one_revision_under_concurrent_writes(pair: Pair) -> None:
    """While a client keeps writing (sets and deletes), the file is the state at its revision."""
    log: list[tuple[int, str, str, Any]] = []  # (revision, scope, key, value or None if deleted)
    started = asyncio.Event()
    stop = asyncio.Event()

    async def writer(client: LinkClient) -> None:
        i = 0
        while not stop.is_set():
            scope, key = f"live-{'abc'[i % 3]}", f"k{i % 40}"
            if i % 5 == 4:
                result = await client.request(DeleteArgs(scope, key))
                log.append((result["revision"], scope, key, None))
            else:
                result = await client.request(SetArgs(scope, key, {"i": i}))
                log.append((result["revision"], scope, key, {"i": i}))
            i += 1
            if i == 300:
                started.set()

    out = pair.tmp / "live.jsonl"
    async with link_client(pair.source, pair.admin) as client:
        task = asyncio.create_task(writer(client))
        await asyncio.wait_for(started.wait(), 30)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "export", *pair.source.flags(pair.admin), "--scope", "live-*",
            "--per-scope", "-o", str(out), "--json", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await proc.communicate()
        stop.set()
        await task
    assert proc.returncode == 0, stderr.decode()
    header, records, _ = file_records(out)
    cut = header["revision"]
    assert header["mode"] == "per-scope" and cut >= log[299][0]
    expected: dict[tuple[str, str], str] = {}
    for revision, scope, key, value in sorted(log):
        if revision > cut:
            break
        if value is None:
            expected.pop((scope, key), None)
        else:
            expected[(scope, key)] = dumps(value)
    assert records == expected
    assert json.loads(stdout)["keys"] == len(expected)


async def test_auto_export_pages_by_scope_over_the_frame_limit(pair: Pair) -> None:
    """18 MiB of values: one snapshot answer would exceed the link's 16 MiB frame limit."""
    big = {f"huge-{s}": {f"v{i}": f"{s}{i}:" + "ü" * (512 * 1024) for i in range(6)} for s in "xyz"}
    async with link_client(pair.source, pair.admin) as client:
        for scope, values in big.items():
            for k, v in values.items():
                await client.request(SetArgs(scope, k, v))
    out = pair.tmp / "huge.jsonl"
    result = cli("export", *pair.source.flags(pair.admin), "--scope", "huge-*", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == "per-scope" and json.loads(result.stdout)["keys"] == 18
    imported = cli(*import_cmd(pair, str(out), "--json"))
    assert imported.returncode == 0, imported.stderr
    scopes = tuple(big)
    expected = {(s, k): dumps(v) for s, values in big.items() for k, v in values.items()}
    assert await read_scopes(pair.target, pair.admin, scopes) == expected
    assert file_records(out)[1] == expected
