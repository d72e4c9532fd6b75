"""``iii-gateway state ...`` as a user runs it: real CLI subprocesses against real gateways.

Two gateway processes with link listeners: ``central`` (embedded kv store) and ``edge``, whose
state adapter is a Bridge to central (so its config file has the bridge section that ``-c``
reads, and its own link, TLS with client certificates, serves central's data one hop
further). Peers of central: ``admin`` (everything), ``limited`` (only ``pub-*`` scopes) and
the edge. Every check is made on the CLI's exit code and its parsed output; data is also read
back through a separate link client.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.jsonutil import dumps
from gateway.link import GetArgs
from tests.e2e.link_cli import Lines, LinkGateway, cli, link_client, spawn
from tests.helpers.federation import KeyFile, Peer, make_tls, write_key
from tests.integration.sdk_helpers import call, connect_worker, free_port, shutdown

pytestmark = pytest.mark.slow

# Values that must survive JSON text -> CLI -> msgpack link -> store -> back, byte for byte.
TRICKY: Any = {
    "big": 2**64 - 1,
    "neg": -(2**63),
    "text": 'naïve ☃ 🚀 \u2028 עברית "quoted" \\ \n',
    "nested": {"z": [1, 2.5, None, True, {}], "a": [], "tiny": 1e-300, "zero": -0.0},
}


class Fleet:
    def __init__(self, tmp: Path) -> None:
        keys = tmp / "client-keys"
        self.admin = write_key(keys, "admin")
        self.limited = write_key(keys, "limited")
        self.stranger = write_key(keys, "stranger")
        self.edge_key = write_key(keys, "edge")
        self.central = LinkGateway(
            tmp / "central",
            "central",
            [
                Peer("admin", self.admin),
                Peer("limited", self.limited, read=["pub-*"], write=["pub-*"], watch=["pub-*"]),
                Peer("edge", self.edge_key),
            ],
        )
        self.edge_config = (
            "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n"
            "        config:\n"
            f"          identity: {self.edge_key.path}\n"
            "          upstreams:\n"
            "            - name: central\n"
            f"              endpoints: [{self.central.url}]\n"
            f"              public_key: {self.central.public}\n"
        )
        self.tls = make_tls(tmp / "tls")  # the edge's own link is TLS with client certificates
        self.edge = LinkGateway(
            tmp / "edge", "edge", [Peer("admin", self.admin)], state_config=self.edge_config, tls=self.tls
        )

    def state(self, *args: str, key: KeyFile | None = None) -> Any:
        """``state ACTION ARGS`` against central as ``key`` (admin by default)."""
        action, *rest = args
        return cli("state", action, *self.central.flags(key or self.admin), *rest)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    f.central.start()
    try:
        f.edge.start()
        try:
            yield f
        finally:
            f.edge.stop()
    finally:
        f.central.stop()


def ok(result: Any) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_set_get_list_groups_delete(fleet: Fleet) -> None:
    text = json.dumps(TRICKY)
    created = json.loads(ok(fleet.state("set", "orders", "o-1", text, "--json")).stdout)
    assert created["existed"] is False and created["new_value"] == TRICKY and created["revision"] > 0
    again = ok(fleet.state("set", "orders", "o-1", text))
    assert again.stdout.startswith("updated orders o-1 at revision ")

    got = json.loads(ok(fleet.state("get", "orders", "o-1", "--json")).stdout)
    assert dumps(got["value"]) == dumps(TRICKY) and got["revision"] > created["revision"]
    assert json.loads(ok(fleet.state("get", "orders", "o-1")).stdout) == TRICKY  # human: pretty JSON

    # A stored null is not a missing key.
    ok(fleet.state("set", "orders", "nothing", "null"))
    assert json.loads(ok(fleet.state("get", "orders", "nothing", "--json")).stdout)["value"] is None
    missing = fleet.state("get", "orders", "never-set", "--json")
    assert missing.returncode == 4 and missing.stdout == ""
    assert "not found" in missing.stderr and "never-set" in missing.stderr

    # The value from stdin and from a file.
    ok(
        cli(
            "state", "set", *fleet.central.flags(fleet.admin), "orders", "o-2", "-", stdin='{"from": "stdin"}'
        )
    )
    listed = json.loads(ok(fleet.state("list", "orders", "--json")).stdout)
    assert [i["key"] for i in listed] == ["nothing", "o-1", "o-2"]
    assert listed[2]["value"] == {"from": "stdin"}
    assert ok(fleet.state("list", "orders", "--keys")).stdout.splitlines() == ["nothing", "o-1", "o-2"]
    assert "orders" in json.loads(ok(fleet.state("groups", "--json")).stdout)

    deleted = json.loads(ok(fleet.state("delete", "orders", "o-2", "--json")).stdout)
    assert deleted["existed"] is True and deleted["old_value"] == {"from": "stdin"}
    assert "nothing to delete" in ok(fleet.state("delete", "orders", "o-2")).stdout

    info = json.loads(ok(fleet.state("info", "--json")).stdout)
    assert info["engine"] == "central" and info["revision"] >= deleted["revision"]


async def test_values_read_back_through_the_link_are_identical(fleet: Fleet, tmp_path: Path) -> None:
    value_file = tmp_path / "value.json"
    value_file.write_text(json.dumps(TRICKY, ensure_ascii=False), encoding="utf-8")
    ok(fleet.state("set", "files", "v", "--value-file", str(value_file)))
    async with link_client(fleet.central, fleet.admin) as client:
        stored = await client.request(GetArgs("files", "v"))
    assert dumps(stored["value"]) == dumps(TRICKY)


def test_update_accepts_both_op_forms(fleet: Fleet, tmp_path: Path) -> None:
    ok(fleet.state("set", "counters", "c", '{"n": 1, "tags": []}'))
    typed = '[{"type": "increment", "path": "n", "by": 4}, {"type": "set", "path": "name", "value": "x"}]'
    result = json.loads(ok(fleet.state("update", "counters", "c", typed, "--json")).stdout)
    assert result["new_value"] == {"n": 5, "name": "x", "tags": []} and result["errors"] == []
    ops_file = tmp_path / "ops.json"
    ops_file.write_text('{"increment": {"field": "n", "by": 10}}')  # one seed-form op, from a file
    result = json.loads(
        ok(fleet.state("update", "counters", "c", "--ops-file", str(ops_file), "--json")).stdout
    )
    assert result["new_value"]["n"] == 15

    # An op the store cannot apply: the others are applied, the error is reported, exit 1.
    partial = fleet.state("update", "counters", "c", '[{"type":"increment","path":"name","by":1}]')
    assert partial.returncode == 1
    assert "error: increment.not_number: ops[0]:" in partial.stderr
    # A malformed op is refused before anything is sent: exit 2, value unchanged.
    bad = fleet.state("update", "counters", "c", '[{"type": "explode"}]')
    assert bad.returncode == 2 and "error: OPS:" in bad.stderr
    assert json.loads(ok(fleet.state("get", "counters", "c", "--json")).stdout)["value"]["n"] == 15


async def test_bad_values_are_usage_errors_and_write_nothing(fleet: Fleet) -> None:
    for value, message in [
        ("{bad json", "not valid JSON"),
        ("NaN", "not valid JSON"),
        ("1e999", "not valid JSON"),
        ("123456789012345678901234567890", "does not fit in 64 bits"),
    ]:
        result = fleet.state("set", "bad", "k", value)
        assert result.returncode == 2, value
        assert result.stderr.startswith("error: VALUE:") and message in result.stderr, value
    async with link_client(fleet.central, fleet.admin) as client:
        assert await client.request(GetArgs("bad", "k")) is None


def test_missing_or_wrong_flags_are_usage_errors(fleet: Fleet) -> None:
    no_target = cli("state", "get", "--identity", str(fleet.admin.path), "s", "k")
    assert no_target.returncode == 2 and "missing --gateway, --upstream-key" in no_target.stderr
    bad_url = cli("state", "get", *fleet.central.flags(fleet.admin)[2:], "--gateway", "http://x:1", "s", "k")
    assert bad_url.returncode == 2 and "--gateway" in bad_url.stderr
    bad_key = cli("state", "get", *fleet.central.flags(fleet.admin, pinned="ed25519:nope!"), "s", "k")
    assert bad_key.returncode == 2 and "--upstream-key" in bad_key.stderr


def test_cannot_connect_or_authenticate_exits_3(fleet: Fleet) -> None:
    stranger = fleet.state("get", "orders", "o-1", key=fleet.stranger)
    assert stranger.returncode == 3
    assert "unknown_key" in stranger.stderr and fleet.stranger.public in stranger.stderr
    wrong_pin = cli(
        "state", "get", *fleet.central.flags(fleet.admin, pinned=fleet.edge.public), "orders", "o-1"
    )
    assert wrong_pin.returncode == 3 and "bad_server_key" in wrong_pin.stderr
    nobody = cli(
        "state", "get", "--gateway", f"tcp://127.0.0.1:{free_port()}", "--identity",
        str(fleet.admin.path), "--upstream-key", fleet.central.public, "--timeout", "3", "orders", "o-1",
    )  # fmt: skip
    assert nobody.returncode == 3 and nobody.stderr.startswith("error: cannot connect:")
    for result in (stranger, wrong_pin, nobody):
        assert "PRIVATE KEY" not in result.stderr + result.stdout


async def test_forbidden_scopes_exit_1(fleet: Fleet, tmp_path: Path) -> None:
    ok(fleet.state("set", "pub-news", "n1", '"hello"', key=fleet.limited))
    denied = fleet.state("get", "orders", "o-1", key=fleet.limited)
    assert denied.returncode == 1 and denied.stderr.startswith("error: FORBIDDEN:")
    denied = fleet.state("set", "orders", "o-9", "1", key=fleet.limited)
    assert denied.returncode == 1 and "FORBIDDEN" in denied.stderr
    groups = json.loads(ok(fleet.state("groups", "--json", key=fleet.limited)).stdout)
    assert groups == ["pub-news"]  # only what it may read
    async with link_client(fleet.central, fleet.admin) as client:
        assert await client.request(GetArgs("orders", "o-9")) is None  # nothing was written
    # Its export of "everything" is everything it may read.
    exported = cli(
        "export", *fleet.central.flags(fleet.limited), "--all", "-o", str(tmp_path / "x"), "--json"
    )
    assert json.loads(ok(exported).stdout)["scopes"] == {"pub-news": 1}


async def test_config_file_supplies_the_target_and_flags_win(fleet: Fleet) -> None:
    """``-c`` the edge's config: its bridge section names central, its key and the edge identity."""
    config = str(fleet.edge.config)
    ok(cli("state", "set", "-c", config, "from-config", "k", '{"via": "edge config"}'))
    async with link_client(fleet.central, fleet.admin) as client:
        written = await client.request(GetArgs("from-config", "k"))
    assert written["value"] == {"via": "edge config"}
    # A flag replaces one field: the limited identity may not read this scope.
    flagged = cli("state", "get", "-c", config, "--identity", str(fleet.limited.path), "from-config", "k")
    assert flagged.returncode == 1 and "FORBIDDEN" in flagged.stderr
    no_such = cli("state", "get", "-c", config, "--upstream", "nope", "from-config", "k")
    assert no_such.returncode == 2 and "no bridge upstream named 'nope'" in no_such.stderr
    # The edge's own link (TLS, a Bridge behind it) serves central's data one hop further.
    assert fleet.edge.url.startswith("tls://")
    via_edge = cli("state", "get", *fleet.edge.flags(fleet.admin), "from-config", "k", "--json")
    assert json.loads(ok(via_edge).stdout)["value"] == {"via": "edge config"}
    no_cert = cli("state", "get", *fleet.edge.flags(fleet.admin)[:6], "--tls-ca", str(fleet.tls.ca), "s", "k")
    assert no_cert.returncode == 3 and "cannot connect" in no_cert.stderr  # mTLS: no client certificate


async def test_watch_streams_worker_writes_until_sigint(fleet: Fleet) -> None:
    watch = spawn("state", "watch", *fleet.central.flags(fleet.admin), "shop-*", "--json")
    lines = Lines(watch.stdout)  # type: ignore[arg-type]
    worker = None
    try:
        live = json.loads(lines.next())
        assert live["type"] == "backlog_end"  # the watch is live: now write
        worker = await connect_worker(fleet.central.worker_url, "writer")
        await call(worker, "state::set", {"scope": "shop-eu", "key": "cart", "value": {"items": 1}})
        await call(worker, "state::set", {"scope": "not-watched", "key": "x", "value": 1})
        await call(
            worker,
            "state::update",
            {"scope": "shop-eu", "key": "cart", "ops": [{"type": "increment", "path": "items", "by": 2}]},
        )
        await call(worker, "state::delete", {"scope": "shop-eu", "key": "cart"})
        events = [json.loads(lines.next()) for _ in range(3)]
        assert [e["event_type"] for e in events] == ["state:created", "state:updated", "state:deleted"]
        assert [e["new_value"] for e in events] == [{"items": 1}, {"items": 3}, None]
        assert all(e["scope"] == "shop-eu" and e["epoch"] == live["epoch"] for e in events)
        revisions = [e["revision"] for e in events]
        assert revisions == sorted(revisions) and revisions[0] > live["revision"]
        watch.send_signal(signal.SIGINT)
        assert watch.wait(20) == 0
        assert lines.rest() == []  # nothing after the events (the unwatched scope never showed)
    finally:
        if worker is not None:
            await shutdown(worker)
        if watch.poll() is None:
            watch.kill()
            watch.wait()

    # Replay: from just before the first event, people's format, then the backlog end note.
    replay = spawn(
        "state",
        "watch",
        *fleet.central.flags(fleet.admin),
        "shop-*",
        "--from-revision",
        str(revisions[0] - 1),
    )
    out, err = Lines(replay.stdout), Lines(replay.stderr)  # type: ignore[arg-type]
    try:
        rows = [out.next().split("\t") for _ in range(3)]
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            (str(revisions[0]), "created", "shop-eu", "cart"),
            (str(revisions[1]), "updated", "shop-eu", "cart"),
            (str(revisions[2]), "deleted", "shop-eu", "cart"),
        ]
        assert json.loads(rows[1][4]) == {"items": 3} and rows[2][4] == "-"
        assert err.next().startswith("-- live from revision")
        replay.send_signal(signal.SIGINT)
        assert replay.wait(20) == 0
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()


def test_watch_history_gone_is_reported(fleet: Fleet) -> None:
    far = fleet.state("watch", "*", "--from-revision", "999999999", "--json")
    assert far.returncode == 1
    assert far.stderr.startswith("error: HISTORY_GONE:") and "outside the history" in far.stderr
    assert json.loads(far.stdout.splitlines()[-1])["type"] == "history_gone"
    other_epoch = fleet.state("watch", "*", "--from-revision", "0", "--epoch", "not-this-store")
    assert other_epoch.returncode == 1 and "HISTORY_GONE" in other_epoch.stderr
