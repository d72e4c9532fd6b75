"""Every way a config can be wrong gives one ConfigError naming the file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings, parse_settings
from gateway.errors import ConfigError


def error_of(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, source="cfg.yaml", env=env or {})
    return info.value


STATE = "workers:\n  - name: iii-state\n    config:\n"


@pytest.mark.parametrize(
    ("text", "where", "key", "fragment"),
    [
        ("gatway: {}\n", "cfg.yaml:1", "gatway", "unknown key"),
        ("gateway:\n  http_prot: 1\n", "cfg.yaml:2", "gateway.http_prot", "did you mean 'http_port'"),
        ("workers:\n  - nam: iii-state\n", "cfg.yaml:2", "workers[0].nam", "unknown key"),
        (STATE + "      adaptr: {}\n", "cfg.yaml:4", "workers[0].config.adaptr", "did you mean 'adapter'"),
        (
            STATE + "      adapter:\n        name: kv\n        conf: {}\n",
            "cfg.yaml:6",
            "workers[0].config.adapter.conf",
            "unknown key",
        ),
        (
            STATE + "      adapter:\n        name: kv\n        config:\n          stor_method: file_based\n",
            "cfg.yaml:7",
            "workers[0].config.adapter.config.stor_method",
            "did you mean 'store_method'",
        ),
        (
            "link: {listen: 'h:1', identity: i, authorized_peers: p, tls: {cert: c, key: k, ca: x}}\n",
            "cfg.yaml:1",
            "link.tls.ca",
            "allowed here: cert, key, client_ca",
        ),
        (
            STATE + "      adapter:\n        name: bridge\n        config:\n          identity: i\n"
            "          upstreams:\n"
            "            - {name: a, endpoints: ['tcp://h:1'], public_key: k, scope: [x]}\n",
            "cfg.yaml:9",
            "workers[0].config.adapter.config.upstreams[0].scope",
            "did you mean 'scopes'",
        ),
        (
            "modules:\n  - class: modules::api::RestApiModule\n    config: {prot: 1}\n",
            "cfg.yaml:3",
            "modules[0].config.prot",
            "unknown key",
        ),
    ],
)
def test_unknown_keys_at_every_depth(text: str, where: str, key: str, fragment: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert err.file == where
    assert str(err).startswith(f"{where}: {key}: ")
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("gateway: {http_port: '80'}", "gateway.http_port", "remove the quotes"),
        ("gateway: {http_port: 1.5}", "gateway.http_port", "expected an integer in 0..65535, got number 1.5"),
        ("gateway: {http_port: true}", "gateway.http_port", "got boolean true"),
        ("gateway: {http_port: [1]}", "gateway.http_port", "got a list"),
        ("gateway: {engine_id: 12}", "gateway.engine_id", "got integer 12"),
        ("gateway: {engine_id: 'has space'}", "gateway.engine_id", "letters, digits"),
        ("gateway: {host: 'h:1'}", "gateway.host", "without a port"),
        ("gateway: 5", "gateway", "expected a mapping, got integer 5"),
        ("workers: {name: iii-state}", "workers", "expected a list of module entries"),
        ("workers: [iii-state]", "workers[0]", "expected a module entry"),
        (
            "workers: [{name: iii-state, config: [1]}]",
            "workers[0].config",
            "expected the state module's config mapping",
        ),
        (
            "workers: [{name: iii-state, config: {triggers_enabled: 'yes'}}]",
            "workers[0].config.triggers_enabled",
            "expected true or false",
        ),
        (
            "workers: [{name: iii-state, config: {adapter: kv}}]",
            "workers[0].config.adapter",
            "expected an adapter mapping",
        ),
        ("link: {listen: 49135, identity: i, authorized_peers: p}", "link.listen", "expected 'host:port'"),
        ("link: {listen: 'nohost', identity: i, authorized_peers: p}", "link.listen", "expected 'host:port'"),
    ],
)
def test_wrong_types(text: str, key: str, fragment: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            "workers: [{name: state, config: {adapter: {name: kv, config: {store_method: on_disk}}}}]",
            "workers[0].config.adapter.config.store_method",
            "in_memory, file_based",
        ),
        (
            "workers: [{name: state, config: {adapter: {name: kv, config: {fsync: sometimes}}}}]",
            "workers[0].config.adapter.config.fsync",
            "always, interval, never",
        ),
        (
            "workers: [{name: state, config: {adapter: {name: etcd}}}]",
            "workers[0].config.adapter.name",
            "kv, redis, bridge",
        ),
        (
            "workers: [{name: state, config: {adapter: {class: modules::state::adapters::Etcd}}}]",
            "workers[0].config.adapter.class",
            "unknown adapter class",
        ),
        ("gateway: {log_level: loud}", "gateway.log_level", "debug, info, warning"),
        ("modules: [{class: modules::nope::Nope}]", "modules[0].class", "unknown module"),
        ("workers: [{name: my-thing}]", "workers[0].name", "unknown module 'my-thing'"),
    ],
)
def test_bad_enums(text: str, key: str, fragment: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            "workers: [{name: state, config: {save_interval_ms: 99}}]",
            "workers[0].config.save_interval_ms",
            "100..3600000",
        ),
        (
            "workers: [{name: state, config: {save_interval_ms: 3600001}}]",
            "workers[0].config.save_interval_ms",
            "100..3600000",
        ),
        (
            "workers: [{name: state, config: {adapter: {name: kv, config: {save_interval_ms: 0}}}}]",
            "workers[0].config.adapter.config.save_interval_ms",
            "100..3600000",
        ),
        (
            "workers: [{name: state, config: {max_value_bytes: -1}}]",
            "workers[0].config.max_value_bytes",
            ">= 0",
        ),
        (
            "workers: [{name: state, config: {trigger_concurrency: 0}}]",
            "workers[0].config.trigger_concurrency",
            "1..100000",
        ),
        ("gateway: {worker_port: 65536}", "gateway.worker_port", "0..65535"),
        ("gateway: {max_message_bytes: 10}", "gateway.max_message_bytes", "1024.."),
        (
            "workers: [{name: state, config: {adapter: {name: redis, config: {pool_size: 0}}}}]",
            "workers[0].config.adapter.config.pool_size",
            "1..1024",
        ),
        ("workers: [{name: iii-http, config: {port: 99999}}]", "workers[0].config.port", "0..65535"),
    ],
)
def test_out_of_range(text: str, key: str, fragment: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert fragment in str(err)


BRIDGE_HEAD = (
    "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n        config:\n"
)
ID = "          identity: i\n"
UPS = ID + "          upstreams: "
OK_UP = "{name: a, endpoints: ['tcp://h:1'], public_key: k}"


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        (
            "          upstreams: [{name: a, endpoints: ['tcp://h:1'], public_key: k}]\n",
            "workers[0].config.adapter.config.identity",
            "required key is missing",
        ),
        (ID, "workers[0].config.adapter.config.upstreams", "at least one upstream"),
        (
            UPS + "[{name: a, endpoints: ['http://h:1'], public_key: k}]\n",
            "workers[0].config.adapter.config.upstreams[0].endpoints[0]",
            "tcp://host:port",
        ),
        (
            UPS + "[{name: a, endpoints: ['tcp://h:0'], public_key: k}]\n",
            "workers[0].config.adapter.config.upstreams[0].endpoints[0]",
            "1..65535",
        ),
        (
            UPS + "[{name: a, endpoints: [], public_key: k}]\n",
            "workers[0].config.adapter.config.upstreams[0].endpoints",
            "non-empty",
        ),
        (
            UPS + "[{name: a, endpoints: ['tcp://h:1']}]\n",
            "workers[0].config.adapter.config.upstreams[0].public_key",
            "required key is missing",
        ),
        (
            UPS + "\n            - " + OK_UP + "\n            - " + OK_UP.replace("h:1", "h:2") + "\n",
            "workers[0].config.adapter.config.upstreams[1].name",
            "duplicate upstream name",
        ),
        (
            UPS + "[{name: 'a b', endpoints: ['tcp://h:1'], public_key: k}]\n",
            "workers[0].config.adapter.config.upstreams[0].name",
            "letters, digits",
        ),
        (
            UPS + "[{name: a, endpoints: ['tcp://h:1'], public_key: k, tls: {ca: c}}]\n",
            "workers[0].config.adapter.config.upstreams[0].tls",
            "no endpoint uses tls://",
        ),
        (
            UPS + "[{name: a, endpoints: ['tls://h:1'], public_key: k, tls: {cert: c}}]\n",
            "workers[0].config.adapter.config.upstreams[0].tls.key",
            "go together",
        ),
        (
            UPS + f"[{OK_UP}]\n          relay_events: false\n          cache: {{enabled: true}}\n",
            "workers[0].config.adapter.config.cache.enabled",
            "relay_events: true",
        ),
        (
            "          bridge_url: ws://remote:49134\n",
            "workers[0].config.adapter.config.bridge_url",
            "not supported",
        ),
    ],
)
def test_bridge_errors(body: str, key: str, fragment: str) -> None:
    err = error_of(BRIDGE_HEAD + body)
    assert err.key == key
    assert fragment in str(err)


def test_redis_url_errors_never_show_the_url() -> None:
    err = error_of(
        "workers: [{name: state, config: {adapter: {name: redis, config: {redis_url: 'http://u:hunter2@h'}}}}]"
    )
    assert err.key == "workers[0].config.adapter.config.redis_url"
    assert "hunter2" not in str(err)
    err = error_of(
        "workers: [{name: state, config: {adapter: {name: redis, config: {redis_url: 'redis://u:hunter2@h:notaport'}}}}]"
    )
    assert "hunter2" not in str(err)


def test_redis_key_prefix_may_not_shadow_scopes() -> None:
    err = error_of(
        "workers: [{name: state, config: {adapter: {name: redis, config: {key_prefix: 'state:gw:'}}}}]"
    )
    assert err.key == "workers[0].config.adapter.config.key_prefix"


def test_link_requires_its_keys() -> None:
    err = error_of("link:\n  listen: 0.0.0.0:49135\n  identity: k\n")
    assert err.key == "link.authorized_peers"
    assert "required key is missing" in str(err)
    err = error_of("link:\n  identity: k\n  authorized_peers: p\n")
    assert err.key == "link.listen"


def test_link_tls_needs_cert_and_key() -> None:
    err = error_of("link: {listen: 'h:1', identity: i, authorized_peers: p, tls: {cert: c}}")
    assert err.key == "link.tls.key"


def test_worker_manager_security_features_are_refused() -> None:
    err = error_of("workers: [{name: iii-worker-manager, config: {rbac: {}}}]")
    assert err.key == "workers[0].config.rbac"
    assert err.file == "cfg.yaml:1"
    err = error_of("workers: [{name: iii-worker-manager, config: {middleware_function_id: f}}]")
    assert "not implemented" in str(err)


def test_builtin_module_with_an_image_is_an_error() -> None:
    err = error_of("workers: [{name: iii-state, image: ghcr.io/x/state:1}]")
    assert err.key == "workers[0].image"


def test_entry_needs_exactly_one_of_class_and_name() -> None:
    assert error_of("modules: [{config: {}}]").key == "modules[0]"
    assert (
        error_of("modules: [{class: modules::state::StateModule, name: iii-state}]").key == "modules[0].class"
    )


def test_state_module_twice() -> None:
    err = error_of("modules: [{class: modules::state::StateModule}]\nworkers: [{name: iii-state}]\n")
    assert err.key == "workers[0]"
    assert "modules[0]" in str(err)


def test_conflicting_values_name_both_keys() -> None:
    err = error_of(
        "modules:\n  - class: modules::api::RestApiModule\n    config: {port: 8080}\n"
        "gateway:\n  http_port: 8081\n"
    )
    assert err.key == "gateway.http_port"
    assert err.file == "cfg.yaml:5"
    assert "modules[0].config.port" in str(err)


def test_ports_must_differ() -> None:
    err = error_of("gateway: {worker_port: 5000, http_port: 5000}")
    assert err.key == "gateway.http_port"
    assert "gateway.worker_port" in str(err)
    err = error_of(
        "gateway: {http_port: 5000}\nlink: {listen: '0.0.0.0:5000', identity: i, authorized_peers: p}"
    )
    assert err.key == "link.listen"


def test_missing_variable_without_default() -> None:
    err = error_of("gateway:\n  host: ${GW_HOST}\n")
    assert err.file == "cfg.yaml:2"
    assert err.key == "gateway.host"
    assert "'GW_HOST' is not set and has no default" in str(err)


def test_missing_variable_with_default_is_fine() -> None:
    settings = parse_settings("gateway:\n  host: ${GW_HOST:0.0.0.0}\n", source="cfg.yaml", env={})
    assert settings.server.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("gateway: {http_port: 1\n", "cfg.yaml:2:1"),
        ("gateway:\n  http_port: 1\n    host: x\n", "cfg.yaml:3:9"),
        ("a: b: c\n", "cfg.yaml:1:5"),
        ("gateway: [\n", "cfg.yaml:2:1"),
        ("---\na: 1\n---\nb: 2\n", "cfg.yaml:3:1"),
        ("gateway: !!python/object:os.system {}\n", "cfg.yaml:1:10"),
        ("x: *nope\n", "cfg.yaml:1:4"),
    ],
)
def test_yaml_syntax_errors_report_line_and_column(text: str, where: str) -> None:
    err = error_of(text)
    assert err.file == where
    assert str(err).startswith(where + ": ")


def test_non_printable_characters() -> None:
    err = error_of("gateway: {host: \x00}\n")
    assert err.file == "cfg.yaml"
    assert "invalid YAML" in str(err)


def test_duplicate_keys_are_errors() -> None:
    err = error_of("gateway:\n  http_port: 1\n  http_port: 2\n")
    assert err.file == "cfg.yaml:3:3"
    assert err.key == "gateway.http_port"
    assert "first set at line 2" in str(err)


def test_non_string_keys() -> None:
    err = error_of("gateway:\n  1: x\n")
    assert err.key == "gateway"
    assert "keys must be strings" in str(err)


@pytest.mark.parametrize("text", ["- a\n- b\n", "- class: modules::state::StateModule\n"])
def test_top_level_list(text: str) -> None:
    err = error_of(text)
    assert err.file == "cfg.yaml:1"
    assert "the top level must be a mapping" in str(err)
    assert "modules:" in str(err)


@pytest.mark.parametrize("text", ["hello\n", "42\n", "true\n", "'${X:1}'\n"])
def test_top_level_scalar(text: str) -> None:
    err = error_of(text)
    assert err.key is None
    assert "expected a mapping at the top level" in str(err)


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    err = error_of("\n".join(lines) + "\n")
    assert "too large" in str(err)


def test_recursive_alias_is_bounded() -> None:
    err = error_of("gateway: &a [*a]\n")
    assert "nested more than" in str(err)


def test_deep_nesting_is_bounded() -> None:
    err = error_of("gateway: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert info.value.file == path
    assert "No such file" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(str(tmp_path), {})


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"gateway: {engine_id: caf\xe9}\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(str(path), {})
