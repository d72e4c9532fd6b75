"""Both accepted config shapes, every adapter, our own sections, and the reference quirks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.config import dump_settings, load_settings, parse_settings, settings_to_config, summarize
from gateway.config.settings import (
    BridgeOutboxSettings,
    ClientTlsSettings,
    Endpoint,
    KvSettings,
    ServerSettings,
    ServerTlsSettings,
    Settings,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"

# The seed document's sample configuration (004), indented as YAML needs, spaces before the
# colons as the document shows them, under the `modules:` list it is an entry of.
SEED_SAMPLE = """\
modules:
  - class : modules::state::StateModule
    config :
      adapter :
        class : modules::state::adapters::KvStore
        config :
          store_method : file_based
          file_path : ./data/state_store
          save_interval_ms : 5000
"""


def parse(text: str, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(text, source="t.yaml", env=env or {})


def test_no_file_gives_the_defaults() -> None:
    settings = load_settings(None, {})
    assert settings == Settings()
    kv = settings.state.adapter.kv
    assert settings.state.adapter.name == "kv"
    assert (kv.store_method, kv.file_path) == ("file_based", "./data/state_store")
    assert (settings.server.worker_port, settings.server.http_port) == (49134, 3111)
    assert settings.link.listen is None


def test_seed_sample_loads() -> None:
    settings = parse(SEED_SAMPLE)
    assert settings.state.adapter.name == "kv"
    assert settings.state.adapter.kv == KvSettings(
        store_method="file_based", file_path="./data/state_store", save_interval_ms=5000
    )
    assert settings.source == "t.yaml"


def test_workers_shape_with_all_reference_knobs() -> None:
    settings = parse(
        """
workers:
  - name: iii-state
    config:
      adapter:
        name: kv
        config: {store_method: in_memory, file_path: /tmp/x, save_interval_ms: 250}
      triggers_enabled: false
      max_value_bytes: 1048576
"""
    )
    st = settings.state
    assert (st.adapter.kv.store_method, st.adapter.kv.file_path) == ("in_memory", "/tmp/x")
    assert st.adapter.kv.save_interval_ms == 250
    assert st.triggers_enabled is False
    assert st.max_value_bytes == 1048576


@pytest.mark.parametrize("name", ["iii-state", "state", "iii-state#1"])
def test_state_worker_aliases(name: str) -> None:
    settings = parse(f"workers: [{{name: '{name}', config: {{max_value_bytes: 7}}}}]")
    assert settings.state.max_value_bytes == 7


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("name: kv", "kv"),
        ("name: redis", "redis"),
        ("class: modules::state::adapters::KvStore", "kv"),
        ("class: modules::state::adapters::RedisAdapter", "redis"),
    ],
)
def test_adapter_by_name_or_class(spelling: str, expected: str) -> None:
    text = (
        f"modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n        {spelling}\n"
    )
    assert parse(text).state.adapter.name == expected


def test_top_level_save_interval_overrides_the_adapters() -> None:
    settings = parse(
        "workers:\n  - name: iii-state\n    config:\n      save_interval_ms: 700\n"
        "      adapter: {name: kv, config: {save_interval_ms: 9000}}\n"
    )
    assert settings.state.adapter.kv.save_interval_ms == 700


def test_max_value_bytes_zero_means_no_limit() -> None:
    assert parse("workers: [{name: iii-state, config: {max_value_bytes: 0}}]").state.max_value_bytes is None


def test_state_knobs_beyond_the_reference() -> None:
    st = parse(
        "workers: [{name: iii-state, config: "
        "{trigger_queue_size: 5, trigger_timeout_ms: 6, trigger_concurrency: 7}}]"
    ).state
    assert (st.trigger_queue_size, st.trigger_timeout_ms, st.trigger_concurrency) == (5, 6, 7)


def test_kv_knobs_beyond_the_reference() -> None:
    kv = parse(
        "workers: [{name: state, config: {adapter: {name: kv, config: "
        "{fsync: always, compact_after_bytes: 1048576, history_size: 0}}}}]"
    ).state.adapter.kv
    assert (kv.fsync, kv.compact_after_bytes, kv.history_size) == ("always", 1048576, 0)


def test_null_means_default() -> None:
    kv = parse(
        "workers: [{name: state, config: {adapter: {name: kv, config: {fsync: null}}}}]"
    ).state.adapter.kv
    assert kv.fsync == "interval"


def test_redis_adapter() -> None:
    settings = parse(
        """
workers:
  - name: iii-state
    config:
      adapter:
        name: redis
        config:
          redis_url: ${REDIS_URL:redis://localhost:6379}
          connect_timeout_ms: 1000
          command_timeout_ms: 2000
          pool_size: 4
          stream_max_len: 5000
          key_prefix: "gw:"
""",
        env={"REDIS_URL": "redis://:pw@r:6380/2"},
    )
    r = settings.state.adapter.redis
    assert settings.state.adapter.name == "redis"
    assert r.redis_url == "redis://:pw@r:6380/2"
    assert (r.connect_timeout_ms, r.command_timeout_ms, r.pool_size) == (1000, 2000, 4)
    assert (r.stream_max_len, r.key_prefix) == (5000, "gw:")
    assert "pw" not in summarize(settings)


BRIDGE = """
gateway:
  data_dir: /var/lib/edge
workers:
  - name: iii-state
    config:
      adapter:
        class: modules::state::adapters::Bridge
        config:
          identity: ./keys/edge-1.key
          upstreams:
            - name: central
              endpoints: [tcp://central-a:49135, "tcp://[::1]:49136"]
              public_key: ed25519:AAAA
              scopes: ["*"]
            - name: eu
              endpoints: [tls://eu.example:49135]
              public_key: ed25519:BBBB
              scopes: ["eu-*", orders]
              tls: {ca: ./ca.pem, server_name: eu.internal}
          timeout_ms: 2500
          relay_events: true
          cache: {enabled: true, max_entries: 10}
          outbox: {enabled: true, max_entries: 20, max_bytes: 65536}
"""


def test_bridge_adapter() -> None:
    b = parse(BRIDGE).state.adapter.bridge
    assert b.identity == "./keys/edge-1.key"
    central, eu = b.upstreams
    assert central.endpoints == (Endpoint("tcp", "central-a", 49135), Endpoint("tcp", "::1", 49136))
    assert str(central.endpoints[1]) == "tcp://[::1]:49136"
    assert central.scopes == ("*",) and central.tls is None
    assert eu.endpoints == (Endpoint("tls", "eu.example", 49135),)
    assert eu.scopes == ("eu-*", "orders")
    assert eu.tls == ClientTlsSettings(ca="./ca.pem", server_name="eu.internal")
    assert (b.timeout_ms, b.relay_events, b.cache.max_entries) == (2500, True, 10)
    assert b.outbox == BridgeOutboxSettings(
        enabled=True, path=os.path.join("/var/lib/edge", "outbox"), max_entries=20, max_bytes=65536
    )


def test_bridge_cache_follows_relay_events_by_default() -> None:
    text = BRIDGE.replace("relay_events: true", "relay_events: false").replace(
        "cache: {enabled: true, max_entries: 10}", "cache: {max_entries: 10}"
    )
    assert parse(text).state.adapter.bridge.cache.enabled is False


def test_data_dir_places_the_store() -> None:
    settings = parse("gateway: {data_dir: /srv/gw}")
    assert settings.data_dir == "/srv/gw"
    assert settings.state.adapter.kv.file_path == os.path.join("/srv/gw", "state_store")
    assert settings.state.adapter.bridge.outbox.path == os.path.join("/srv/gw", "outbox")


def test_gateway_section() -> None:
    settings = parse(
        """
gateway:
  engine_id: central-1
  host: 0.0.0.0
  worker_port: 0
  http_port: 0
  log_level: WARN
  max_message_bytes: 1048576
  invocation_timeout_ms: 1500
"""
    )
    assert settings.engine_id == "central-1"
    assert settings.server == ServerSettings(
        host="0.0.0.0", worker_port=0, http_port=0, max_message_bytes=1048576, invocation_timeout_ms=1500
    )
    assert settings.log_level == "warning"


def test_link_section() -> None:
    link = parse(
        """
link:
  listen: 0.0.0.0:49135
  identity: ./keys/central.key
  authorized_peers: ./peers.yaml
  tls: {cert: ./tls/cert.pem, key: ./tls/key.pem, client_ca: ./tls/ca.pem}
"""
    ).link
    assert link.listen == "0.0.0.0:49135"
    assert (link.identity, link.authorized_peers) == ("./keys/central.key", "./peers.yaml")
    assert link.tls == ServerTlsSettings(cert="./tls/cert.pem", key="./tls/key.pem", client_ca="./tls/ca.pem")
    assert link.options["identity"] == "./keys/central.key"
    assert link.options["tls"]["client_ca"] == "./tls/ca.pem"


def test_ipv6_listen_is_normalized() -> None:
    link = parse("link: {listen: '[::]:5000', identity: k, authorized_peers: p}").link
    assert link.listen == "[::]:5000"


def test_rest_api_module_sets_the_http_listener() -> None:
    settings = parse(
        """
port: ${III_PORT:49134}
modules:
  - class: modules::api::RestApiModule
    config: {port: '${API_PORT:3111}', host: 0.0.0.0, default_timeout: 5000}
""",
        env={"API_PORT": "8080", "III_PORT": "4000"},
    )
    assert settings.server.http_port == 8080
    assert settings.server.worker_port == 4000
    assert settings.server.host == "0.0.0.0"
    assert settings.server.invocation_timeout_ms == 5000


def test_worker_manager_sets_the_worker_listener() -> None:
    server = parse(
        "workers: [{name: iii-worker-manager, config: {port: 4001, max_message_size: 4096}}]"
    ).server
    assert (server.worker_port, server.max_message_bytes) == (4001, 4096)


def test_same_value_in_two_places_is_fine() -> None:
    assert parse("port: 4000\ngateway: {worker_port: 4000}").server.worker_port == 4000


def test_ignored_reference_modules_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = """
modules:
  - class: modules::stream::StreamModule
    config: {port: 3112, adapter: {class: modules::stream::adapters::KvStore}}
  - class: modules::cron::CronModule
  - class: modules::observability::OtelModule
    config: {enabled: true}
  - class: modules::state::StateModule
workers:
  - name: iii-queue
  - name: my-worker
    image: ghcr.io/me/worker:1
"""
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        settings = parse(text)
    assert settings.state.adapter.name == "kv"
    logged = caplog.text
    for where in ("modules[0]", "modules[1]", "modules[2]", "workers[0]", "workers[1]"):
        assert where in logged
    assert "modules[3]" not in logged
    assert "cron triggers are built in" in logged


def test_empty_file_is_the_defaults_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        settings = parse("# only a comment\n")
    assert settings == Settings(source="t.yaml")
    assert "empty" in caplog.text


def test_merge_keys_and_anchors() -> None:
    text = """
workers:
  - name: iii-state
    config:
      adapter:
        name: bridge
        config:
          identity: id.key
          upstreams:
            - &central {name: central, endpoints: [tcp://a:1], public_key: k}
            - <<: *central
              name: backup
              endpoints: [tcp://b:1]
"""
    ups = parse(text).state.adapter.bridge.upstreams
    assert [u.name for u in ups] == ["central", "backup"]
    assert ups[1].public_key == "k" and ups[1].endpoints[0].host == "b"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfgateway: {http_port: 1234}\n")
    assert load_settings(str(path), {}).server.http_port == 1234


@pytest.mark.parametrize(
    "text", [SEED_SAMPLE, BRIDGE, "link: {listen: 'h:1', identity: i, authorized_peers: p}"]
)
def test_printed_config_loads_back_to_the_same_settings(text: str) -> None:
    settings = parse(text)
    again = parse_settings(dump_settings(settings), source="t.yaml", env={})
    assert again == settings


def test_printed_config_masks_the_redis_password() -> None:
    settings = parse(
        "workers: [{name: state, config: {adapter: {name: redis, config: {redis_url: 'redis://u:s3cret@h:1/0'}}}}]"
    )
    assert "s3cret" not in dump_settings(settings)
    config = settings_to_config(settings, mask_secrets=False)
    assert config["workers"][0]["config"]["adapter"]["config"]["redis_url"] == "redis://u:s3cret@h:1/0"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    settings = load_settings(str(path), {})
    assert settings.source == str(path)


def test_example_set_is_complete() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"kv-file.yaml", "kv-memory.yaml", "redis.yaml", "seed-modules.yaml"} <= names
    assert load_settings(str(EXAMPLES / "kv-memory.yaml"), {}).state.adapter.kv.store_method == "in_memory"
    assert load_settings(str(EXAMPLES / "redis.yaml"), {}).state.adapter.name == "redis"
    seed = load_settings(str(EXAMPLES / "seed-modules.yaml"), {"API_PORT": "8088"})
    assert seed.server.http_port == 8088
