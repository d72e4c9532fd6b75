"""Write the Grafana dashboards of this directory from the panel lists below.

    python dashboards/generate.py          # rewrite the *.json files
    python dashboards/generate.py --check  # exit 1 if a *.json file differs from what it would write

The JSON files are what Grafana loads (provisioning, or Import in the UI); this script is the
one place panels are edited, so every dashboard gets the same variables, datasource references,
layout and links. ``tests/e2e/test_prometheus_dashboards.py`` runs every query of every JSON file
against a real Prometheus scraping real gateways.

Conventions of the queries: every selector carries ``instance=~"$instance"`` (the instances
come from ``iii_gateway_build_info``, so "All" means every gateway and nothing else); rates use
``$__rate_interval``; latency panels are ``histogram_quantile`` over ``sum by (le, ...)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 41  # Grafana 12.0 and 12.1 (docker-compose.yml runs 12.0); newer ones migrate it on load
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - the one selector every query carries
W = "$__rate_interval"

Panel = dict[str, Any]


# -- panel builders ------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }
    if instant:
        t["instant"] = True
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(
    title: str,
    *pairs: tuple[str, str],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
    width: int = 12,
    decimals: int | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "unit": unit,
        "min": 0,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets(*pairs),
        "_size": (width, 8),
    }


def stat(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    description: str = "",
    red_from: float | None = None,
    legend: str = "",
    width: int = 4,
    decimals: int | None = None,
) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_from is not None:
        steps.append({"color": "red", "value": red_from})
    defaults: dict[str, Any] = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": [target(expr, legend)],
        "_size": (width, 4),
    }


def table(title: str, expr: str, *, description: str = "", width: int = 12) -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        "targets": [target(expr, instant=True)],
        "_size": (width, 6),
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def rate(metric: str, by: str, selector: str = "") -> str:
    sel = f"{I}, {selector}" if selector else I
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{W}]))"


def increase(metric: str, by: str, selector: str = "") -> str:
    sel = f"{I}, {selector}" if selector else I
    return f"sum by ({by}) (increase({metric}{{{sel}}}[{W}]))"


def quantile(q: float, histogram: str, by: str, selector: str = "") -> str:
    sel = f"{I}, {selector}" if selector else I
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket{{{sel}}}[{W}])))"


def p50_p99(histogram: str, by: str, legend: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """The p50 and p99 targets of one histogram, legends prefixed "p50 " and "p99 "."""
    return (
        (quantile(0.5, histogram, by), f"p50 {legend}".rstrip()),
        (quantile(0.99, histogram, by), f"p99 {legend}".rstrip()),
    )


def ratio_failed(counter: str, by: str, ok: str = 'outcome="ok"') -> str:
    """Failed / all, 0 (not "no data") for a group that had calls but no failures."""
    bad = ok.replace("=", "!=", 1)
    total = f"sum by ({by}) (rate({counter}{{{I}}}[{W}]))"
    return f"(sum by ({by}) (rate({counter}{{{I}, {bad}}}[{W}])) or 0 * {total}) / {total}"


def gauge(metric: str, selector: str = "") -> str:
    sel = f"{I}, {selector}" if selector else I
    return f"{metric}{{{sel}}}"


# -- dashboards --------------------------------------------------------------------------------


def fleet_overview() -> list[Panel]:
    req = "iii_gateway_requests_total"
    return [
        row("Fleet"),
        stat("Gateways up", f"sum(up{{{I}}})", description="Gateways Prometheus scraped successfully."),
        stat(
            "Gateways down",
            f"count(up{{{I}}}) - sum(up{{{I}}})",
            red_from=1,
            description="Gateways listed in iii_gateway_build_info that Prometheus cannot scrape now.",
        ),
        stat("State ops / s", f"sum(rate({req}{{{I}}}[{W}]))", unit="ops"),
        stat(
            "Error ratio",
            f'(sum(rate({req}{{{I}, outcome!="ok"}}[{W}])) or vector(0)) / sum(rate({req}{{{I}}}[{W}]))',
            unit="percentunit",
            red_from=0.05,
        ),
        stat("Workers connected", f"sum({gauge('iii_gateway_workers_connected')})"),
        stat(
            "Upstream links down",
            f"count({gauge('iii_gateway_bridge_upstream_connected')} == 0) or vector(0)",
            red_from=1,
            description="Bridge upstreams without a live, authenticated link.",
        ),
        row("Traffic"),
        timeseries("State ops / s by gateway", (rate(req, "instance"), "{{instance}}"), unit="ops"),
        timeseries(
            "State ops / s by op and outcome", (rate(req, "op, outcome"), "{{op}} {{outcome}}"), unit="ops"
        ),
        timeseries(
            "Error ratio by gateway",
            (ratio_failed(req, "instance"), "{{instance}}"),
            unit="percentunit",
            description="Share of state operations that failed (any caller: workers and link peers).",
        ),
        timeseries("Errors / s by code", (rate("iii_gateway_errors_total", "code"), "{{code}}"), unit="ops"),
        row("Latency"),
        timeseries(
            "p50 latency by op",
            (quantile(0.5, "iii_gateway_request_duration_seconds", "op"), "{{op}}"),
            unit="s",
        ),
        timeseries(
            "p99 latency by op",
            (quantile(0.99, "iii_gateway_request_duration_seconds", "op"), "{{op}}"),
            unit="s",
        ),
        row("Processes"),
        timeseries("Resident memory", (gauge("process_resident_memory_bytes"), "{{instance}}"), unit="bytes"),
        timeseries(
            "CPU", (f"rate(process_cpu_seconds_total{{{I}}}[{W}])", "{{instance}}"), unit="percentunit"
        ),
        table(
            "Versions",
            f"count by (version, python) (iii_gateway_build_info{{{I}}})",
            description="Gateways per build version.",
            width=24,
        ),
    ]


def gateway_detail() -> list[Panel]:
    req = "iii_gateway_requests_total"
    return [
        row("Overview"),
        stat("Uptime", f"time() - {gauge('process_start_time_seconds')}", unit="s", legend="{{instance}}"),
        stat("State ops / s", f"sum(rate({req}{{{I}}}[{W}]))", unit="ops"),
        stat(
            "Error ratio",
            f'(sum(rate({req}{{{I}, outcome!="ok"}}[{W}])) or vector(0)) / sum(rate({req}{{{I}}}[{W}]))',
            unit="percentunit",
            red_from=0.05,
        ),
        stat("Workers", f"sum({gauge('iii_gateway_workers_connected')})"),
        stat("Functions", f"sum({gauge('iii_gateway_functions_registered')})"),
        stat("Triggers", f"sum({gauge('iii_gateway_triggers_registered')})"),
        row("State operations"),
        timeseries("Ops / s by op and outcome", (rate(req, "op, outcome"), "{{op}} {{outcome}}"), unit="ops"),
        timeseries(
            "Latency by op",
            *p50_p99("iii_gateway_request_duration_seconds", "op", "{{op}}"),
            unit="s",
        ),
        timeseries("Errors / s by code", (rate("iii_gateway_errors_total", "code"), "{{code}}"), unit="ops"),
        timeseries(
            "In flight",
            (gauge("iii_gateway_worker_requests_in_flight"), "worker requests"),
            (gauge("iii_gateway_invocations_in_flight"), "invocations of worker functions"),
            (gauge("iii_gateway_link_requests_in_flight"), "link requests served"),
        ),
        row("Workers and invocations"),
        timeseries(
            "Workers",
            (gauge("iii_gateway_workers_connected"), "connected"),
            (gauge("iii_gateway_functions_registered"), "functions"),
            (gauge("iii_gateway_triggers_registered"), "triggers"),
            (f"sum(rate(iii_gateway_worker_connections_total{{{I}}}[{W}])) * 60", "connections / min"),
        ),
        timeseries(
            "Invocations / s by kind and outcome",
            (rate("iii_gateway_invocations_total", "kind, outcome"), "{{kind}} {{outcome}}"),
            unit="ops",
        ),
        timeseries(
            "Invocation latency",
            *p50_p99("iii_gateway_invocation_duration_seconds", "kind", "{{kind}}"),
            unit="s",
        ),
        timeseries(
            "Protocol errors / s",
            (rate("iii_gateway_protocol_errors_total", "protocol, reason"), "{{protocol}} {{reason}}"),
            unit="ops",
            description="Malformed or refused frames from workers and link peers.",
        ),
        row("Triggers"),
        timeseries(
            "Events / s by type", (rate("iii_gateway_events_total", "event"), "{{event}}"), unit="ops"
        ),
        timeseries(
            "Trigger calls / s by type and outcome",
            (rate("iii_gateway_triggers_fired_total", "type, outcome"), "{{type}} {{outcome}}"),
            unit="ops",
        ),
        timeseries(
            "Trigger lag (commit to handler start)",
            *p50_p99("iii_gateway_trigger_lag_seconds", "instance", ""),
            unit="s",
        ),
        timeseries(
            "Trigger queues",
            (gauge("iii_gateway_state_trigger_pending"), "pending"),
            (gauge("iii_gateway_state_trigger_running"), "running"),
            (gauge("iii_gateway_state_triggers"), "state bindings"),
        ),
        timeseries(
            "Trigger drops by reason",
            (increase("iii_gateway_trigger_drops_total", "reason"), "{{reason}}"),
            description="queue_full: handlers slower than writes; unregistered: pending events of a "
            "binding that went away (its worker disconnected).",
        ),
        timeseries(
            "HTTP trigger responses / s",
            (rate("iii_gateway_http_trigger_requests_total", "status"), "{{status}}"),
            unit="reqps",
        ),
        row("Process"),
        timeseries("Resident memory", (gauge("process_resident_memory_bytes"), "{{instance}}"), unit="bytes"),
        timeseries(
            "CPU and file descriptors",
            (f"rate(process_cpu_seconds_total{{{I}}}[{W}])", "cpu {{instance}}"),
            (gauge("process_open_fds"), "open fds {{instance}}"),
        ),
    ]


def links_relay() -> list[Panel]:
    up = "iii_gateway_bridge_upstream_connected"
    return [
        row("Links"),
        stat("Upstream links up", f"sum({gauge(up)})"),
        stat("Upstream links down", f"count({gauge(up)} == 0) or vector(0)", red_from=1),
        stat("Relays live", f"sum({gauge('iii_gateway_bridge_relay_live')})"),
        stat("Downstream peers", f"sum({gauge('iii_gateway_link_peers_connected')})"),
        stat(
            "Events relayed / s",
            f"sum(rate(iii_gateway_events_relayed_total{{{I}}}[{W}]))",
            unit="ops",
        ),
        stat(
            "Outbox entries",
            f"sum({gauge('iii_gateway_outbox_entries')})",
            red_from=1000,
            description="Writes waiting for an unreachable upstream.",
        ),
        timeseries(
            "Upstream link up",
            (gauge(up), "{{instance}} -> {{upstream}}"),
            description="1 while the Bridge has an authenticated link to the upstream.",
        ),
        timeseries(
            "Connection attempts by result",
            (
                increase("iii_gateway_link_connects_total", "instance, upstream, result"),
                "{{instance}} -> {{upstream}} {{result}}",
            ),
            description="Reconnects and why they failed (unreachable, unknown_key, bad_server_key, ...).",
        ),
        timeseries(
            "Link round trip by op",
            *p50_p99("iii_gateway_link_request_duration_seconds", "upstream, op", "{{upstream}} {{op}}"),
            unit="s",
        ),
        timeseries(
            "Link requests / s by outcome",
            (
                rate("iii_gateway_link_requests_total", "upstream, op, outcome"),
                "{{upstream}} {{op}} {{outcome}}",
            ),
            unit="ops",
        ),
        timeseries(
            "Link traffic",
            (rate("iii_gateway_link_bytes_total", "instance, direction"), "{{instance}} {{direction}}"),
            unit="Bps",
        ),
        timeseries(
            "Served to downstream gateways",
            (gauge("iii_gateway_link_peers_connected"), "peers {{instance}}"),
            (gauge("iii_gateway_link_watches"), "watches {{instance}}"),
            (gauge("iii_gateway_link_requests_in_flight"), "requests in flight {{instance}}"),
        ),
        row("Relay"),
        timeseries(
            "Events relayed / s",
            (rate("iii_gateway_events_relayed_total", "instance, upstream"), "{{instance}} <- {{upstream}}"),
            unit="ops",
        ),
        timeseries(
            "Relay lag (upstream commit to local delivery)",
            *p50_p99("iii_gateway_relay_lag_seconds", "instance, upstream", "{{instance}} <- {{upstream}}"),
            unit="s",
        ),
        timeseries(
            "Relay live and revision",
            (gauge("iii_gateway_bridge_relay_live"), "live {{instance}} <- {{upstream}}"),
            (gauge("iii_gateway_bridge_relay_revision"), "revision {{instance}} <- {{upstream}}"),
        ),
        timeseries(
            "Resyncs and duplicates",
            (
                increase("iii_gateway_bridge_relay_resyncs_total", "instance, upstream"),
                "resyncs {{instance}} <- {{upstream}}",
            ),
            (
                increase("iii_gateway_bridge_relay_duplicates_dropped_total", "instance, upstream"),
                "duplicates dropped {{instance}} <- {{upstream}}",
            ),
            description="A resync is a catch-up from a snapshot when the upstream cannot resume the "
            "watch (history gone, epoch changed); iii_gateway_resyncs_total{reason} says which.",
        ),
        timeseries(
            "Watch streams served",
            (rate("iii_gateway_link_watch_events_sent_total", "instance"), "events sent / s {{instance}}"),
            (increase("iii_gateway_link_watch_cuts_total", "instance"), "slow consumers cut {{instance}}"),
        ),
        row("Edge: outbox and read cache"),
        timeseries(
            "Outbox depth",
            (gauge("iii_gateway_outbox_entries"), "entries {{instance}} -> {{upstream}}"),
            (gauge("iii_gateway_outbox_bytes"), "bytes {{instance}} -> {{upstream}}"),
        ),
        timeseries(
            "Outbox age and replay",
            (gauge("iii_gateway_outbox_oldest_age_seconds"), "oldest entry age {{instance}} -> {{upstream}}"),
            (
                rate("iii_gateway_outbox_replayed_total", "instance, upstream"),
                "replayed / s {{instance}} -> {{upstream}}",
            ),
        ),
        timeseries(
            "Cache hit ratio",
            (
                f'sum by (instance) (rate(iii_gateway_cache_requests_total{{{I}, result="hit"}}[{W}])) / '
                f'sum by (instance) (rate(iii_gateway_cache_requests_total{{{I}, result=~"hit|miss"}}[{W}]))',
                "{{instance}}",
            ),
            unit="percentunit",
            description="Reads served from the edge cache among cacheable reads (bypass: the cache "
            "was not live, e.g. during a reconnect).",
        ),
        timeseries(
            "Cache",
            (gauge("iii_gateway_cache_entries"), "entries {{instance}}"),
            (increase("iii_gateway_cache_evictions_total", "instance"), "evictions {{instance}}"),
            (rate("iii_gateway_cache_requests_total", "instance, result"), "{{result}} / s {{instance}}"),
        ),
    ]


def storage() -> list[Panel]:
    return [
        row("Embedded kv store"),
        stat("Revision", f"max({gauge('iii_gateway_kv_revision')})"),
        stat("Keys", f"sum({gauge('iii_gateway_kv_keys')})"),
        stat("Scopes", f"sum({gauge('iii_gateway_kv_scopes')})"),
        stat("Log size", f"sum({gauge('iii_gateway_kv_log_bytes')})", unit="bytes"),
        stat(
            "fsync p99",
            f"histogram_quantile(0.99, sum by (le) (rate(iii_gateway_log_fsync_seconds_bucket{{{I}}}[{W}])))",
            unit="s",
        ),
        stat(
            "Snapshot errors",
            f'sum(increase(iii_gateway_snapshots_total{{{I}, outcome="error"}}[1h]))',
            red_from=1,
            description="Failed snapshots (compactions) in the last hour.",
        ),
        timeseries(
            "Revision",
            (gauge("iii_gateway_kv_revision"), "kv {{instance}}"),
            (gauge("iii_gateway_redis_revision"), "redis {{instance}}"),
            description="The store's revision: every write moves it by one.",
        ),
        timeseries(
            "Keys and scopes",
            (gauge("iii_gateway_kv_keys"), "keys {{instance}}"),
            (gauge("iii_gateway_kv_scopes"), "scopes {{instance}}"),
        ),
        timeseries(
            "Log size",
            (gauge("iii_gateway_kv_log_bytes"), "log {{instance}}"),
            (gauge("iii_gateway_kv_log_bytes_since_snapshot"), "since last snapshot {{instance}}"),
            (gauge("iii_gateway_kv_write_buffer_bytes"), "write buffer {{instance}}"),
            unit="bytes",
        ),
        timeseries(
            "Log writes",
            (rate("iii_gateway_log_bytes_written_total", "instance"), "{{instance}}"),
            unit="Bps",
        ),
        timeseries(
            "fsync duration",
            *p50_p99("iii_gateway_log_fsync_seconds", "instance", "{{instance}}"),
            unit="s",
        ),
        timeseries(
            "fsyncs / s",
            (rate("iii_gateway_kv_fsyncs_total", "instance"), "{{instance}}"),
            unit="ops",
        ),
        timeseries(
            "Snapshots (compactions)",
            (increase("iii_gateway_snapshots_total", "instance, outcome"), "{{outcome}} {{instance}}"),
            (gauge("iii_gateway_kv_last_snapshot_revision"), "last snapshot revision {{instance}}"),
            (gauge("iii_gateway_kv_log_segments"), "log segments {{instance}}"),
        ),
        timeseries(
            "Recovery",
            (gauge("iii_gateway_kv_torn_tail_truncations_total"), "torn tails truncated {{instance}}"),
            description="Torn log tails found and truncated at start (a crash mid-write).",
        ),
        row("Redis"),
        timeseries(
            "Redis connection and event stream",
            (gauge("iii_gateway_redis_connected"), "connected {{instance}}"),
            (gauge("iii_gateway_redis_stream_lag"), "events behind {{instance}}"),
        ),
        timeseries(
            "Redis reconnects and retries",
            (increase("iii_gateway_redis_reconnects_total", "instance"), "reconnects {{instance}}"),
            (increase("iii_gateway_redis_cas_retries_total", "instance"), "update retries {{instance}}"),
            (increase("iii_gateway_redis_events_missed_total", "instance"), "events missed {{instance}}"),
        ),
        timeseries(
            "Redis events delivered / s",
            (rate("iii_gateway_redis_events_delivered_total", "instance"), "{{instance}}"),
            unit="ops",
        ),
        row("Change history (link watches)"),
        timeseries(
            "History ring",
            (gauge("iii_gateway_link_history_changes"), "changes kept {{instance}}"),
            (gauge("iii_gateway_link_history_revision"), "newest {{instance}}"),
            (gauge("iii_gateway_link_history_floor_revision"), "oldest resumable {{instance}}"),
            description="How far back a downstream gateway can resume its watch without a resync.",
        ),
    ]


def security() -> list[Panel]:
    return [
        row("Link authentication"),
        stat(
            "Refused handshakes (1 h)",
            f"sum(increase(iii_gateway_auth_failures_total{{{I}}}[1h]))",
            red_from=1,
        ),
        stat(
            "Forbidden requests (1 h)",
            f"sum(increase(iii_gateway_forbidden_total{{{I}}}[1h])) or vector(0)",
            red_from=1,
        ),
        stat("Authorized peers", f"sum({gauge('iii_gateway_link_authorized_peers')})"),
        stat("Peers connected", f"sum({gauge('iii_gateway_link_peers_connected')})"),
        timeseries(
            "Refused handshakes by reason",
            (increase("iii_gateway_auth_failures_total", "reason"), "{{reason}}"),
            description="unknown_key: a key not in the authorized-peers file; bad_signature, replay, "
            "expired: a forged or replayed handshake (or clock skew); rate_limited: an address over "
            "its failure budget.",
        ),
        timeseries(
            "Refused handshakes by gateway",
            (increase("iii_gateway_auth_failures_total", "instance"), "{{instance}}"),
        ),
        timeseries(
            "Forbidden requests by op",
            (increase("iii_gateway_forbidden_total", "instance, op"), "{{instance}} {{op}}"),
            description="Requests of authenticated peers outside their read/write/watch scope patterns.",
        ),
        timeseries(
            "Connections to upstreams by result",
            (
                increase("iii_gateway_link_connects_total", "instance, upstream, result"),
                "{{instance}} -> {{upstream}} {{result}}",
            ),
            description="The downstream side: an upstream that refuses our key (unknown_key) or "
            "presents another key than the pinned one (bad_server_key).",
        ),
        timeseries(
            "FORBIDDEN and UNAUTHORIZED errors returned to callers",
            (
                rate("iii_gateway_errors_total", "instance, code", 'code=~"FORBIDDEN|UNAUTHORIZED"'),
                "{{instance}} {{code}}",
            ),
            unit="ops",
        ),
    ]


DASHBOARDS: dict[str, tuple[str, str, str, bool, Any]] = {
    # file: (uid, title, description, multi-instance, panels)
    "fleet-overview.json": (
        "iii-gateway-fleet",
        "iii-gateway / Fleet overview",
        "Every gateway at a glance: up, traffic, errors, latency.",
        True,
        fleet_overview,
    ),
    "gateway.json": (
        "iii-gateway-detail",
        "iii-gateway / Gateway",
        "One gateway in detail: state operations, workers, invocations, triggers, protocol errors.",
        False,
        gateway_detail,
    ),
    "links-relay.json": (
        "iii-gateway-links",
        "iii-gateway / Links and relay",
        "Federation links, event relay, edge outbox and read cache.",
        True,
        links_relay,
    ),
    "storage.json": (
        "iii-gateway-storage",
        "iii-gateway / Storage",
        "The embedded kv store (log, fsync, snapshots), Redis, and the change history.",
        True,
        storage,
    ),
    "security.json": (
        "iii-gateway-security",
        "iii-gateway / Security",
        "Link authentication failures and authorization refusals.",
        True,
        security,
    ),
}


def layout(panels: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns; number them."""
    x = y = line_height = 0
    out = []
    for number, panel in enumerate(panels, start=1):
        width, height = panel.pop("_size")
        if x + width > 24 or panel["type"] == "row":
            x, y, line_height = 0, y + line_height, 0
        panel = {"id": number, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel}
        if panel["type"] == "row":
            y += height
        else:
            x += width
            line_height = max(line_height, height)
        out.append(panel)
    return out


def variables(multi: bool) -> dict[str, Any]:
    query = "label_values(iii_gateway_build_info, instance)"
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
            },
            {
                "name": "instance",
                "label": "Gateway",
                "type": "query",
                "datasource": DS,
                "definition": query,
                "query": {
                    "qryType": 1,
                    "query": query,
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                },
                "current": {},
                "hide": 0,
                "includeAll": multi,
                "multi": multi,
                "options": [],
                "refresh": 2,
                "regex": "",
                "skipUrlSync": False,
                "sort": 1,
            },
        ]
    }


def dashboard(uid: str, title: str, description: str, multi: bool, panels: list[Panel]) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "title": "iii-gateway dashboards",
                "type": "dashboards",
                "tags": ["iii-gateway"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": layout(panels),
        "preload": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["iii-gateway"],
        "templating": variables(multi),
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def render() -> dict[str, str]:
    out = {}
    for name, (uid, title, description, multi, build) in DASHBOARDS.items():
        out[name] = json.dumps(dashboard(uid, title, description, multi, build()), indent=2) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
