"""``${VAR}`` expansion: the reference's pattern, but errors instead of panics, and values only."""

from __future__ import annotations

import pytest

from gateway import __version__
from gateway.config import parse_settings
from gateway.config.document import typed_scalar
from gateway.config.expand import MissingVariable, expand_env, has_reference
from gateway.errors import ConfigError


def test_set_variable_wins_over_default() -> None:
    assert expand_env("${A:fallback}", {"A": "value"}) == "value"


def test_default_used_when_unset() -> None:
    assert expand_env("${A:fallback}", {}) == "fallback"


def test_default_may_contain_colons() -> None:
    assert expand_env("${REDIS_URL:redis://localhost:6379}", {}) == "redis://localhost:6379"


def test_empty_default_and_empty_variable() -> None:
    assert expand_env("x${A:}y", {}) == "xy"
    assert expand_env("x${A:default}y", {"A": ""}) == "xy"  # set-but-empty counts as set


def test_several_references_and_surrounding_text() -> None:
    assert expand_env("${H:h}:${P}/db", {"P": "6379"}) == "h:6379/db"


def test_missing_without_default_names_the_variable() -> None:
    with pytest.raises(MissingVariable) as info:
        expand_env("a ${NOPE} b", {})
    assert info.value.name == "NOPE"
    assert "NOPE" in str(info.value)


def test_substituted_values_are_not_expanded_again() -> None:
    assert expand_env("${A}", {"A": "${B}", "B": "no"}) == "${B}"


def test_version_default() -> None:
    assert expand_env("${V:__III_ENGINE_VERSION__}", {}) == __version__


def test_not_a_reference() -> None:
    for text in ("$A", "${}", "${:x}", "plain", "$ {A}"):
        assert not has_reference(text)
        assert expand_env(text, {}) == text


def test_typed_scalar_follows_yaml() -> None:
    assert typed_scalar("3111") == 3111
    assert typed_scalar("true") is True
    assert typed_scalar("1.5") == 1.5
    assert typed_scalar("") is None
    assert typed_scalar("redis://h:1") == "redis://h:1"
    assert typed_scalar("2024-01-01") == "2024-01-01"  # timestamps stay text


def _http_port(text: str, env: dict[str, str]) -> int:
    return parse_settings(text, source="t.yaml", env=env).server.http_port


def test_lone_plain_reference_becomes_a_number() -> None:
    assert _http_port("gateway:\n  http_port: ${PORT:8080}\n", {}) == 8080
    assert _http_port("gateway:\n  http_port: ${PORT:8080}\n", {"PORT": "9090"}) == 9090


def test_lone_quoted_reference_is_typed_like_the_reference_entries() -> None:
    assert _http_port("gateway: {http_port: '${PORT:8080}'}", {}) == 8080


def test_quoted_mixed_text_stays_a_string() -> None:
    with pytest.raises(ConfigError, match=r"gateway\.http_port: expected an integer.*string '80800'"):
        _http_port("gateway: {http_port: '${PORT:8080}0'}", {})


def test_unquoted_mixed_text_is_typed_after_expansion() -> None:
    assert _http_port("gateway:\n  http_port: ${PORT:80}80\n", {}) == 8080


def test_empty_expansion_means_default() -> None:
    assert _http_port("gateway:\n  http_port: ${PORT:}\n", {}) == 3111


def test_expanded_number_is_read_as_text_where_text_is_wanted() -> None:
    text = "gateway:\n  engine_id: ${ENGINE_ID}\n"
    assert parse_settings(text, source="t.yaml", env={"ENGINE_ID": "0123"}).engine_id == "0123"
    assert parse_settings(text, source="t.yaml", env={"ENGINE_ID": "77"}).engine_id == "77"


def test_env_value_cannot_inject_structure() -> None:
    env = {"ID": "x\nworkers: [{name: nope}]"}
    with pytest.raises(ConfigError, match="engine_id"):
        parse_settings("gateway: {engine_id: '${ID}'}", source="t.yaml", env=env)


def test_comments_are_not_expanded() -> None:
    text = "# ${UNSET_IN_A_COMMENT}\ngateway:  # ${ALSO_UNSET}\n  http_port: 1234\n"
    assert _http_port(text, {}) == 1234


def test_missing_variable_error_names_variable_file_line_and_key() -> None:
    text = (
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
        "        config:\n          redis_url: ${REDIS_URL}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_settings(text, source="cfg.yaml", env={})
    message = str(info.value)
    assert message.startswith("cfg.yaml:7: workers[0].config.adapter.config.redis_url: ")
    assert "'REDIS_URL' is not set and has no default" in message


def test_missing_variable_inside_an_ignored_module_is_not_an_error() -> None:
    text = "workers:\n  - name: iii-stream\n    config: {adapter: {config: {redis_url: '${NOT_SET}'}}}\n"
    settings = parse_settings(text, source="t.yaml", env={})
    assert settings.state.adapter.name == "kv"


def test_reference_in_a_key_is_left_alone() -> None:
    with pytest.raises(ConfigError, match=r"gateway\.\$\{K\}: unknown key"):
        parse_settings("gateway: {'${K}': 1}", source="t.yaml", env={"K": "http_port"})
