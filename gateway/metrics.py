"""Every Prometheus metric of a gateway, on the gateway's own registry.

``Metrics(registry)`` builds all counters and histograms once; components receive the
``Metrics`` object through their constructor (never a module global), so tests can use a fresh
registry each. Live values (workers connected, queue depths, store revision, link state) are
not updated on hot paths: components expose ``statistics()`` and :class:`LiveCollector` reads
them at scrape time.

Naming: ``iii_gateway_`` prefix, ``_total`` counters, ``_seconds`` histograms. Labels are
bounded enums (op, adapter, upstream, outcome, event, reason, direction); never a scope, key,
peer address or id. The standard ``process_*``, ``python_gc_*`` and ``python_info`` families
(memory, CPU, file descriptors, start time) are on the same registry.

Counters whose label values are a fixed set known here are created at zero for every value
(:data:`PREINITIALIZED`), so a series exists before its first increment: ``rate()`` and
``increase()`` then see the first event, and dashboards show 0 instead of "no data".
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

__all__ = ["PREINITIALIZED", "LiveCollector", "Metrics", "StatsSource"]

# 50 us .. 10 s: loopback ops are sub-millisecond, upstream hops and fsync can be slower.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

StatsSource = Callable[[], Mapping[str, float]]

# Label values created at zero (attribute of Metrics -> values of its one label). The auth
# reasons are gateway.link.auth.AuthFailure's values (a unit test keeps the two in step).
PREINITIALIZED: dict[str, tuple[str, ...]] = {
    "events": ("created", "updated", "deleted"),
    "snapshots": ("ok", "error"),
    "link_bytes": ("in", "out"),
    "trigger_drops": ("queue_full", "unregistered"),
    "auth_failures": (
        "unknown_key",
        "bad_signature",
        "replay",
        "expired",
        "bad_server_key",
        "version",
        "malformed",
        "timeout",
        "rate_limited",
        "channel_binding",
        "denied",
    ),
}


class Metrics:
    """All metric families of one gateway process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "iii_gateway_"

        self.build_info = Gauge(
            p + "build_info", "Build information (value is 1).", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)

        # State functions (whatever the caller: worker, link peer, CLI).
        self.requests = Counter(
            p + "requests_total", "State operations by op and outcome.", ["op", "outcome"], registry=r
        )
        self.request_duration = Histogram(
            p + "request_duration_seconds",
            "State operation duration by op.",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            p + "errors_total",
            "Errors returned to callers, by wire code (a bounded set).",
            ["code"],
            registry=r,
        )

        # Triggers.
        self.events = Counter(
            p + "events_total", "State change events committed, by event type.", ["event"], registry=r
        )
        self.triggers_fired = Counter(
            p + "triggers_fired_total",
            "Trigger handler calls by trigger type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.trigger_drops = Counter(
            p + "trigger_drops_total",
            "Events not delivered to a trigger, by reason.",
            ["reason"],
            registry=r,
        )
        self.trigger_lag = Histogram(
            p + "trigger_lag_seconds",
            "Time from commit to the start of the trigger handler call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # Storage.
        self.fsync_duration = Histogram(
            p + "log_fsync_seconds", "Duration of log fsync calls.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.snapshots = Counter(
            p + "snapshots_total", "Snapshots (compactions) written, by outcome.", ["outcome"], registry=r
        )
        self.log_bytes_written = Counter(
            p + "log_bytes_written_total", "Bytes appended to the write-ahead log.", registry=r
        )

        # Workers and invocations.
        self.invocations = Counter(
            p + "invocations_total",
            "Function invocations by kind (builtin|worker) and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.invocation_duration = Histogram(
            p + "invocation_duration_seconds",
            "Function invocation duration by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.protocol_errors = Counter(
            p + "protocol_errors_total",
            "Malformed or rejected protocol input, by protocol and reason.",
            ["protocol", "reason"],
            registry=r,
        )
        self.worker_connections = Counter(
            p + "worker_connections_total", "Worker WebSocket connections accepted.", registry=r
        )
        self.http_requests = Counter(
            p + "http_trigger_requests_total",
            "Requests served by http triggers, by status class.",
            ["status"],
            registry=r,
        )

        # Federation link.
        self.link_requests = Counter(
            p + "link_requests_total",
            "Operations sent over upstream links, by upstream, op and outcome.",
            ["upstream", "op", "outcome"],
            registry=r,
        )
        self.link_request_duration = Histogram(
            p + "link_request_duration_seconds",
            "Round trip of operations over upstream links.",
            ["upstream", "op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.link_connects = Counter(
            p + "link_connects_total",
            "Upstream connection attempts by upstream and result.",
            ["upstream", "result"],
            registry=r,
        )
        self.link_bytes = Counter(
            p + "link_bytes_total", "Link bytes by direction.", ["direction"], registry=r
        )
        self.auth_failures = Counter(
            p + "auth_failures_total", "Refused link handshakes by reason.", ["reason"], registry=r
        )
        self.forbidden = Counter(
            p + "forbidden_total", "Link operations refused by scope authorization.", ["op"], registry=r
        )
        self.events_relayed = Counter(
            p + "events_relayed_total", "Upstream events relayed to local triggers.", ["upstream"], registry=r
        )
        self.relay_lag = Histogram(
            p + "relay_lag_seconds",
            "Upstream commit to local delivery of relayed events.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.resyncs = Counter(
            p + "resyncs_total",
            "Watch resyncs from a snapshot, by reason.",
            ["upstream", "reason"],
            registry=r,
        )
        self.cache_requests = Counter(
            p + "cache_requests_total", "Edge read cache lookups by result.", ["result"], registry=r
        )

        self.live = LiveCollector()
        r.register(self.live)

        for attribute, values in PREINITIALIZED.items():
            family = getattr(self, attribute)
            for value in values:
                family.labels(value)

        # Process figures (RSS, CPU, fds, start time), GC and interpreter info. The default
        # registry has them already; a registry of our own gets its own instances.
        if r is not REGISTRY:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)


class LiveCollector(Collector):
    """Reads components' ``statistics()`` at scrape time and exposes them.

    A source is registered with fixed labels; each key of the mapping it returns becomes
    ``iii_gateway_<key>`` with those labels: a counter when the key ends in ``_total`` (the
    component keeps a monotonic count), a gauge otherwise. Sources are added by the composition
    root, so a component never knows about Prometheus.
    """

    def __init__(self) -> None:
        self._sources: list[tuple[StatsSource, dict[str, str], dict[str, str]]] = []

    def add(
        self,
        source: StatsSource,
        *,
        labels: Mapping[str, str] | None = None,
        help_text: Mapping[str, str] | None = None,
    ) -> None:
        self._sources.append((source, dict(labels or {}), dict(help_text or {})))

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for source, labels, helps in self._sources:
            try:
                values = source()
            except Exception:  # a broken source must not break the whole scrape
                continue
            names = sorted(labels)
            for key, value in values.items():
                name = "iii_gateway_" + key
                fam = families.get(name)
                if fam is None:
                    text = helps.get(key, key.replace("_", " "))
                    if key.endswith("_total"):
                        fam = CounterMetricFamily(name.removesuffix("_total"), text, labels=names)
                    else:
                        fam = GaugeMetricFamily(name, text, labels=names)
                    families[name] = fam
                fam.add_metric([labels[n] for n in names], float(value))
        yield from families.values()

    def describe(self) -> Iterable[Any]:
        return []
