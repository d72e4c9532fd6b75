"""Command-line overrides: precedence over the file, the same checks, cross-section rules."""

from __future__ import annotations

import os

import pytest

from gateway.config import OVERRIDE_KEYS, apply_overrides, load_settings, parse_settings
from gateway.config.settings import Settings
from gateway.errors import ConfigError

FILE = """
gateway: {host: 10.0.0.1, http_port: 8080, engine_id: from-file}
workers:
  - name: iii-state
    config:
      adapter:
        name: redis
        config: {redis_url: 'redis://r:6379'}
"""


def parse(overrides: dict[str, object]) -> Settings:
    return parse_settings(FILE, source="f.yaml", env={}, overrides=overrides)


def test_flags_win_over_the_file() -> None:
    settings = parse({"server.http_port": 9000, "engine_id": "from-flag"})
    assert settings.server.http_port == 9000
    assert settings.engine_id == "from-flag"
    assert settings.server.host == "10.0.0.1"  # not overridden: the file's value stays


def test_store_override_switches_to_kv() -> None:
    settings = parse({"state.adapter.name": "kv", "state.adapter.kv.store_method": "in_memory"})
    assert settings.state.adapter.name == "kv"
    assert settings.state.adapter.kv.store_method == "in_memory"
    assert settings.state.adapter.redis.redis_url == "redis://r:6379"  # parsed, now unused


def test_data_dir_moves_the_store_and_outbox() -> None:
    settings = apply_overrides(Settings(), {"data_dir": "/srv/d"})
    assert settings.data_dir == "/srv/d"
    assert settings.state.adapter.kv.file_path == os.path.join("/srv/d", "state_store")
    assert settings.state.adapter.bridge.outbox.path == os.path.join("/srv/d", "outbox")


def test_explicit_file_path_beats_data_dir_whatever_the_order() -> None:
    settings = apply_overrides(Settings(), {"state.adapter.kv.file_path": "/x/kv", "data_dir": "/srv/d"})
    assert settings.state.adapter.kv.file_path == "/x/kv"


def test_override_values_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"server.http_port": 70000})
    assert info.value.key == "server.http_port"
    assert info.value.file == "command line"
    assert "0..65535" in str(info.value)


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        parse({"server.colour": "blue"})


def test_link_listen_flag_needs_the_link_keys_from_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {}, {"link.listen": "0.0.0.0:49135"})
    assert info.value.key == "link.identity"


def test_link_listen_flag_replaces_the_files_address() -> None:
    text = "link: {listen: '0.0.0.0:49135', identity: i, authorized_peers: p}"
    settings = parse_settings(text, source="f.yaml", env={}, overrides={"link.listen": "127.0.0.1:0"})
    assert settings.link.listen == "127.0.0.1:0"
    assert settings.link.identity == "i"


def test_flag_can_create_a_port_clash() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"server.worker_port": 8080})
    assert "port 8080 is also used" in str(info.value)


def test_bridge_adapter_by_flag_needs_the_bridge_config() -> None:
    with pytest.raises(ConfigError, match="bridge adapter needs its config"):
        parse({"state.adapter.name": "bridge"})


def test_max_value_bytes_zero_is_unset_on_the_command_line_too() -> None:
    assert parse({"state.max_value_bytes": 0}).state.max_value_bytes is None
    assert parse({"state.max_value_bytes": 10}).state.max_value_bytes == 10


def test_every_override_key_names_a_real_setting() -> None:
    settings = Settings()
    for key in OVERRIDE_KEYS:
        obj: object = settings
        for part in key.split("."):
            assert hasattr(obj, part), key
            obj = getattr(obj, part)
