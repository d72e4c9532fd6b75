"""Smoke test with the Node SDK (``iii-sdk`` 0.22.1 from npm) next to a Python worker.

The package is installed once per machine into a cache directory (``.ci/run`` provides node and
npm; the first run needs the npm registry). A Node worker registers a function and a ``state``
trigger, calls builtins with and without ``TriggerAction.Void()``, gets a reference error code,
and calls a Python worker's function; a Python worker calls the Node function back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sdk_helpers import call, connect_worker, roundtrip, running_gateway, shutdown

NODE_SDK = "iii-sdk@0.22.1"
TIMEOUT = 30.0

SCRIPT = """
import { registerWorker, TriggerAction } from '%(sdk)s'

// Results go to stdout as "@@" + JSON; the SDK logs there too.
const out = (o) => process.stdout.write('@@' + JSON.stringify(o) + '\\n')
const iii = registerWorker(process.env.III_URL, { workerName: 'node-smoke' })
const call = (function_id, payload, extra = {}) => iii.trigger({ function_id, payload, ...extra })
iii.registerFunction('node::double', async (data) => ({ doubled: data.n * 2 }))
iii.registerFunction('node::on_state', async (event) => {
  out({ kind: 'event', event })
  return { ok: true }
})
iii.registerTrigger({ type: 'state', function_id: 'node::on_state', config: { scope: 'orders', key: 'o1' } })

out({ kind: 'set', result: await call('state::set', { scope: 'node', key: 'k', value: 7 }) })
const voided = await call('state::set', { scope: 'node', key: 'k', value: 8 }, {
  action: TriggerAction.Void(),
})
out({ kind: 'void', result: voided ?? null })
out({ kind: 'get', result: await call('state::get', { scope: 'node', key: 'k' }) })
try {
  await call('nope::nope', {})
} catch (e) {
  out({ kind: 'error', code: e.code, message: e.message })
}
out({ kind: 'greet', result: await call('py::greet', { name: 'node' }) })
out({ kind: 'ready' })
process.stdin.on('end', async () => {
  await iii.shutdown()
  process.exit(0)
})
process.stdin.resume()
"""


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The installed Node SDK's ESM entry point (installed on first use, then reused)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for this test (.ci/run installs them)"
    prefix = Path(tempfile.gettempdir()) / "iii-gateway-tests" / NODE_SDK.replace("@", "-")
    entry = prefix / "node_modules" / "iii-sdk" / "dist" / "index.mjs"
    if not entry.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent", NODE_SDK],
            check=True,
            timeout=300,
        )
    assert entry.exists(), f"npm did not install {NODE_SDK} into {prefix}"
    return entry


async def read_json_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    """The next result line of the Node script (skipping the SDK's own log lines)."""
    while True:
        line = await asyncio.wait_for(stream.readline(), TIMEOUT)
        assert line, "the node worker exited early"
        if line.startswith(b"@@"):
            return dict(json.loads(line[2:]))


async def test_node_sdk_worker_smoke(node_sdk: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.mjs"
    script.write_text(SCRIPT % {"sdk": node_sdk.as_uri()})
    async with running_gateway() as gw:
        py = await connect_worker(gw.worker_url, "python-peer")
        proc: asyncio.subprocess.Process | None = None
        try:
            py.register_function("py::greet", lambda data: f"hello {data['name']}")
            await roundtrip(py)
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(script),
                env={**os.environ, "III_URL": gw.worker_url, "OTEL_ENABLED": "false"},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None and proc.stdin is not None
            lines = {}
            while (line := await read_json_line(proc.stdout))["kind"] != "ready":
                lines[line["kind"]] = line
            assert lines["set"]["result"]["old_value"] is None and lines["set"]["result"]["new_value"] == 7
            assert lines["void"]["result"] is None
            assert lines["get"]["result"] == 8
            assert lines["error"]["code"] == "function_not_found"
            assert lines["greet"]["result"] == "hello node"

            assert await call(py, "node::double", {"n": 21}) == {"doubled": 42}
            await call(py, "state::set", {"scope": "orders", "key": "o1", "value": {"qty": 3}})
            event = (await read_json_line(proc.stdout))["event"]
            assert event["event_type"] == "state:created" and event["new_value"] == {"qty": 3}
            assert {w["runtime"] for w in gw.hub.workers()} == {"python", "node"}

            proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            await shutdown(py)
