"""Whatever the input, the config reader answers with Settings or a ConfigError, nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import dump_settings, parse_settings
from gateway.config.expand import expand_env
from gateway.config.settings import Settings
from gateway.errors import ConfigError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Real keys and names, so generated documents get past the first unknown key and reach the
# deeper readers; plus a few values of every YAML type.
KEYS = [
    "modules", "workers", "port", "gateway", "link", "class", "name", "config", "image", "adapter",
    "store_method", "file_path", "save_interval_ms", "fsync", "compact_after_bytes", "history_size",
    "redis_url", "pool_size", "key_prefix", "identity", "upstreams", "endpoints", "public_key",
    "scopes", "tls", "cache", "outbox", "enabled", "max_entries", "relay_events", "listen",
    "authorized_peers", "http_port", "worker_port", "host", "engine_id", "max_value_bytes",
    "triggers_enabled", "cert", "key", "data_dir", "log_level",
]  # fmt: skip
NAMES = [
    "iii-state", "state", "iii-http", "iii-worker-manager", "kv", "redis", "bridge", "iii-cron",
    "modules::state::StateModule", "modules::state::adapters::Bridge", "modules::api::RestApiModule",
    "file_based", "in_memory", "always", "tcp://h:1", "tls://[::1]:2", "0.0.0.0:49135", "*",
    "${X}", "${X:1}", "${HOME:/h}", "redis://:p@h:1/0", "",
]  # fmt: skip
ENV = {"X": "7", "HOME": "/home/u"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(NAMES),
    st.text(max_size=20),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=40,
)


def outcome(text: str) -> Settings | ConfigError:
    try:
        return parse_settings(text, source="fuzz.yaml", env=ENV)
    except ConfigError as exc:
        assert exc.file is not None and exc.file.startswith("fuzz.yaml")
        return exc


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    outcome(text)


@FUZZ
@given(documents)
def test_arbitrary_yaml_structures(doc: Any) -> None:
    outcome(yaml.safe_dump(doc, sort_keys=False))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=4))
def test_arbitrary_state_configs(config: dict[str, Any]) -> None:
    text = yaml.safe_dump({"workers": [{"name": "iii-state", "config": config}]}, sort_keys=False)
    result = outcome(text)
    if isinstance(result, Settings):  # what loads, prints and loads back unchanged
        assert parse_settings(dump_settings(result), source="fuzz.yaml", env={}) == result


@FUZZ
@given(
    st.text(max_size=80), st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=10), max_size=3)
)
def test_env_expander(text: str, env: dict[str, str]) -> None:
    try:
        out = expand_env(text, env)
    except ConfigError as exc:
        assert "not set" in str(exc)
    else:
        assert isinstance(out, str)
        if "${" not in text:
            assert out == text


@FUZZ
@given(st.text(alphabet="${}:abAB_ \n'\"#-", max_size=60))
def test_env_references_in_values(value: str) -> None:
    outcome(yaml.safe_dump({"gateway": {"engine_id": value, "host": value}}))
    outcome("gateway:\n  engine_id: " + value + "\n")
