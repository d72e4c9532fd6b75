"""The command line as a user runs it: real files, real ``python -m gateway`` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_config_ok(tmp_path: Path) -> None:
    result = cli("check-config", str(EXAMPLES / "kv-file.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {EXAMPLES / 'kv-file.yaml'}: state adapter kv file_based")
    assert result.stderr == ""


def test_check_config_every_example(tmp_path: Path) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    result = cli("check-config", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(files)


def test_check_config_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
        "        config:\n          stor_method: file_based\n",
    )
    result = cli("check-config", path, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f"error: {path}:7: workers[0].config.adapter.config.stor_method: unknown key "
        "(did you mean 'store_method'?); allowed here: store_method, file_path, save_interval_ms, "
        "fsync, compact_after_bytes, history_size"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway: {http_port: 1\n", ":2:1: YAML syntax error"),
        ("", None),  # empty: defaults, with a warning
        ("- a\n", ":1: the top level must be a mapping"),
        ("just a string\n", ":1: expected a mapping at the top level"),
        (
            "gateway:\n  host: ${UNSET_GW_HOST}\n",
            ":2: gateway.host: environment variable 'UNSET_GW_HOST' is not set",
        ),
    ],
)
def test_check_config_error_kinds(tmp_path: Path, text: str, expected: str | None) -> None:
    path = write(tmp_path, "c.yaml", text)
    result = cli("check-config", path, cwd=tmp_path)
    assert "Traceback" not in result.stderr
    if expected is None:
        assert result.returncode == 0
        assert "warning:" in result.stderr and "empty" in result.stderr
    else:
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {path}{expected}")
        assert len(result.stderr.splitlines()) == 1


def test_check_config_uses_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "gateway:\n  http_port: ${GW_HTTP}\n")
    assert cli("check-config", path, cwd=tmp_path).returncode == 2
    result = cli("check-config", path, cwd=tmp_path, env={"GW_HTTP": "8123"})
    assert result.returncode == 0
    assert "http on 127.0.0.1:8123" in result.stdout


def test_check_config_missing_file_and_mixed_results(tmp_path: Path) -> None:
    good = str(EXAMPLES / "kv-memory.yaml")
    missing = str(tmp_path / "nope.yaml")
    result = cli("check-config", good, missing, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.startswith(f"ok: {good}")
    assert result.stderr.startswith(f"error: {missing}: cannot read the config file")
    assert "Traceback" not in result.stderr


def test_check_config_warns_about_ignored_modules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        "modules:\n  - class: modules::stream::StreamModule\n  - class: modules::state::StateModule\n",
    )
    result = cli("check-config", path, cwd=tmp_path)
    assert result.returncode == 0
    assert "warning:" in result.stderr and "modules::stream::StreamModule" in result.stderr


def print_config(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = cli("serve", "--print-config", *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def test_print_config_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        "gateway:\n  host: 10.1.2.3\n  http_port: 8080\n  worker_port: ${GW_WORKER_PORT:4000}\n"
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
        "        config: {redis_url: 'redis://:topsecret@r:6379/0'}\n",
    )
    config = print_config(tmp_path, "-c", path, "--http-port", "9000", env={"GW_WORKER_PORT": "4100"})
    gateway = config["gateway"]
    assert isinstance(gateway, dict)
    assert (gateway["host"], gateway["http_port"], gateway["worker_port"]) == ("10.1.2.3", 9000, 4100)
    state = config["workers"][0]["config"]  # type: ignore[index]
    assert state["adapter"]["name"] == "redis"
    assert "topsecret" not in yaml.safe_dump(config)

    config = print_config(tmp_path, "-c", path, "--store", "in_memory", "--fsync", "always")
    adapter = config["workers"][0]["config"]["adapter"]  # type: ignore[index]
    assert adapter == {
        "name": "kv",
        "config": {
            "store_method": "in_memory",
            "file_path": os.path.join("./data", "state_store"),
            "save_interval_ms": 5000,
            "fsync": "always",
            "compact_after_bytes": 67108864,
            "history_size": 100000,
        },
    }


def test_print_config_without_file_and_all_flags(tmp_path: Path) -> None:
    config = print_config(
        tmp_path,
        "--host", "0.0.0.0", "--worker-port", "0", "--http-port", "0", "--data-dir", "/srv/gw",
        "--engine-id", "edge-7", "--log-level", "debug", "--store", "file_based",
    )  # fmt: skip
    assert config["gateway"] == {
        "engine_id": "edge-7",
        "host": "0.0.0.0",
        "worker_port": 0,
        "http_port": 0,
        "log_level": "debug",
        "max_message_bytes": 67108864,
        "invocation_timeout_ms": 30000,
        "data_dir": "/srv/gw",
    }
    kv = config["workers"][0]["config"]["adapter"]["config"]  # type: ignore[index]
    assert kv["file_path"] == os.path.join("/srv/gw", "state_store")


def test_printed_config_passes_check_config(tmp_path: Path) -> None:
    result = cli("serve", "--print-config", "-c", str(EXAMPLES / "seed-modules.yaml"), cwd=tmp_path)
    assert result.returncode == 0
    path = write(tmp_path, "printed.yaml", result.stdout)
    again = cli("check-config", path, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # the printed form has no ignored modules left


def test_serve_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "gateway: {http_port: 99999}\n")
    result = cli("serve", "-c", path, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {path}:1: gateway.http_port: expected an integer in 0..65535, got integer 99999"
    ]


def test_serve_flag_error_names_the_flag(tmp_path: Path) -> None:
    result = cli("serve", "--worker-port", "70000", "--print-config", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: command line: --worker-port: expected an integer in 0..65535")
    result = cli("serve", "--link-listen", "nowhere", "--print-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "--link-listen" in result.stderr and "Traceback" not in result.stderr


def test_serve_link_listen_flag_needs_link_keys(tmp_path: Path) -> None:
    result = cli("serve", "--link-listen", "127.0.0.1:0", "--print-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "link.identity: required when the link listener is on" in result.stderr


def test_argparse_usage_errors_exit_2(tmp_path: Path) -> None:
    result = cli("serve", "--fsync", "sometimes", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert cli(cwd=tmp_path).returncode == 2  # no command: help on stderr


def test_version(tmp_path: Path) -> None:
    from gateway import __version__

    result = cli("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"iii-gateway {__version__} (python ")
    assert cli("--version", cwd=tmp_path).stdout.strip() == f"iii-gateway {__version__}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_runs_with_the_flags_and_stops_on_sigterm(tmp_path: Path) -> None:
    http_port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    args = ["serve", "--store", "in_memory", "--worker-port", "0", "--http-port", str(http_port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /healthz"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "starting: state adapter kv in_memory" in stderr
    assert "Traceback" not in stderr
