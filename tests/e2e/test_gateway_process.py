"""A real gateway process: readiness, graceful shutdown, crash durability, torn tails.

Each test runs ``python -m gateway serve`` as a subprocess on free ports with the file-based
store, and talks to it with the real ``iii-sdk`` worker client over the worker WebSocket.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sdk_helpers import GatewayProcess, call, connect_worker, shutdown

pytestmark = pytest.mark.slow


class Gateway(GatewayProcess):
    """GatewayProcess with extra flags and an optional config file."""

    def __init__(self, data_dir: Path, *extra: str, **kw: Any) -> None:
        super().__init__(data_dir, **kw)
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]

    def restarted(self) -> Gateway:
        return Gateway(self.data_dir, *self.extra, worker_port=self.worker_port, http_port=self.http_port)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def segment_files(gw: Gateway) -> list[Path]:
    return sorted((gw.data_dir / "state" / "state_store").glob("wal-*.log"))


async def test_health_and_readiness(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.start()
    try:
        status, body = await asyncio.to_thread(http_get, gw.http_url + "/healthz")
        assert status == 200 and b'"ok"' in body
        status, body = await asyncio.to_thread(http_get, gw.http_url + "/readyz")
        assert status == 200 and b'"ready"' in body
        status, body = await asyncio.to_thread(http_get, gw.http_url + "/metrics")
        assert status == 200 and b"iii_gateway_build_info" in body and b"iii_gateway_kv_revision" in body
    finally:
        gw.stop()
    assert gw.proc is not None and gw.proc.returncode == 0


@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
async def test_sigterm_loses_nothing_with_any_fsync_policy(tmp_path: Path, fsync: str) -> None:
    config = tmp_path / "gateway.yaml"
    # The longest interval the config allows: only the shutdown flush can save these writes.
    config.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
        f"        config: {{store_method: file_based, fsync: {fsync}, save_interval_ms: 3600000}}\n"
    )
    gw = Gateway(tmp_path, "-c", str(config), "--fsync", fsync)
    gw.start()
    worker = await connect_worker(gw.worker_url, "writer")
    try:
        for i in range(50):
            await call(worker, "state::set", {"scope": "s", "key": f"k{i}", "value": {"i": i}})
        await call(
            worker,
            "state::update",
            {"scope": "s", "key": "n", "ops": [{"type": "increment", "path": "c", "by": 3}]},
        )
    finally:
        await shutdown(worker)
    gw.stop()
    assert gw.proc is not None and gw.proc.returncode == 0

    again = gw.restarted()
    again.start()
    reader = await connect_worker(again.worker_url, "reader")
    try:
        values = await call(reader, "state::list", {"scope": "s"})
        assert values[:50] == [{"i": i} for i in range(50)]
        assert values[50] == {"c": 3}
    finally:
        await shutdown(reader)
        again.stop()


async def test_sigkill_with_fsync_always_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "--fsync", "always")
    gw.start()
    worker = await connect_worker(gw.worker_url, "writer", invocation_timeout_ms=3000)
    acked: list[int] = []
    enough = threading.Event()
    killed = threading.Event()

    def write_until_killed() -> None:
        i = 0
        while not killed.is_set():
            try:
                worker.trigger(
                    {"function_id": "state::set", "payload": {"scope": "crash", "key": f"k{i}", "value": i}}
                )
            except Exception:
                return  # the gateway died under this call: not acknowledged
            acked.append(i)
            if len(acked) >= 150:
                enough.set()
            i += 1

    writer = threading.Thread(target=write_until_killed)
    writer.start()
    try:
        assert await asyncio.to_thread(enough.wait, 30)
        gw.kill()  # mid-stream: the writer is still issuing sets
        killed.set()
        await asyncio.to_thread(writer.join, 30)
    finally:
        killed.set()
        await shutdown(worker)

    again = gw.restarted()
    again.start()
    reader = await connect_worker(again.worker_url, "reader")
    try:
        for i in acked:
            assert await call(reader, "state::get", {"scope": "crash", "key": f"k{i}"}) == i
        values = await call(reader, "state::list", {"scope": "crash"})
        # Nothing else is there but writes that were sent (at most the one in flight), intact.
        assert values == list(range(len(values)))
        assert len(acked) <= len(values) <= len(acked) + 1
    finally:
        await shutdown(reader)
        again.stop()


async def test_torn_last_record_is_truncated_reported_and_the_rest_kept(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "--fsync", "always")
    gw.start()
    worker = await connect_worker(gw.worker_url, "writer")
    try:
        for i in range(20):
            await call(worker, "state::set", {"scope": "t", "key": f"k{i}", "value": i})
    finally:
        await shutdown(worker)
    gw.kill()
    segment = segment_files(gw)[-1]
    with segment.open("ab") as f:  # half a record: a length header promising more than is there
        f.write(b"\x00\x00\x01\x00\x12\x34")

    again = gw.restarted()
    again.start()
    reader = await connect_worker(again.worker_url, "reader")
    try:
        assert await call(reader, "state::list", {"scope": "t"}) == list(range(20))
        status, body = await asyncio.to_thread(http_get, again.http_url + "/metrics")
        assert status == 200
        line = next(x for x in body.decode().splitlines() if x.startswith("iii_gateway_kv_torn_tail"))
        assert float(line.rsplit(" ", 1)[1]) >= 1
        # the store keeps working after the truncation
        await call(reader, "state::set", {"scope": "t", "key": "after", "value": "ok"})
        assert await call(reader, "state::get", {"scope": "t", "key": "after"}) == "ok"
    finally:
        await shutdown(reader)
        again.stop()
