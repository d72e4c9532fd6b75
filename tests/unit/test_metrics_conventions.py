"""The metric families of a gateway follow the naming rules (DESIGN section 6).

Names start with ``iii_gateway_`` (or are the standard process/GC/platform families), counters
end in ``_total``, durations are ``_seconds`` histograms, and labels come from a small set of
bounded names: never a scope, key, peer address or id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.link.auth import AuthFailure
from gateway.metrics import PREINITIALIZED, Metrics

# Every label name a gateway metric may carry, each with a bounded set of values.
BOUNDED_LABELS = {
    "op",
    "outcome",
    "code",
    "event",
    "type",
    "reason",
    "kind",
    "protocol",
    "status",
    "upstream",
    "result",
    "direction",
    "adapter",
    "version",
    "python",
    # standard collectors
    "generation",
    "implementation",
    "major",
    "minor",
    "patchlevel",
}
STANDARD_PREFIXES = ("process_", "python_")


def families(metrics: Metrics) -> list:  # type: ignore[type-arg]
    return list(metrics.registry.collect())


def test_names_units_and_labels_follow_the_conventions() -> None:
    metrics = Metrics(CollectorRegistry())
    seen = families(metrics)
    assert seen
    for family in seen:
        name = family.name
        assert name.startswith("iii_gateway_") or name.startswith(STANDARD_PREFIXES), name
        if family.type == "counter" and name.startswith("iii_gateway_"):
            # prometheus_client strips _total from the family name and puts it on the sample
            assert any(s.name == name + "_total" for s in family.samples) or not family.samples, name
        if family.type == "histogram":
            assert name.endswith("_seconds"), f"histogram {name} is not in seconds"
        for sample in family.samples:
            extra = set(sample.labels) - BOUNDED_LABELS - {"le"}
            assert not extra, f"{sample.name} has unbounded label(s) {extra}"


def test_every_declared_family_is_exposed_with_help_text() -> None:
    metrics = Metrics(CollectorRegistry())
    names = {f.name: f for f in families(metrics)}
    for expected in (
        "iii_gateway_build_info",
        "iii_gateway_requests",
        "iii_gateway_request_duration_seconds",
        "iii_gateway_trigger_lag_seconds",
        "iii_gateway_log_fsync_seconds",
        "iii_gateway_auth_failures",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ):
        assert expected in names, expected
        assert names[expected].documentation, expected


def test_fixed_label_values_exist_at_zero_before_the_first_increment() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for attribute, values in PREINITIALIZED.items():
        family = getattr(metrics, attribute)
        assert values and family._labelnames and len(family._labelnames) == 1, attribute
    for reason in PREINITIALIZED["auth_failures"]:
        assert registry.get_sample_value("iii_gateway_auth_failures_total", {"reason": reason}) == 0.0
    for event in ("created", "updated", "deleted"):
        assert registry.get_sample_value("iii_gateway_events_total", {"event": event}) == 0.0
    assert registry.get_sample_value("iii_gateway_trigger_drops_total", {"reason": "queue_full"}) == 0.0
    assert registry.get_sample_value("iii_gateway_snapshots_total", {"outcome": "error"}) == 0.0
    assert registry.get_sample_value("iii_gateway_link_bytes_total", {"direction": "out"}) == 0.0


def test_preinitialized_auth_reasons_are_exactly_the_handshake_refusal_reasons() -> None:
    assert set(PREINITIALIZED["auth_failures"]) == {r.value for r in AuthFailure}


def test_two_gateways_in_one_process_have_separate_process_collectors() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.requests.labels("set", "ok").inc()
    assert a.registry.get_sample_value("iii_gateway_requests_total", {"op": "set", "outcome": "ok"}) == 1
    assert b.registry.get_sample_value("iii_gateway_requests_total", {"op": "set", "outcome": "ok"}) is None
    for m in (a, b):
        assert (m.registry.get_sample_value("process_start_time_seconds") or 0) > 0
