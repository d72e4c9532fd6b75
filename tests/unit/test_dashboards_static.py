"""The Grafana dashboard files: generated from dashboards/generate.py, well formed, and every
query written the same way (the real-Prometheus run is tests/e2e/test_prometheus_dashboards.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
FILES = ("fleet-overview.json", "gateway.json", "links-relay.json", "storage.json", "security.json")


def load(name: str) -> dict[str, Any]:
    model = json.loads((DASHBOARDS / name).read_text())
    assert isinstance(model, dict)
    return model


def all_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    panels = list(model["panels"])
    for panel in list(panels):
        panels.extend(panel.get("panels", []))
    return panels


def test_the_json_files_are_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_dashboard_model(name: str) -> None:
    model = load(name)
    assert model["schemaVersion"] >= 39
    assert model["uid"].startswith("iii-gateway-") and len(model["uid"]) <= 40
    assert model["title"].startswith("iii-gateway / ")
    assert "iii-gateway" in model["tags"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["definition"] == "label_values(iii_gateway_build_info, instance)"
    assert instance["query"]["query"] == instance["definition"]
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("name", FILES)
def test_panels_are_laid_out_and_point_at_the_datasource_variable(name: str) -> None:
    panels = all_panels(load(name))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{p['title']} overlaps another panel"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert t["expr"].strip()


@pytest.mark.parametrize("name", FILES)
def test_every_selector_is_scoped_to_the_instance_variable(name: str) -> None:
    for panel in all_panels(load(name)):
        for t in panel.get("targets", []):
            expr = t["expr"]
            selectors = re.findall(r"[a-zA-Z_:][\w:]*\{[^}]*\}", expr)
            assert selectors, expr
            for selector in selectors:
                assert 'instance=~"$instance"' in selector, f"{panel['title']}: {selector}"
            if "rate(" in expr or "increase(" in expr:
                assert "$__rate_interval" in expr or "[1h]" in expr, (
                    f"{panel['title']}: fixed window in {expr}"
                )


def test_the_dashboards_cover_what_the_operations_issue_lists() -> None:
    def exprs(name: str) -> str:
        return " ".join(t["expr"] for p in all_panels(load(name)) for t in p.get("targets", []))

    fleet, detail, links, storage, security = (exprs(n) for n in FILES)
    for metric in ("up{", "iii_gateway_requests_total", "iii_gateway_request_duration_seconds_bucket"):
        assert metric in fleet, metric
    for metric in (
        "iii_gateway_workers_connected",
        "iii_gateway_triggers_fired_total",
        "iii_gateway_trigger_lag_seconds_bucket",
        "iii_gateway_trigger_drops_total",
        "iii_gateway_invocations_total",
        "iii_gateway_protocol_errors_total",
    ):
        assert metric in detail, metric
    for metric in (
        "iii_gateway_bridge_upstream_connected",
        "iii_gateway_link_connects_total",
        "iii_gateway_link_request_duration_seconds_bucket",
        "iii_gateway_relay_lag_seconds_bucket",
        "iii_gateway_bridge_relay_resyncs_total",
        "iii_gateway_outbox_entries",
        "iii_gateway_cache_requests_total",
    ):
        assert metric in links, metric
    for metric in (
        "iii_gateway_kv_revision",
        "iii_gateway_kv_log_bytes",
        "iii_gateway_log_fsync_seconds_bucket",
        "iii_gateway_snapshots_total",
        "iii_gateway_kv_keys",
    ):
        assert metric in storage, metric
    for metric in ("iii_gateway_auth_failures_total", "iii_gateway_forbidden_total"):
        assert metric in security, metric
