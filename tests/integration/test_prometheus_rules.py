"""The alert rules and the Prometheus config in deploy/prometheus, checked by the real promtool.

``promtool test rules`` runs ``deploy/prometheus/tests/alerts_test.yml``: for every alert, input
series where it must fire and series where it must not, evaluated before and after its ``for:``
duration, with the exact labels and annotations expected. A mutated copy of the rules must fail
those tests, so they are not vacuous.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.prometheus import PROMTOOL_BIN, prometheus_available

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
RULE_TESTS = PROM_DIR / "tests" / "alerts_test.yml"

pytestmark = pytest.mark.skipif(not prometheus_available(), reason="promtool is not installed")

EXPECTED_ALERTS = {
    "IiiGatewayDown",
    "IiiGatewayUpstreamLinkDown",
    "IiiGatewayRelayStalled",
    "IiiGatewayRelayLagHigh",
    "IiiGatewayOutboxGrowing",
    "IiiGatewayOutboxStale",
    "IiiGatewayAuthFailureBurst",
    "IiiGatewayErrorRatioHigh",
    "IiiGatewayTriggerDrops",
}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL_BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rules(path: Path = ALERTS) -> list[dict[str, object]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_check_rules_accepts_the_alerts() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_the_alert_set_and_its_metadata() -> None:
    found = rules()
    assert {r["alert"] for r in found} == EXPECTED_ALERTS
    for rule in found:
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning"), rule
        assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"], rule


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired, quiet = set(), set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == EXPECTED_ALERTS
    # every alert that fires in a test also has series that must not fire it: either a check
    # with no alert expected, or other instances in the same test that are absent from exp_alerts
    for case in doc["tests"]:
        instances = {s["series"].split('instance="')[1].split('"')[0] for s in case["input_series"]}
        expected = {a["exp_labels"]["instance"] for c in case["alert_rule_test"] for a in c["exp_alerts"]}
        names = {c["alertname"] for c in case["alert_rule_test"]}
        assert instances - expected or names & quiet, f"{case['name']}: nothing here must stay quiet"


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_mutated_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """Drop the trigger-drops reason filter and the error-ratio traffic guard: the tests notice."""
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "alerts_test.yml")
    text = ALERTS.read_text()
    for original, mutated in (
        ('iii_gateway_trigger_drops_total{reason="queue_full"}', "iii_gateway_trigger_drops_total"),
        ("> 0.05", "> 0.005"),
    ):
        assert original in text
        (tmp_path / "alerts.yml").write_text(text.replace(original, mutated))
        result = promtool("test", "rules", str(tmp_path / "tests" / "alerts_test.yml"))
        assert result.returncode != 0, f"mutation {mutated!r} went unnoticed"
        assert "FAILED" in result.stdout + result.stderr


def test_prometheus_config_is_valid_with_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # where docker-compose mounts it
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["iii-gateway"]["static_configs"] for t in sc["targets"]]
    assert targets == ["central:3111", "edge-1:3111", "edge-2:3111"]
    config["rule_files"] = [str(ALERTS)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
