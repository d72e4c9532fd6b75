"""A real Prometheus server for tests, and what tests need from its HTTP API.

``PrometheusServer(tmp, targets, rule_files=...)`` writes a config scraping ``targets`` (host:port
of gateways' HTTP ports, job ``iii-gateway``) every second, starts ``prometheus`` (the Debian
package's binary) on a free loopback port with its data in ``tmp``, and waits until it is ready.
Queries go through the HTTP API (``/api/v1/query``, ``series``, ``rules``, ``targets``) with the
standard library only; :meth:`PrometheusServer.wait_for` polls a condition with a deadline
(never a fixed sleep).

Also the dashboard side: :func:`dashboard_targets` lists every query of every Grafana dashboard
JSON file, and :func:`grafana_interpolate` substitutes the variables as Grafana would.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.integration.redis_server import free_port

__all__ = [
    "PROMETHEUS_BIN",
    "PROMTOOL_BIN",
    "DashboardTarget",
    "PrometheusServer",
    "dashboard_targets",
    "finite",
    "grafana_interpolate",
    "metric_names",
    "prometheus_available",
    "regex_alternation",
    "wait_until",
]

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = shutil.which("promtool") or "/usr/bin/promtool"
JOB = "iii-gateway"


def prometheus_available() -> bool:
    return Path(PROMETHEUS_BIN).exists() and Path(PROMTOOL_BIN).exists()


class PrometheusServer:
    """One ``prometheus`` process scraping the given targets every second."""

    def __init__(
        self,
        directory: Path,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "prometheus.yml"
        self.log_path = directory / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
        }
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(self._ready, timeout, "prometheus to be ready")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # -- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        """``GET /api/v1/<path>``; returns ``data``, raises AssertionError on an error status."""
        query = urllib.parse.urlencode(list(params))
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result as a list of samples (a scalar becomes one sample)."""
        data = self.api("query", [("query", expr)])
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that returns one sample (None when it returns none)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} returned {len(result)} samples"
        return float(result[0]["value"][1])

    def scrapes_since(self, moment: float) -> int:
        """The fewest scrapes any target of the job had after ``moment`` (unix seconds)."""
        data = self.api("query", [("query", f'up{{job="{JOB}"}}[5m]')])
        counts = [sum(1 for ts, _ in series["values"] if float(ts) > moment) for series in data["result"]]
        return min(counts, default=0)

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def targets_health(self) -> dict[str, str]:
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
        wait_until(predicate, timeout, what, poll)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# -- dashboards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardTarget:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboard_targets(directory: Path) -> list[DashboardTarget]:
    """Every query target of every dashboard JSON file in ``directory`` (rows included)."""
    found = []
    for path in sorted(directory.glob("*.json")):
        model = json.loads(path.read_text())
        panels = list(model["panels"])
        while panels:
            panel = panels.pop(0)
            panels.extend(panel.get("panels", []))  # panels inside collapsed rows
            for t in panel.get("targets", []):
                found.append(DashboardTarget(path.name, panel["title"], t["refId"], t["expr"]))
    return found


def regex_alternation(values: Iterable[str]) -> str:
    """Grafana's "All" of a multi-value variable inside a PromQL regex: ``(a|b)``, each value
    regex-escaped and the backslashes doubled for the PromQL string literal."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in sorted(values)]
    return "(" + "|".join(escaped) + ")"


def grafana_interpolate(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    """Substitute dashboard variables and Grafana's built-in interval variables."""
    for name in ("__rate_interval", "__interval", "__range"):
        expr = expr.replace("${" + name + "}", rate_interval).replace("$" + name, rate_interval)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


_NAME = re.compile(r"(?<![\w\"{=~,])((?:iii_gateway|process|python)_[a-zA-Z0-9_]+|up|ALERTS)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression of ours selects (names of our conventions: the
    gateway's own, the process collector's, and Prometheus' ``up``)."""
    return set(_NAME.findall(expr))


def finite(sample: dict[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))
