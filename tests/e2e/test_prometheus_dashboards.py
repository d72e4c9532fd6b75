"""Every Grafana dashboard query and every alert rule, against a real Prometheus scraping a
real federation under load.

The fleet (``tests/e2e/fleet.py``): a central gateway on Redis, a region bridged to it, an
edge bridged to the region (all three from the configs in ``deploy/configs``, with real keys
and authorized-peers files), and a kv-store gateway (``deploy/examples/kv-file.yaml``). A
Prometheus (the Debian package's binary) scrapes the four ``/metrics`` every second with
``deploy/prometheus/alerts.yml`` loaded. Then a bounded load runs: an ``iii-sdk`` worker on the
edge with a state trigger and an http trigger does set/get/update/list/delete calls (plus a
write the region may not make upstream, and a malformed one), a second worker writes to the
kv store, a stranger key tries the central's link, and a raw WebSocket sends a broken frame.

Once Prometheus has scraped after the load, each query of each dashboard JSON file (variables
substituted as Grafana would: ``$instance`` = every gateway, ``$__rate_interval`` = a window
covering the run) must return at least one finite sample, every metric name the dashboards and
alert rules use must be among the scraped series, and every alert rule must evaluate cleanly.

Metrics that no component exposes yet are listed once, in ``NOT_YET_EXPOSED``, with the
reason; for those the test asserts the opposite (still no data), so it fails -- and names the
entry to delete -- as soon as the feature lands.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from iii import InvocationError, register_worker
from iii.iii import III

from gateway.errors import AuthError
from gateway.link.client import connect
from tests.e2e.fleet import ConfiguredGateway, Fleet, http_get
from tests.helpers.prometheus import (
    PrometheusServer,
    dashboard_targets,
    finite,
    grafana_interpolate,
    metric_names,
    prometheus_available,
    regex_alternation,
    wait_until,
)
from tests.integration.redis_server import RedisServer, redis_available
from tests.integration.sdk_helpers import ROOT, Inbox, bind, shutdown, worker_options

pytestmark = pytest.mark.slow

DASHBOARDS = ROOT / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RATE_WINDOW = "5m"  # $__rate_interval: longer than the whole run, so every rate sees the load
ORDERS = 30  # orders written by the edge worker (each: set, get, update; some deleted)

# Metrics that dashboards or alerts use and that no gateway exposes yet: name -> why. The test
# checks each still has no data; when one appears, delete its entry (deploy/configs/edge.yaml
# already enables the read cache and the outbox, so their metrics show up here once they land).
NOT_YET_EXPOSED: dict[str, str] = {}

# Every label a gateway series may carry (bounded values; never a scope, key, address or id),
# plus the target labels Prometheus adds.
BOUNDED_LABELS = {
    "__name__", "instance", "job", "op", "outcome", "code", "event", "type", "reason", "kind",
    "protocol", "status", "upstream", "result", "direction", "adapter", "version", "python", "le",
    "generation", "implementation", "major", "minor", "patchlevel",
}  # fmt: skip


@dataclass
class Scraped:
    fleet: Fleet
    prometheus: PrometheusServer
    instances: list[str]
    load_ended: float


def _connect(gw: ConfiguredGateway, name: str) -> III:
    return register_worker(gw.worker_url, worker_options(name))


def _trigger(worker: III, function_id: str, payload: Any) -> Any:
    return worker.trigger({"function_id": function_id, "payload": payload})


def _expect_error(worker: III, function_id: str, payload: Any) -> InvocationError:
    try:
        result = _trigger(worker, function_id, payload)
    except InvocationError as exc:
        return exc
    raise AssertionError(f"{function_id} {payload} returned {result!r} instead of failing")


def _edge_load(edge: ConfiguredGateway, halfway: Callable[[], None]) -> None:
    """The edge worker: a state trigger on "orders", an http route, and a bounded call mix.

    ``halfway`` runs in the middle (a scrape of every gateway): the labelled series the first
    half creates are then seen before the second half moves them, so rates and quantiles over
    them are defined (Prometheus does not count a series' first sample as an increase).
    """
    worker = _connect(edge, "dash-edge")
    try:
        seen = Inbox()
        worker.register_function("app::on_order", seen.recorder())
        bind(worker, "state", "app::on_order", {"scope": "orders"})
        worker.register_function("app::hello", lambda req: {"status_code": 200, "body": {"ok": True}})
        bind(worker, "http", "app::hello", {"api_path": "/hello", "http_method": "GET"})
        _expect_error(worker, "test::no-such-function", {})  # every registration is applied

        for i in range(ORDERS):
            if i == ORDERS // 2:
                halfway()
            _trigger(worker, "state::set", {"scope": "orders", "key": f"o{i}", "value": {"n": i}})
            assert _trigger(worker, "state::get", {"scope": "orders", "key": f"o{i}"}) == {"n": i}
            ops = [{"type": "increment", "path": "n", "by": 1}]
            _trigger(worker, "state::update", {"scope": "orders", "key": f"o{i}", "ops": ops})
            _trigger(worker, "state::set", {"scope": "profiles", "key": f"p{i}", "value": {"i": i}})
        assert len(_trigger(worker, "state::list", {"scope": "orders"})) == ORDERS
        assert "orders" in _trigger(worker, "state::list_groups", {})["groups"]
        for i in range(5):
            _trigger(worker, "state::delete", {"scope": "orders", "key": f"o{i}"})
        # The region may not write "audit" on the central: FORBIDDEN, counted on the central.
        exc = _expect_error(worker, "state::set", {"scope": "audit", "key": "a", "value": 1})
        assert exc.code == "FORBIDDEN", exc
        _expect_error(worker, "state::set", {"key": "no-scope", "value": 1})  # a malformed call

        status, body = http_get(edge.http_url + "/hello")
        assert (status, json.loads(body)) == (200, {"ok": True})

        # The trigger saw every change of "orders", relayed central -> region -> edge.
        expected = ORDERS * 2 + 5
        for _ in range(expected):
            asyncio.run(seen.get())
    finally:
        asyncio.run(shutdown(worker))


def _store_load(store: ConfiguredGateway, halfway: Callable[[], None]) -> None:
    worker = _connect(store, "dash-store")
    try:
        for i in range(40):
            if i == 20:
                halfway()
            _trigger(worker, "state::set", {"scope": f"s{i % 4}", "key": f"k{i}", "value": {"i": i}})
        ops = [{"type": "set", "path": "seen", "value": True}]
        _trigger(worker, "state::update", {"scope": "s0", "key": "k0", "ops": ops})
    finally:
        asyncio.run(shutdown(worker))


async def _stranger_and_garbage(fleet: Fleet) -> None:
    """A key the central does not know, and a frame no worker would send."""
    stranger = fleet.keys["stranger"]
    assert fleet.central.link_port is not None
    with pytest.raises(AuthError):
        await connect(
            "127.0.0.1",
            fleet.central.link_port,
            private_key=stranger.key,
            client_id="stranger",
            server_key=fleet.keys["central"].key.public_key(),
        )
    async with aiohttp.ClientSession() as session, session.ws_connect(fleet.edge.worker_url) as ws:
        await ws.send_str("{this is not json")
        await ws.receive()  # the gateway answers (an error) or closes; either way it has counted


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    if not prometheus_available():
        pytest.skip("prometheus/promtool are not installed (apt-get install prometheus)")
    if not redis_available():
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("dashboards")
    redis = RedisServer(tmp / "redis")
    redis.start()
    fleet = Fleet(tmp, redis.url, region_write=("orders", "profiles"))
    prometheus: PrometheusServer | None = None
    try:
        fleet.start()
        prometheus = PrometheusServer(
            tmp / "prometheus", [gw.target for gw in fleet.gateways], rule_files=[ALERTS]
        )
        prometheus.start()
        prom = prometheus
        # A first scrape of every gateway before the load, so rates see it happen.
        wait_until(lambda: prom.value('sum(up{job="iii-gateway"})') == 4, 30, "a first scrape of all four")

        def scraped_again() -> None:
            now = time.time()
            wait_until(lambda: prom.scrapes_since(now) >= 1, 30, "a scrape of every gateway")

        _edge_load(fleet.edge, scraped_again)
        _store_load(fleet.store, scraped_again)
        asyncio.run(_stranger_and_garbage(fleet))
        wait_until(
            lambda: (
                fleet.central.sample("iii_gateway_auth_failures_total", reason="unknown_key") == 1
                and fleet.edge.sample("iii_gateway_protocol_errors_total", reason="bad_json") == 1
            ),
            10,
            "the auth failure and the protocol error to be counted",
        )
        load_ended = time.time()

        # Every target scraped twice after the load (a counter born during the load then has
        # two samples, so rate() over it is defined), and every rule evaluated since.
        wait_until(
            lambda: prom.scrapes_since(load_ended) >= 2, 30, "two scrapes of every gateway after the load"
        )
        wait_until(
            lambda: all(_evaluated_after(rule, load_ended) for rule in prom.rules()),
            30,
            "every alert rule to be evaluated after the load",
        )
        instances = sorted(prom.api("label/instance/values", [("match[]", "iii_gateway_build_info")]))
        yield Scraped(fleet, prometheus, instances, load_ended)
        prometheus.stop()
        assert set(fleet.stop().values()) == {0}, "a gateway did not stop gracefully"
    finally:
        if prometheus is not None:
            prometheus.stop()
        fleet.stop()
        redis.kill()


def _evaluated_after(rule: dict[str, Any], moment: float) -> bool:
    stamp = rule.get("lastEvaluation", "")
    if not stamp or stamp.startswith("0001-"):
        return False
    # RFC 3339 with nanoseconds and a zone; seconds precision is enough here
    base = stamp.split(".")[0].rstrip("Z")
    zone = "+00:00" if stamp.endswith("Z") else stamp[-6:]
    return datetime.fromisoformat(base + zone).timestamp() >= int(moment)


def _exempt(expr: str) -> set[str]:
    return metric_names(expr) & set(NOT_YET_EXPOSED)


def _alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_the_dashboards_have_targets_to_check() -> None:
    targets = dashboard_targets(DASHBOARDS)
    files = {t.dashboard for t in targets}
    assert files == {
        "fleet-overview.json",
        "gateway.json",
        "links-relay.json",
        "storage.json",
        "security.json",
    }
    assert len(targets) > 80


def test_every_dashboard_query_returns_data(scraped: Scraped) -> None:
    prom = scraped.prometheus
    variables = {"instance": regex_alternation(scraped.instances), "datasource": "prometheus"}
    empty: list[str] = []
    still_gaps: list[str] = []
    gained: list[str] = []
    for t in dashboard_targets(DASHBOARDS):
        expr = grafana_interpolate(t.expr, variables, RATE_WINDOW)
        samples = prom.query(expr)  # a query Prometheus rejects fails here with its error
        has_data = any(finite(s) for s in samples)
        exempt = _exempt(t.expr)
        if exempt:
            (gained if has_data else still_gaps).append(f"{t}: {sorted(exempt)}")
        elif not has_data:
            empty.append(f"{t}: {expr} -> {samples}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    assert not gained, (
        "these queries have data now; remove their metrics from NOT_YET_EXPOSED:\n" + "\n".join(gained)
    )
    assert still_gaps or not NOT_YET_EXPOSED  # each entry names metrics of real panels


def test_every_metric_of_dashboards_and_alerts_is_scraped(scraped: Scraped) -> None:
    prom = scraped.prometheus
    used: dict[str, set[str]] = {}
    for t in dashboard_targets(DASHBOARDS):
        for name in metric_names(t.expr):
            used.setdefault(name, set()).add(str(t))
    for alert, expr in _alert_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"alert {alert}")
    assert len(used) > 50
    scraped_names = {n for n in used if prom.api("series", [("match[]", f'{{__name__="{n}"}}')])}
    assert scraped_names <= prom.metric_names()
    missing = {n: sorted(w) for n, w in used.items() if n not in scraped_names and n not in NOT_YET_EXPOSED}
    assert not missing, f"metrics used but never scraped: {json.dumps(missing, indent=1)}"
    appeared = sorted(n for n in NOT_YET_EXPOSED if prom.api("series", [("match[]", f'{{__name__="{n}"}}')]))
    assert not appeared, f"now scraped; remove from NOT_YET_EXPOSED: {appeared}"
    unused = sorted(set(NOT_YET_EXPOSED) - set(used))
    assert not unused, f"NOT_YET_EXPOSED lists metrics nothing uses: {unused}"


def test_alert_rules_are_loaded_and_evaluate_cleanly(scraped: Scraped) -> None:
    rules = scraped.prometheus.rules()
    assert {r["name"] for r in rules} == {name for name, _ in _alert_exprs()}
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not bad, bad
    # A healthy fleet: nothing fires (the "for:" durations are longer than this run anyway,
    # and the burst/drop rules need more than the one refused handshake made here).
    firing = [r["name"] for r in rules if r.get("state") == "firing"]
    assert not firing, firing


def test_the_load_moved_the_metrics_the_dashboards_show(scraped: Scraped) -> None:
    prom = scraped.prometheus
    gw = {g.name: g.target for g in scraped.fleet.gateways}

    def total(expr: str) -> float:
        value = prom.value(expr)
        assert value is not None, expr
        return value

    edge, central, region, store = gw["edge"], gw["central"], gw["region"], gw["store"]
    assert (
        total(f'sum(iii_gateway_requests_total{{instance="{edge}", op="set", outcome="ok"}})') >= 2 * ORDERS
    )
    assert total(
        f'sum(iii_gateway_triggers_fired_total{{instance="{edge}", type="state", outcome="ok"}})'
    ) >= (2 * ORDERS + 5)
    assert (
        total(f'sum(iii_gateway_events_relayed_total{{instance="{edge}", upstream="region"}})') >= 2 * ORDERS
    )
    assert (
        total(f'sum(iii_gateway_events_relayed_total{{instance="{region}", upstream="central"}})')
        >= 2 * ORDERS
    )
    assert total(f'iii_gateway_forbidden_total{{instance="{central}", op="set"}}') == 1
    assert total(f'iii_gateway_auth_failures_total{{instance="{central}", reason="unknown_key"}}') == 1
    assert total(f'iii_gateway_errors_total{{instance="{edge}", code="FORBIDDEN"}}') == 1
    assert total(f'iii_gateway_http_trigger_requests_total{{instance="{edge}", status="2xx"}}') == 1
    assert total(f'iii_gateway_protocol_errors_total{{instance="{edge}", reason="bad_json"}}') == 1
    assert total(f'iii_gateway_bridge_upstream_connected{{instance="{edge}", upstream="region"}}') == 1
    assert total(f'iii_gateway_redis_revision{{instance="{central}"}}') >= 3 * ORDERS
    assert total(f'iii_gateway_kv_keys{{instance="{store}"}}') == 40
    assert total(f'iii_gateway_link_peers_connected{{instance="{central}"}}') == 1


def test_scraped_series_carry_only_bounded_labels(scraped: Scraped) -> None:
    series = scraped.prometheus.api(
        "series", [("match[]", '{job="iii-gateway"}'), ("start", str(scraped.load_ended - 120))]
    )
    assert len(series) > 200
    for s in series:
        name = s["__name__"]
        assert name.startswith(("iii_gateway_", "process_", "python_", "up", "scrape_")), name
        extra = set(s) - BOUNDED_LABELS
        assert not extra, f"{name} carries {extra}"
        values = " ".join(v for k, v in s.items() if k not in ("__name__", "instance"))
        for needle in ("orders", "profiles", "o1", "p1", "audit", "stranger", "dash-edge"):
            assert needle not in values.split(), f"{name} has a label value {needle!r}: {s}"


def test_dashboard_files_reference_the_templated_datasource(scraped: Scraped) -> None:
    # Each target reaches the data through ${datasource}; the variable exists in each file.
    for path in sorted(DASHBOARDS.glob("*.json")):
        model = json.loads(Path(path).read_text())
        names = {v["name"]: v for v in model["templating"]["list"]}
        assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
        assert names["instance"]["definition"] == "label_values(iii_gateway_build_info, instance)"
        # the variable query works against the real Prometheus: it lists the four gateways
        assert len(scraped.instances) == 4
