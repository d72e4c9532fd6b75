"""``parse_ops``: both wire forms, the canonical ``to_json`` form, and every malformed shape."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InputError
from gateway.state.ops import (
    UpdateOp,
    append_op,
    decrement_op,
    increment_op,
    merge_op,
    parse_op,
    parse_ops,
    remove_op,
    set_op,
)
from gateway.state.ops_parse import describe_json, format_f64

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
VARIANTS = "`set`, `merge`, `increment`, `decrement`, `append`, `remove`"


def reject(raw: Any) -> str:
    with pytest.raises(InputError) as info:
        parse_ops(raw)
    assert info.value.code == "deserialization_error"
    return info.value.message


# ------------------------------------------------------------------ typed form


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "set", "path": "a", "value": 1}, set_op("a", 1)),
        ({"type": "set", "path": ""}, UpdateOp("set", "", None)),
        ({"type": "set", "path": "a", "value": None}, UpdateOp("set", "a", None)),
        ({"type": "merge", "value": {"x": 1}}, UpdateOp("merge", (), {"x": 1})),
        ({"type": "merge", "path": None, "value": {}}, UpdateOp("merge", (), {})),
        ({"type": "merge", "path": "", "value": {}}, UpdateOp("merge", (), {})),
        ({"type": "merge", "path": [], "value": {}}, UpdateOp("merge", (), {})),
        ({"type": "merge", "path": "foo", "value": {}}, UpdateOp("merge", ("foo",), {})),
        ({"type": "merge", "path": ["a", "b"], "value": 3}, UpdateOp("merge", ("a", "b"), 3)),
        ({"type": "merge", "path": [""], "value": {}}, UpdateOp("merge", ("",), {})),
        ({"type": "merge", "path": "a", "value": None}, UpdateOp("merge", ("a",), None)),
        ({"type": "increment", "path": "n", "by": 1}, increment_op("n", 1)),
        ({"type": "increment", "path": "", "by": I64_MAX}, increment_op("", I64_MAX)),
        ({"type": "decrement", "path": "n", "by": I64_MIN}, decrement_op("n", I64_MIN)),
        ({"type": "decrement", "path": "n", "by": 0}, decrement_op("n", 0)),
        ({"type": "append", "value": "x"}, UpdateOp("append", (), "x")),
        ({"type": "append", "path": "buf", "value": [1]}, UpdateOp("append", ("buf",), [1])),
        ({"type": "append", "path": ["a", "b"], "value": None}, UpdateOp("append", ("a", "b"), None)),
        ({"type": "remove", "path": "a.b"}, remove_op("a.b")),
        ({"type": "remove", "path": ""}, remove_op("")),
    ],
)
def test_typed_form_parses_to_canonical_op(raw: dict[str, Any], expected: UpdateOp) -> None:
    assert parse_ops([raw]) == [expected]


def test_unknown_fields_are_ignored_like_serde() -> None:
    raw = {"type": "increment", "path": "n", "by": 2, "value": "ignored", "extra": [1], "field": "x"}
    assert parse_ops([raw]) == [increment_op("n", 2)]


def test_empty_ops_list_is_valid() -> None:
    assert parse_ops([]) == []


def test_ops_keep_their_order() -> None:
    ops = parse_ops([{"type": "remove", "path": "a"}, {"set": 1}, {"type": "append", "value": 2}])
    assert [op.kind for op in ops] == ["remove", "set", "append"]


@pytest.mark.parametrize(
    "op",
    [
        set_op("a", {"b": [1, 2.5, None, True]}),
        set_op("", None),
        merge_op({"x": 1}),
        merge_op({"x": 1}, "a"),
        merge_op({"x": 1}, ["a", "b"]),
        merge_op({}, [""]),
        increment_op("n", -5),
        decrement_op("", I64_MIN),
        append_op("s"),
        append_op(1, ["a", "b", "c"]),
        remove_op("k"),
        remove_op(""),
    ],
)
def test_to_json_round_trips(op: UpdateOp) -> None:
    wire = op.to_json()
    assert wire["type"] == op.kind
    assert parse_op(wire) == op


def test_to_json_shapes_match_the_reference_wire_form() -> None:
    assert merge_op({"x": 1}).to_json() == {"type": "merge", "value": {"x": 1}}
    assert append_op("v", "buf").to_json() == {"type": "append", "path": ["buf"], "value": "v"}
    assert set_op("a").to_json() == {"type": "set", "path": "a", "value": None}
    assert increment_op("n", 3).to_json() == {"type": "increment", "path": "n", "by": 3}
    assert remove_op("n").to_json() == {"type": "remove", "path": "n"}


def test_constructor_helpers_normalize_merge_paths() -> None:
    assert merge_op({}, None).path == ()
    assert merge_op({}, "").path == ()
    assert merge_op({}, "a").path == ("a",)
    assert append_op(1, ["a", ""]).path == ("a", "")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("bogus", ""), ValueError),
        (("set", ("a",)), TypeError),
        (("merge", "a"), TypeError),
        (("merge", ("a", 1)), TypeError),
        (("remove", "a", 1), ValueError),
    ],
)
def test_update_op_rejects_malformed_construction(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        UpdateOp(*args)


@pytest.mark.parametrize("by", [True, 1.0, 2**63, I64_MIN - 1, "1"])
def test_update_op_rejects_by_outside_i64(by: Any) -> None:
    with pytest.raises(ValueError):
        UpdateOp("increment", "n", by=by)
    with pytest.raises(ValueError):
        UpdateOp("set", "n", 1, by=1)


# ------------------------------------------------------------------ seed documents' form


@pytest.mark.parametrize(
    ("legacy", "typed"),
    [
        ({"set": {"a": 1}}, {"type": "set", "path": "", "value": {"a": 1}}),
        ({"set": None}, {"type": "set", "path": "", "value": None}),
        ({"set": {"path": "a", "value": 1}}, {"type": "set", "path": "", "value": {"path": "a", "value": 1}}),
        ({"merge": {"b": 2}}, {"type": "merge", "value": {"b": 2}}),
        ({"merge": [1]}, {"type": "merge", "value": [1]}),
        ({"increment": {"field": "count", "by": 1}}, {"type": "increment", "path": "count", "by": 1}),
        ({"decrement": {"field": "count", "by": 7}}, {"type": "decrement", "path": "count", "by": 7}),
        ({"decrement": {"field": "", "by": I64_MIN}}, {"type": "decrement", "path": "", "by": I64_MIN}),
        ({"remove": "field"}, {"type": "remove", "path": "field"}),
        ({"remove": ""}, {"type": "remove", "path": ""}),
        ({"append": "chunk"}, {"type": "append", "value": "chunk"}),
        ({"append": {"path": "a", "value": 1}}, {"type": "append", "value": {"path": "a", "value": 1}}),
        ({"set": 5, "note": "extra keys are ignored"}, {"type": "set", "path": "", "value": 5}),
        ({"increment": {"field": "c", "by": 2, "extra": 0}}, {"type": "increment", "path": "c", "by": 2}),
    ],
)
def test_seed_form_maps_to_the_typed_form(legacy: dict[str, Any], typed: dict[str, Any]) -> None:
    assert parse_ops([legacy]) == parse_ops([typed])


def test_type_key_wins_over_seed_keys() -> None:
    raw = {"type": "remove", "path": "a", "set": 1, "merge": {}}
    assert parse_ops([raw]) == [remove_op("a")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"set": 1, "merge": {}}, "ambiguous operation: found `set`, `merge`"),
        ({"increment": 5}, "invalid type: integer `5`, expected an object with `field` and `by`"),
        ({"decrement": None}, "invalid type: null, expected an object with `field` and `by`"),
        ({"increment": {"by": 1}}, "missing field `field`"),
        ({"increment": {"field": "c"}}, "missing field `by`"),
        ({"increment": {}}, "missing field `field`"),
        ({"increment": {"field": 1, "by": 1}}, "invalid type: integer `1`, expected a string"),
        ({"increment": {"field": "c", "by": 1.5}}, "invalid type: floating point `1.5`, expected i64"),
        ({"increment": {"field": 1, "by": 1.5}}, "invalid type: floating point `1.5`, expected i64"),
        ({"remove": ["a"]}, "invalid type: sequence, expected a string"),
        ({"remove": None}, "invalid type: null, expected a string"),
    ],
)
def test_malformed_seed_form_is_rejected(raw: dict[str, Any], message: str) -> None:
    assert reject([raw]).startswith(message)


# ------------------------------------------------------------------ malformed typed form


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "missing field `type`"),
        ({"path": "a", "value": 1}, "missing field `type`"),
        ({"type": "Set", "path": "a"}, f"unknown variant `Set`, expected one of {VARIANTS}"),
        ({"type": "x"}, f"unknown variant `x`, expected one of {VARIANTS}"),
        ({"type": ""}, f"unknown variant ``, expected one of {VARIANTS}"),
        ({"type": 0, "path": "a"}, "invalid type: integer `0`, expected variant identifier"),
        ({"type": None}, "invalid type: null, expected variant identifier"),
        ({"type": ["set"]}, "invalid type: sequence, expected variant identifier"),
        ({"type": "set"}, "missing field `path`"),
        ({"type": "set", "value": 1}, "missing field `path`"),
        ({"type": "set", "path": ["a"], "value": 1}, "invalid type: sequence, expected a string"),
        ({"type": "set", "path": None}, "invalid type: null, expected a string"),
        ({"type": "remove"}, "missing field `path`"),
        ({"type": "remove", "path": 3}, "invalid type: integer `3`, expected a string"),
        ({"type": "increment", "path": "n"}, "missing field `by`"),
        ({"type": "increment", "by": 1}, "missing field `path`"),
        ({"type": "increment"}, "missing field `path`"),
        ({"type": "increment", "path": "n", "by": 1.5}, "invalid type: floating point `1.5`, expected i64"),
        ({"type": "increment", "path": "n", "by": 1.0}, "invalid type: floating point `1.0`, expected i64"),
        ({"type": "increment", "path": "n", "by": "1"}, 'invalid type: string "1", expected i64'),
        ({"type": "increment", "path": "n", "by": True}, "invalid type: boolean `true`, expected i64"),
        ({"type": "decrement", "path": "n", "by": None}, "invalid type: null, expected i64"),
        ({"type": "decrement", "path": "n", "by": {}}, "invalid type: map, expected i64"),
        (
            {"type": "increment", "path": "n", "by": 2**63},
            "invalid value: integer `9223372036854775808`, expected i64",
        ),
        (
            {"type": "increment", "path": "n", "by": 2**64 - 1},
            "invalid value: integer `18446744073709551615`",
        ),
        (
            {"type": "increment", "path": "n", "by": 2**64},
            "invalid type: floating point `1.8446744073709552e19`",
        ),
        (
            {"type": "increment", "path": "n", "by": I64_MIN - 1},
            "invalid type: floating point `-9.223372036854776e18`",
        ),
        (
            {"type": "increment", "path": "n", "by": 10**400},
            "invalid type: number out of range, expected i64",
        ),
        # serde reports the first bad field in bytewise key order, before missing fields.
        ({"type": "increment", "path": 1, "by": 1.5}, "invalid type: floating point `1.5`, expected i64"),
        ({"type": "increment", "by": "x"}, 'invalid type: string "x", expected i64'),
        ({"type": "merge"}, "missing field `value`"),
        ({"type": "merge", "path": "a"}, "missing field `value`"),
        ({"type": "append", "path": ["a"]}, "missing field `value`"),
        (
            {"type": "merge", "path": 1, "value": {}},
            "data did not match any variant of untagged enum MergePath",
        ),
        (
            {"type": "merge", "path": {}, "value": {}},
            "data did not match any variant of untagged enum MergePath",
        ),
        (
            {"type": "append", "path": ["a", 1], "value": 1},
            "data did not match any variant of untagged enum MergePath",
        ),
        (
            {"type": "append", "path": True, "value": 1},
            "data did not match any variant of untagged enum MergePath",
        ),
    ],
)
def test_malformed_typed_op_is_rejected_with_serde_wording(raw: dict[str, Any], message: str) -> None:
    assert reject([raw]).startswith(message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (5, "invalid type: integer `5`, expected internally tagged enum UpdateOp"),
        ("set", 'invalid type: string "set", expected internally tagged enum UpdateOp'),
        (None, "invalid type: null, expected internally tagged enum UpdateOp"),
        (["set", "a", 1], "invalid type: sequence, expected internally tagged enum UpdateOp"),
        (2.5, "invalid type: floating point `2.5`, expected internally tagged enum UpdateOp"),
    ],
)
def test_non_object_op_is_rejected(raw: Any, message: str) -> None:
    assert reject([raw]) == f"{message} at ops[0]"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "invalid type: null, expected a sequence"),
        ({"type": "set", "path": "a"}, "invalid type: map, expected a sequence"),
        ("ops", 'invalid type: string "ops", expected a sequence'),
        (3, "invalid type: integer `3`, expected a sequence"),
        (False, "invalid type: boolean `false`, expected a sequence"),
    ],
)
def test_non_list_ops_is_rejected(raw: Any, message: str) -> None:
    assert reject(raw) == message


def test_error_names_the_failing_op_and_rejects_the_whole_batch() -> None:
    ops = [{"type": "set", "path": "a", "value": 1}, {"set": 2}, {"type": "nope"}, {"type": "remove"}]
    assert reject(ops) == f"unknown variant `nope`, expected one of {VARIANTS} at ops[2]"


def test_parse_op_without_index_has_no_position() -> None:
    with pytest.raises(InputError) as info:
        parse_op({"type": "remove"})
    assert info.value.message == "missing field `path`"


# ------------------------------------------------------------------ serde-style value names


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (1.0, "1.0"),
        (-2.0, "-2.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (100.0, "100.0"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e16"),
        (1.5e16, "1.5e16"),
        (123456789.125, "123456789.125"),
        (0.001, "0.001"),
        (0.0001, "0.0001"),
        (0.00001, "0.00001"),
        (0.000001, "1e-6"),
        (1.25e-7, "1.25e-7"),
        (1e300, "1e300"),
        (2.0**64, "1.8446744073709552e19"),
        (float("inf"), "inf"),
        (float("nan"), "NaN"),
    ],
)
def test_floats_are_formatted_like_serde_json(value: float, text: str) -> None:
    assert format_f64(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ('a"b\\c\n', 'string "a\\"b\\\\c\\n"'),
        ("\x1b", 'string "\\u{1b}"'),
        ("é ü", 'string "é ü"'),
        (b"x", "byte array"),
        (-5, "integer `-5`"),
        (2**64 - 1, "integer `18446744073709551615`"),
        (True, "boolean `true`"),
        ([], "sequence"),
        ({}, "map"),
    ],
)
def test_unexpected_values_are_described_like_serde(value: Any, text: str) -> None:
    assert describe_json(value) == text
