"""The files in deploy/: configs, docker compose, Dockerfile, key setup script, systemd unit.

- every config under deploy/ passes ``iii-gateway check-config`` (a subprocess, as an operator
  runs it), given the environment it documents; a required variable left unset is reported by
  name;
- docker-compose.yml parses, names only public images (python, redis, prom/prometheus,
  grafana/grafana) or the image built from deploy/Dockerfile, and mounts only paths that exist;
- the Dockerfile builds from python:3.11-slim, runs as a non-root user, exposes the three ports
  and checks /healthz;
- deploy/keygen.sh (the compose ``keygen`` service) really makes keys and a peers file the
  gateway accepts, and keeps existing keys when run again;
- the systemd unit passes ``systemd-analyze verify`` and carries the hardening it promises.

(That the configs also start and federate is shown by tests/e2e/test_prometheus_dashboards.py,
which runs central.yaml, region.yaml, edge.yaml and examples/kv-file.yaml as real processes.)
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.link.acl import load_authorized_peers
from gateway.link.auth import format_public_key, generate_private_key, load_private_key

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "iii-gateway.service"

PUBLIC_IMAGES = ("python", "redis", "prom/prometheus", "grafana/grafana")
LOCAL_IMAGE = "iii-gateway:local"


def configs() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if "prometheus" not in p.parts)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def public_key() -> str:
    return format_public_key(generate_private_key())


# -- configs -----------------------------------------------------------------------------------


def test_the_deploy_configs_are_there() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in configs()}
    assert {"configs/central.yaml", "configs/region.yaml", "configs/edge.yaml"} <= names
    assert {"examples/kv-file.yaml", "examples/redis.yaml"} <= names


def test_every_config_passes_check_config(public_key: str) -> None:
    files = [str(p.relative_to(ROOT)) for p in configs()]
    result = cli("check-config", *files, env={"III_UPSTREAM_PUBLIC_KEY": public_key})
    assert result.returncode == 0, result.stderr
    ok_lines = [line for line in result.stdout.splitlines() if line.startswith("ok: ")]
    assert len(ok_lines) == len(files), result.stdout


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("central", ["state adapter redis", "link on 0.0.0.0:49135"]),
        ("region", ["state adapter bridge to central", "link on 0.0.0.0:49135"]),
        ("edge", ["state adapter bridge to central", "link off"]),
    ],
)
def test_each_role_config_means_what_its_name_says(name: str, summary: list[str], public_key: str) -> None:
    result = cli("check-config", f"deploy/configs/{name}.yaml", env={"III_UPSTREAM_PUBLIC_KEY": public_key})
    assert result.returncode == 0, result.stderr
    for fragment in summary:
        assert fragment in result.stdout, result.stdout


def test_the_edge_config_enables_the_cache_and_the_outbox(public_key: str) -> None:
    result = cli(
        "serve",
        "-c",
        "deploy/configs/edge.yaml",
        "--print-config",
        env={"III_UPSTREAM_PUBLIC_KEY": public_key, "III_DATA_DIR": "/srv/edge"},
    )
    assert result.returncode == 0, result.stderr
    bridge = yaml.safe_load(result.stdout)["workers"][0]["config"]["adapter"]["config"]
    assert bridge["cache"]["enabled"] is True
    assert bridge["outbox"] == {**bridge["outbox"], "enabled": True, "path": "/srv/edge/outbox"}
    assert bridge["upstreams"][0]["public_key"] == public_key


@pytest.mark.parametrize("name", ["region", "edge"])
def test_a_bridge_config_without_the_pinned_key_names_the_variable(name: str) -> None:
    result = cli("check-config", f"deploy/configs/{name}.yaml")
    assert result.returncode == 2
    assert "III_UPSTREAM_PUBLIC_KEY" in result.stderr and "public_key" in result.stderr
    assert "Traceback" not in result.stderr


# -- docker compose ---------------------------------------------------------------------------


def compose() -> dict[str, object]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_has_the_federation_and_its_monitoring() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"keygen", "redis", "central", "edge-1", "edge-2", "prometheus", "grafana"}
    for gateway in ("central", "edge-1", "edge-2"):
        deps = services[gateway]["depends_on"]
        assert deps["keygen"] == {"condition": "service_completed_successfully"}, gateway
    assert services["central"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "redis://redis:6379" in services["central"]["environment"]["REDIS_URL"]
    for edge in ("edge-1", "edge-2"):
        env = services[edge]["environment"]
        assert (
            env["III_IDENTITY"] == f"/keys/{edge}.key"
            and env["III_UPSTREAM_ENDPOINT"] == "tcp://central:49135"
        )
        # the edges pin the central's key written by keygen.sh
        assert "/keys/central.pub" in " ".join(services[edge]["command"])
    assert "EDGES" in services["keygen"]["environment"]
    assert services["keygen"]["environment"]["EDGES"].split() == ["edge-1", "edge-2"]


def test_compose_images_are_public_or_built_here() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        build = service.get("build")
        if build is not None:
            assert image == LOCAL_IMAGE, name
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
            continue
        assert image, f"{name} has neither image nor build"
        repository, _, tag = image.partition(":")
        assert repository in PUBLIC_IMAGES, f"{name}: {image} is not one of {PUBLIC_IMAGES}"
        assert tag and tag != "latest", f"{name}: pin the image version ({image})"
    # services using the local image without building it come after one that builds it
    services = compose()["services"]
    assert any("build" in s for s in services.values())


def test_compose_mounts_only_files_of_the_repository() -> None:
    doc = compose()
    named = set(doc.get("volumes") or {})
    mounted = []
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in named:
                continue
            path = (COMPOSE.parent / source).resolve()
            assert path.exists(), f"{name} mounts {source}, which does not exist"
            assert ROOT in path.parents or path == ROOT, f"{name} mounts {source} from outside the repository"
            mounted.append((name, path, target))
    targets = {(n, p.relative_to(ROOT).as_posix()): t for n, p, t in mounted}
    assert targets[("prometheus", "deploy/prometheus/alerts.yml")] == "/etc/prometheus/alerts.yml"
    assert targets[("grafana", "dashboards")] == "/var/lib/grafana/dashboards/iii-gateway"
    assert targets[("central", "deploy/configs")] == "/etc/iii-gateway"


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/iii-gateway.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards/iii-gateway"
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    prometheus_port = compose()["services"]["prometheus"]["ports"][0]
    assert prometheus_port.endswith(":9090")


def test_the_prometheus_scrape_targets_are_the_compose_gateways() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "iii-gateway"]
    hosts = {t.split(":")[0] for sc in job["static_configs"] for t in sc["targets"]}
    assert hosts == {"central", "edge-1", "edge-2"} and hosts <= set(compose()["services"])


# -- Dockerfile --------------------------------------------------------------------------------


def dockerfile() -> list[str]:
    """Instructions, with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_builds_on_python_slim_and_runs_unprivileged() -> None:
    lines = dockerfile()
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    exposed = {p for ln in lines if ln.startswith("EXPOSE ") for p in ln.split()[1:]}
    assert exposed == {"49134", "3111", "49135"}
    (health,) = [ln for ln in lines if ln.startswith("HEALTHCHECK ")]
    assert "/healthz" in health
    assert any(ln.startswith("ENTRYPOINT") and "iii-gateway" in ln for ln in lines)


def test_dockerfile_copies_only_what_exists() -> None:
    for line in dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"


# -- keygen.sh ---------------------------------------------------------------------------------


@pytest.fixture
def iii_gateway_on_path(tmp_path: Path) -> dict[str, str]:
    """An ``iii-gateway`` command on PATH that runs this checkout (as the installed one would)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "iii-gateway"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m gateway "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def run_keygen(keys: Path, path_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh") or "/bin/sh"
    return subprocess.run(
        [sh, str(DEPLOY / "keygen.sh")],
        env={**path_env, "KEYS_DIR": str(keys), "EDGES": "edge-1 edge-2"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keygen_script_makes_keys_and_a_peers_file_the_gateway_accepts(
    tmp_path: Path, iii_gateway_on_path: dict[str, str]
) -> None:
    keys = tmp_path / "keys"
    result = run_keygen(keys, iii_gateway_on_path)
    assert result.returncode == 0, result.stderr
    for name in ("central", "edge-1", "edge-2"):
        key_file = keys / f"{name}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        public = (keys / f"{name}.pub").read_text().strip()
        assert public == format_public_key(load_private_key(str(key_file)))
    peers = load_authorized_peers(str(keys / "peers.yaml"))
    edge_1 = format_public_key(load_private_key(str(keys / "edge-1.key")))
    assert len(peers) == 2
    assert f"central public key {(keys / 'central.pub').read_text().strip()}" in result.stdout
    assert edge_1 in (keys / "peers.yaml").read_text()

    # Run again: the keys stay (peers that pinned them keep working).
    before = {p.name: p.read_bytes() for p in keys.glob("*.key")}
    again = run_keygen(keys, iii_gateway_on_path)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in keys.glob("*.key")} == before
    assert "created" not in again.stdout


# -- systemd -----------------------------------------------------------------------------------


def unit_entries() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def test_systemd_unit_is_hardened() -> None:
    e = unit_entries()
    assert e["Service.ExecStart"][0].split()[1:4] == ["serve", "-c", "/etc/iii-gateway/gateway.yaml"]
    assert e["Service.DynamicUser"] == ["yes"]
    assert e["Service.StateDirectory"] == ["iii-gateway"]
    assert e["Service.ProtectSystem"] == ["strict"]
    assert e["Service.Restart"] == ["on-failure"]
    assert e["Service.KillSignal"] == ["SIGTERM"]
    assert e["Service.NoNewPrivileges"] == ["yes"]
    assert e["Service.CapabilityBoundingSet"] == [""]
    assert e["Install.WantedBy"] == ["multi-user.target"]
    # the identity key reaches the dynamic user as a credential, and the config points at it
    assert e["Service.LoadCredential"][0].startswith("identity.key:")
    assert "III_IDENTITY=%d/identity.key" in e["Service.Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this interpreter.
    text = UNIT.read_text().replace("/usr/local/bin/iii-gateway", f"{sys.executable} -m gateway")
    unit = tmp_path / "iii-gateway.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # and it does reject a broken unit
    unit.write_text(text.replace("Type=exec", "Type=exec\nRestart=sometimes"))
    broken = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "restart specifier" in broken.stderr, broken.stderr
