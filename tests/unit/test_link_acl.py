"""Scope patterns, pattern coverage, per-op permission checks, the authorized-peers file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.link.acl import (
    Action,
    Permissions,
    glob_match,
    load_authorized_peers,
    parse_authorized_peers,
    pattern_covers,
)
from gateway.link.auth import format_public_key, public_key_bytes
from gateway.link.requests import (
    DeleteArgs,
    GetArgs,
    InfoArgs,
    ItemsArgs,
    ListArgs,
    ListGroupsArgs,
    PingArgs,
    RequestArgs,
    SetArgs,
    SnapshotArgs,
    UpdateArgs,
    WatchArgs,
)
from tests.helpers.link_pair import fixed_key


def reference_match(pattern: str, text: str) -> bool:
    """The textbook recursive definition, to check the compiled matcher against."""
    if not pattern:
        return not text
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return reference_match(rest, text) or (bool(text) and reference_match(pattern, text[1:]))
    if not text:
        return False
    return (head == "?" or head == text[0]) and reference_match(rest, text[1:])


@pytest.mark.parametrize(
    ("pattern", "scope", "expected"),
    [
        ("*", "", True),
        ("*", "anything:at all", True),
        ("orders:*", "orders:", True),
        ("orders:*", "orders:eu:1", True),
        ("orders:*", "order", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a.c", "abc", False),  # regex metacharacters are literal
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("", "", True),
        ("", "x", False),
        ("*\n", "a\n", True),
        ("a*b*c", "aXbYc", True),
    ],
)
def test_glob_match(pattern: str, scope: str, expected: bool) -> None:
    assert glob_match(pattern, scope) is expected


SYMBOLS = st.text(alphabet="ab*?.", max_size=7)
TEXTS = st.text(alphabet="ab*?.\n", max_size=8)


@settings(deadline=None, max_examples=400)
@given(SYMBOLS, TEXTS)
def test_glob_match_agrees_with_the_reference_definition(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) is reference_match(pattern, text)


@pytest.mark.parametrize(
    ("allowed", "requested", "expected"),
    [
        ("orders:*", "orders:*", True),
        ("orders:*", "orders:eu-*", True),
        ("orders:*", "orders:??", True),
        ("orders:*", "orders:1", True),
        ("orders:*", "order*", False),
        ("orders:*", "*", False),
        ("*", "*", True),
        ("*", "", True),
        ("?", "*", False),
        ("?", "?", True),
        ("?", "a", True),
        ("a", "?", False),
        ("*a*", "*a*", True),
        ("*a*", "x*ay", True),
        ("a*", "a**", True),
        ("*?", "*", False),  # "*" matches "", "*?" does not
        ("?*", "*a", False),  # sound but not complete: both need one character
    ],
)
def test_pattern_covers(allowed: str, requested: str, expected: bool) -> None:
    assert pattern_covers(allowed, requested) is expected


@st.composite
def pattern_and_instance(draw: st.DrawFn) -> tuple[str, str]:
    """A pattern and a string it matches (each wildcard replaced by something it may match)."""
    pattern = draw(SYMBOLS)
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(draw(st.text(alphabet="ab*?.", max_size=3)))
        elif ch == "?":
            out.append(draw(st.sampled_from("ab*?.")))
        else:
            out.append(ch)
    return pattern, "".join(out)


@settings(deadline=None, max_examples=500)
@given(SYMBOLS, pattern_and_instance())
def test_coverage_is_sound(allowed: str, requested_and_scope: tuple[str, str]) -> None:
    """If ``allowed`` covers ``requested``, every scope ``requested`` matches is allowed."""
    requested, scope = requested_and_scope
    assert glob_match(requested, scope)
    if pattern_covers(allowed, requested):
        assert glob_match(allowed, scope)


@settings(deadline=None, max_examples=300)
@given(SYMBOLS, st.text(alphabet="ab.", max_size=8))
def test_coverage_of_a_plain_scope_is_exactly_matching(allowed: str, scope: str) -> None:
    assert pattern_covers(allowed, scope) is glob_match(allowed, scope)


@settings(deadline=None, max_examples=300)
@given(SYMBOLS, SYMBOLS, SYMBOLS)
def test_coverage_is_reflexive_and_transitive(a: str, b: str, c: str) -> None:
    assert pattern_covers(a, a)
    assert pattern_covers("*", a)
    if pattern_covers(a, b) and pattern_covers(b, c):
        assert pattern_covers(a, c)


PERMS = Permissions(read=("orders:*", "users"), write=("orders:eu-*",), watch=("orders:*",))


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (GetArgs("orders:1", "k"), True),
        (GetArgs("users", "k"), True),
        (GetArgs("users2", "k"), False),
        (ListArgs("orders:x"), True),
        (ItemsArgs("billing"), False),
        (SetArgs("orders:eu-1", "k", 1), True),
        (SetArgs("orders:us-1", "k", 1), False),
        (DeleteArgs("users", "k"), False),  # read is not write
        (UpdateArgs("orders:eu-2", "k", ()), True),
        (WatchArgs(("orders:eu-*", "orders:1")), True),
        (WatchArgs(("orders:*", "users")), False),  # every pattern must be allowed
        (WatchArgs(("*",)), False),
        (SnapshotArgs(("orders:*",)), True),
        (SnapshotArgs(("users",)), True),
        (SnapshotArgs(("user?",)), False),
        (ListGroupsArgs(), True),
        (PingArgs(), True),
        (InfoArgs(), True),
    ],
)
def test_permission_check_per_op(args: RequestArgs, allowed: bool) -> None:
    denied = PERMS.check(args)
    if allowed:
        assert denied is None
    else:
        assert denied is not None and denied.code == "FORBIDDEN" and args.OP in denied.message


def test_allows_and_empty_permissions() -> None:
    assert PERMS.allows(Action.READ, "users") and not PERMS.allows(Action.WRITE, "users")
    assert PERMS.allows_pattern(Action.WATCH, "orders:a*") and not PERMS.allows_pattern(Action.READ, "*")
    nothing = Permissions()
    assert not nothing.allows(Action.READ, "")
    assert nothing.check(GetArgs("", "")) is not None
    assert Permissions.from_wire(PERMS.to_wire()) == PERMS


# -- the authorized-peers file --------------------------------------------------------------

KEY1, KEY2 = format_public_key(fixed_key("one")), format_public_key(fixed_key("two"))


def test_parse_peers() -> None:
    directory = parse_authorized_peers(
        {
            "peers": [
                {"name": "edge-1", "public_key": KEY1, "read": ["*"], "write": "orders:*"},
                {
                    "name": "edge-2",
                    "public_keys": [KEY2, format_public_key(fixed_key("rotated"))],
                    "watch": None,
                },
            ]
        }
    )
    assert len(directory) == 2
    one = directory.lookup(public_key_bytes(fixed_key("one")))
    assert one is not None and one.name == "edge-1"
    assert one.permissions == Permissions(read=("*",), write=("orders:*",), watch=())
    two = directory.lookup(public_key_bytes(fixed_key("rotated")))
    assert two is not None and two.name == "edge-2" and two.permissions == Permissions()
    assert directory.lookup(public_key_bytes(fixed_key("stranger"))) is None


def test_a_top_level_list_and_an_empty_file_are_accepted() -> None:
    assert len(parse_authorized_peers([{"name": "a", "public_key": KEY1}])) == 1
    assert len(parse_authorized_peers(None)) == 0
    assert len(parse_authorized_peers({"peers": None})) == 0


@pytest.mark.parametrize(
    ("data", "key", "says"),
    [
        ({"peer": []}, None, "unknown key 'peer'"),
        ({"peers": {"a": 1}}, "peers", "list of peers"),
        ([5], "peers[0]", "mapping"),
        ([{"public_key": KEY1}], "peers[0].name", "non-empty string"),
        ([{"name": "e", "public_key": "ed25519:xx"}], "peers[0] (e).public_key", "32 bytes"),
        ([{"name": "e", "public_key": KEY1, "public_keys": [KEY2]}], "peers[0] (e)", "exactly one"),
        ([{"name": "e"}], "peers[0] (e)", "exactly one"),
        ([{"name": "e", "public_keys": []}], "peers[0] (e).public_keys", "non-empty list"),
        ([{"name": "e", "public_key": KEY1, "read": [1]}], "peers[0] (e).read", "list of scope patterns"),
        ([{"name": "e", "public_key": KEY1, "admin": True}], "peers[0] (e)", "unknown key 'admin'"),
        (
            [{"name": "e", "public_key": KEY1}, {"name": "e", "public_key": KEY2}],
            "peers[1] (e).name",
            "duplicate peer name",
        ),
        (
            [{"name": "a", "public_key": KEY1}, {"name": "b", "public_key": KEY1}],
            "peers[1] (b)",
            "already belongs to peer 'a'",
        ),
    ],
)
def test_peer_errors_name_the_entry_and_key(data: Any, key: str | None, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_authorized_peers(data, file="peers.yaml")
    assert info.value.file == "peers.yaml" and info.value.key == key
    assert says in info.value.message
    assert info.value.message.startswith("peers.yaml: ")


def test_load_peers_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "peers.yaml"
    path.write_text(f"peers:\n  - name: edge-1\n    public_key: {KEY1}\n    read: ['*']\n")
    directory = load_authorized_peers(str(path))
    assert [p.name for p in directory.peers] == ["edge-1"]
    path.write_text("peers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_authorized_peers(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_authorized_peers(str(tmp_path / "missing.yaml"))
