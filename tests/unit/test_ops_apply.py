"""``apply_ops`` beyond the reference's own tests: messages, ordering rules, numbers, purity."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.jsonutil import dumps
from gateway.state.ops import (
    DOC_URL,
    OpError,
    OpsOutcome,
    UpdateOp,
    append_op,
    apply_ops,
    decrement_op,
    increment_op,
    json_type_name,
    merge_op,
    parse_ops,
    remove_op,
    set_op,
    value_depth,
)

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


def same(actual: Any, expected: Any) -> bool:
    return bool(dumps(actual) == dumps(expected))


def apply(old: Any, *ops: UpdateOp, existed: bool = True) -> OpsOutcome:
    return apply_ops(old, existed, ops)


def only_error(outcome: OpsOutcome) -> OpError:
    assert len(outcome.errors) == 1, outcome.errors
    return outcome.errors[0]


# ------------------------------------------------------------------ error messages (table 2.5)


@pytest.mark.parametrize(
    ("op", "code", "message"),
    [
        (merge_op({}, ["k"] * 33), "merge.path.too_deep", "Path depth 33 exceeds maximum of 32"),
        (append_op(1, ["k"] * 40), "append.path.too_deep", "Path depth 40 exceeds maximum of 32"),
        (append_op(1, ["a", ""]), "append.path.empty_segment", "Path contains an empty segment"),
        (merge_op({}, [""]), "merge.path.empty_segment", "Path contains an empty segment"),
        (
            set_op("é" * 129, 1),
            "set.path.segment_too_long",
            "Path segment of 258 bytes exceeds maximum of 256",
        ),
        (
            increment_op("x" * 300, 1),
            "increment.path.segment_too_long",
            "Path segment of 300 bytes exceeds maximum of 256",
        ),
        (
            remove_op("constructor"),
            "remove.path.proto_polluted",
            "Path segment 'constructor' is not allowed (prototype pollution).",
        ),
        (merge_op(None, "a"), "merge.value.not_an_object", "Merge value must be a JSON object"),
        (merge_op([1], "a"), "merge.value.not_an_object", "Merge value must be a JSON object"),
        (
            merge_op({str(i): i for i in range(1025)}),
            "merge.value.too_many_keys",
            "Merge value has 1025 top-level keys, exceeds maximum of 1024",
        ),
        (
            merge_op({"prototype": 1, "constructor": 2}),
            "merge.value.proto_polluted",
            'Merge value top-level key "constructor" is a prototype-pollution sink',
        ),
        (
            merge_op({"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}),
            "merge.value.too_deep",
            "Merge value JSON nesting depth 17 exceeds maximum of 16",
        ),
    ],
)
def test_validation_messages(op: UpdateOp, code: str, message: str) -> None:
    err = only_error(apply({"keep": 1}, op))
    assert (err.code, err.message, err.doc_url) == (code, message, DOC_URL)


def test_limits_are_inclusive() -> None:
    ok = apply(
        {},
        merge_op({str(i): 0 for i in range(1024)}, ["k"] * 32),
        set_op("é" * 128, 1),
        merge_op({"a": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}),
    )
    assert ok.errors == ()
    assert value_depth(ok.value["a"]) == 15


def test_path_errors_come_before_value_errors_and_in_order() -> None:
    assert only_error(apply({}, merge_op("bad", ["__proto__"]))).code == "merge.path.proto_polluted"
    assert only_error(apply({}, merge_op({}, ["", "__proto__"]))).code == "merge.path.empty_segment"
    assert only_error(apply({}, merge_op({}, [""] * 33))).code == "merge.path.too_deep"
    many = {str(i): 0 for i in range(1100)} | {"__proto__": 1}
    assert only_error(apply({}, merge_op(many))).code == "merge.value.too_many_keys"
    assert only_error(apply({}, merge_op({"__proto__": {"a": {}}}))).code == "merge.value.proto_polluted"


def test_nested_proto_keys_in_merge_values_are_allowed() -> None:
    out = apply({}, merge_op({"a": {"__proto__": 1}}))
    assert out.errors == ()
    assert out.value == {"a": {"__proto__": 1}}


@pytest.mark.parametrize(
    ("old", "op", "message"),
    [
        (None, set_op("a", 1), "Cannot set at path 'a': target is null, expected object."),
        ([1], increment_op("a", 1), "Cannot increment at path 'a': target is array, expected object."),
        (True, decrement_op("a", 1), "Cannot decrement at path 'a': target is boolean, expected object."),
        (3.5, remove_op("a"), "Cannot remove at path 'a': target is number, expected object."),
        ("s", append_op(1, "a"), "Cannot append at path '[a]': target is string, expected object."),
        (
            None,
            append_op(1, ["a", "b.c"]),
            "Cannot append at path '[a, b.c]': target is null, expected object.",
        ),
        ({"n": True}, increment_op("n", 1), "Expected number at path 'n', got boolean."),
        ({"n": {}}, decrement_op("n", 1), "Expected number at path 'n', got object."),
        ("x", increment_op("", 1), "Expected number at path 'root', got string."),
        ({}, decrement_op("", 1), "Expected number at path 'root', got object."),
        ({"n": I64_MIN}, decrement_op("n", 1), "Expected number at path 'n', got number."),
        ("ab", append_op(1), "Expected string append value at path 'root', got number."),
        ({"s": "ab"}, append_op(None, "s"), "Expected string append value at path 's', got null."),
        (
            {"a": {"b": "x"}},
            append_op([], ["a", "b"]),
            "Expected string append value at path 'b', got array.",
        ),
        (
            7,
            append_op("x"),
            "Cannot append at path 'root': target is number, expected array, string, null, or missing field.",
        ),
        (
            {"a": {"b": {}}},
            append_op("x", ["a", "b"]),
            "Cannot append at path 'b': target is object, expected array, string, null, or missing field.",
        ),
    ],
)
def test_target_errors_leave_the_value_unchanged(old: Any, op: UpdateOp, message: str) -> None:
    before = copy.deepcopy(old)
    out = apply(old, op)
    assert only_error(out).message == message
    assert out.errors[0].code.startswith(op.kind + ".")
    assert same(out.value, before)


# ------------------------------------------------------------------ missing key (using_missing_default)


def test_missing_key_with_no_ops_becomes_empty_object() -> None:
    out = apply("ignored", existed=False)
    assert out.value == {}
    assert out.errors == ()


def test_missing_key_root_counters_start_from_by() -> None:
    assert apply(None, increment_op("", 5), existed=False).value == 5
    assert apply(None, decrement_op("", 5), existed=False).value == -5
    assert apply(None, decrement_op("", I64_MIN), existed=False).value == 2**63


def test_missing_default_survives_failed_ops_but_not_successful_ones() -> None:
    after_failure = apply(None, set_op("__proto__", 1), increment_op("", 3), existed=False)
    assert after_failure.value == 3
    assert [e.op_index for e in after_failure.errors] == [0]
    after_noop = apply(None, remove_op("gone"), increment_op("", 3), existed=False)
    assert after_noop.value == {}
    assert only_error(after_noop).code == "increment.not_number"


def test_stored_empty_object_and_null_are_not_missing() -> None:
    assert only_error(apply({}, increment_op("", 1))).message == "Expected number at path 'root', got object."
    assert only_error(apply(None, increment_op("", 1))).message == "Expected number at path 'root', got null."
    assert only_error(apply({}, append_op("x"))).code == "append.type_mismatch"
    assert apply(None, append_op("x")).value == "x"
    assert apply(None, append_op(1)).value == [1]


def test_missing_key_root_append_after_a_field_op_sees_an_object() -> None:
    out = apply(None, set_op("a", 1), append_op("x"), existed=False)
    assert out.value == {"a": 1}
    assert only_error(out).code == "append.type_mismatch"


def test_missing_key_field_ops_work_on_the_implicit_object() -> None:
    out = apply(None, merge_op({"a": 1}), increment_op("n", 2), append_op("s", "t"), existed=False)
    assert same(out.value, {"a": 1, "n": 2, "t": "s"})


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("start", "op", "expected"),
    [
        (I64_MAX, increment_op("n", 1), 2**63),
        (I64_MAX, decrement_op("n", -1), 2**63),
        (5, increment_op("n", I64_MAX), 2**63 + 4),
        (U64_MAX - 1, increment_op("n", 1), U64_MAX),
        (2**63 + 10, decrement_op("n", I64_MAX), 11),
        (2**63, increment_op("n", I64_MIN), 0),
        (I64_MIN, increment_op("n", -0), I64_MIN),
        (-1, decrement_op("n", I64_MAX), I64_MIN),
        (2.0, increment_op("n", 1), 3.0),
        (0.1, increment_op("n", 0), 0.1),
        (1e300, decrement_op("n", 1), 1e300),
        (2**64 + 1, increment_op("n", 1), float(2**64)),
        (-(2**64), decrement_op("n", 1), -float(2**64)),
    ],
)
def test_arithmetic(start: Any, op: UpdateOp, expected: Any) -> None:
    out = apply({"n": start}, op)
    assert out.errors == ()
    assert same(out.value["n"], expected)
    root = apply(start, UpdateOp(op.kind, "", by=op.by))
    assert same(root.value, expected)


@pytest.mark.parametrize(
    ("start", "op"),
    [
        (U64_MAX, increment_op("n", 1)),
        (I64_MIN, decrement_op("n", 1)),
        (I64_MIN, increment_op("n", -1)),
        (-5, decrement_op("n", I64_MAX)),
        (10**400, increment_op("n", 1)),
        (float("inf"), increment_op("n", 1)),
        (float("nan"), decrement_op("n", 1)),
    ],
)
def test_arithmetic_out_of_range_is_not_number(start: Any, op: UpdateOp) -> None:
    out = apply({"n": start}, op)
    err = only_error(out)
    assert err.code == f"{op.kind}.not_number"
    assert err.message == "Expected number at path 'n', got number."
    assert out.value["n"] is start


def test_float_results_stay_floats_and_ints_stay_ints() -> None:
    out = apply({"f": 1.5, "i": 1}, increment_op("f", 2), decrement_op("f", 1), increment_op("i", 2))
    assert same(out.value, {"f": 2.5, "i": 3})
    assert isinstance(out.value["f"], float)
    assert type(out.value["i"]) is int


def test_booleans_are_never_numbers() -> None:
    out = apply({"t": True, "f": False}, increment_op("t", 1), decrement_op("f", 0))
    assert [e.message for e in out.errors] == [
        "Expected number at path 't', got boolean.",
        "Expected number at path 'f', got boolean.",
    ]
    assert out.value == {"t": True, "f": False}
    assert only_error(apply(True, increment_op("", 1))).code == "increment.not_number"


# ------------------------------------------------------------------ set / merge / append / remove


def test_set_root_replaces_with_any_value_and_field_set_overwrites() -> None:
    assert apply({"a": 1}, set_op("", [1, 2])).value == [1, 2]
    assert apply({"a": 1}, set_op("a", {"b": 2})).value == {"a": {"b": 2}}
    assert apply({"a": 1}, set_op("a.b", 2)).value == {"a": 1, "a.b": 2}


def test_root_merge_is_shallow() -> None:
    out = apply({"a": {"x": 1, "y": 2}, "b": 1}, merge_op({"a": {"z": 3}, "c": None}))
    assert same(out.value, {"a": {"z": 3}, "b": 1, "c": None})


def test_path_merge_replaces_non_object_root_and_leaf() -> None:
    assert same(apply("leaf", merge_op({"x": 1}, ["a"])).value, {"a": {"x": 1}})
    assert same(apply([1], merge_op({}, ["a", "b"])).value, {"a": {"b": {}}})
    assert same(apply({"a": [1, 2]}, merge_op({"x": 1}, "a")).value, {"a": {"x": 1}})
    assert same(
        apply({"a": {"b": 5}, "k": 0}, merge_op({"x": 1}, ["a", "b"])).value, {"a": {"b": {"x": 1}}, "k": 0}
    )


def test_root_merge_on_non_object_is_silent_for_every_kind() -> None:
    for root in (None, 1, "s", [1], True):
        out = apply(root, merge_op({"a": 1}))
        assert out.errors == ()
        assert out.value == root


@pytest.mark.parametrize(
    ("old", "op", "expected"),
    [
        ("ab", append_op("cd"), "abcd"),
        ([1], append_op([2]), [1, [2]]),
        ({"s": None}, append_op("x", "s"), {"s": "x"}),
        ({"a": {"b": None}}, append_op("x", ["a", "b"]), {"a": {"b": "x"}}),
        ({"a": {"b": None}}, append_op(1, ["a", "b"]), {"a": {"b": [1]}}),
        ({"a": {"b": "x"}}, append_op("y", ["a", "b"]), {"a": {"b": "xy"}}),
        ({"a": "str"}, append_op("y", ["a", "b"]), {"a": {"b": ["y"]}}),
        ({"a": {"b": 1}}, append_op("y", ["a", "b", "c"]), {"a": {"b": {"c": ["y"]}}}),
        ({"a": []}, append_op(None, "a"), {"a": [None]}),
        ({}, append_op(None, "a"), {"a": [None]}),
    ],
)
def test_append_matrix(old: Any, op: UpdateOp, expected: Any) -> None:
    out = apply(old, op)
    assert out.errors == ()
    assert same(out.value, expected)


def test_remove_field_root_and_missing() -> None:
    assert apply({"a": 1, "b": 2}, remove_op("a")).value == {"b": 2}
    assert apply({"a": 1}, remove_op("")).value is None
    out = apply({"a": 1}, remove_op("b"))
    assert (out.value, out.errors) == ({"a": 1}, ())
    assert only_error(apply(None, remove_op("a"))).code == "remove.target_not_object"


# ------------------------------------------------------------------ reference kv/redis adapter cases


def test_kv_812_update_basic_operations() -> None:
    ops = parse_ops(
        [
            {"type": "set", "path": "name", "value": "test"},
            {"type": "increment", "path": "counter", "by": 5},
            {"type": "decrement", "path": "counter", "by": 2},
            {"type": "remove", "path": "name"},
            {"type": "merge", "value": {"merged": True}},
        ]
    )
    out = apply_ops({"counter": 10, "name": "old"}, True, ops)
    assert out.errors == ()
    assert same(out.value, {"counter": 13, "merged": True})


def test_kv_938_update_new_object_with_increment() -> None:
    out = apply_ops(None, False, parse_ops([{"type": "increment", "path": "counter", "by": 1}]))
    assert same(out.value, {"counter": 1})


def test_kv_1008_update_append_missing_root() -> None:
    assert (
        apply_ops(None, False, parse_ops([{"type": "append", "path": "", "value": "hello"}])).value == "hello"
    )
    assert apply_ops(None, False, parse_ops([{"type": "append", "value": {"a": 1}}])).value == [{"a": 1}]


def test_redis_380_root_null_and_numeric_null_errors() -> None:
    out = apply({"a": 1}, set_op("", None), increment_op("", 1), decrement_op("", 1))
    assert out.value is None
    assert [(e.op_index, e.code) for e in out.errors] == [
        (1, "increment.not_number"),
        (2, "decrement.not_number"),
    ]


def test_redis_432_empty_path_numeric_and_remove_ops_target_root() -> None:
    values = []
    value: Any = None
    existed = False
    for op in (increment_op("", 2), increment_op("", 3), decrement_op("", 2), remove_op("")):
        out = apply_ops(value, existed, [op])
        assert out.errors == ()
        value, existed = out.value, True
        values.append(value)
    assert values == [2, 5, 3, None]


# ------------------------------------------------------------------ purity and sharing


def test_input_and_op_values_are_never_mutated() -> None:
    current = {"list": [1], "obj": {"deep": {"x": 1}}, "s": "a", "n": 1}
    payload = {"k": [1]}
    ops = [
        append_op(2, "list"),
        merge_op({"y": 2}, ["obj", "deep"]),
        append_op("b", "s"),
        increment_op("n", 1),
        set_op("p", payload),
        append_op(3, ["p", "k"]),
        merge_op({"z": 1}, ["p"]),
        remove_op("obj"),
    ]
    snapshot = copy.deepcopy((current, payload))
    first = apply(current, *ops)
    second = apply(current, *ops)
    assert (current, payload) == snapshot
    assert same(first.value, second.value)
    assert same(first.value, {"list": [1, 2], "s": "ab", "n": 2, "p": {"k": [1, 3], "z": 1}})


def test_unchanged_subtrees_are_shared_not_copied() -> None:
    big = {str(i): [i] for i in range(100)}
    current = {"big": big, "other": {"x": 1}, "n": 0}
    out = apply(current, increment_op("n", 1), merge_op({"y": 2}, "other"))
    assert out.value["big"] is big
    assert out.value["other"] is not current["other"]
    assert current["other"] == {"x": 1}


def test_value_is_returned_as_is_when_nothing_changes() -> None:
    current = {"a": [1, 2]}
    out = apply(current, remove_op("missing"), increment_op("a", 1), merge_op({}))
    assert out.value is current
    assert [e.op_index for e in out.errors] == [1]


def test_a_batch_reuses_containers_it_already_copied() -> None:
    current: dict[str, Any] = {"events": []}
    out = apply(current, *(append_op(i, "events") for i in range(50)))
    assert out.value["events"] == list(range(50))
    assert current == {"events": []}


# ------------------------------------------------------------------ small helpers


def test_error_and_outcome_json() -> None:
    err = OpError(2, "set.target_not_object", "m")
    assert err.to_json() == {
        "op_index": 2,
        "code": "set.target_not_object",
        "message": "m",
        "doc_url": DOC_URL,
    }
    assert OpsOutcome({}, (err,)).errors_json() == [err.to_json()]


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("s", 0), (None, 0), ({}, 1), ([], 1), ([[{}]], 3), ({"a": 1, "b": [{"c": []}]}, 4)],
)
def test_value_depth(value: Any, depth: int) -> None:
    assert value_depth(value) == depth


def test_value_depth_handles_very_deep_values_without_recursion() -> None:
    v: Any = 1
    for _ in range(50_000):
        v = [v]
    assert value_depth(v) == 50_000


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (0, "number"),
        (1.5, "number"),
        ("", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_json_type_name(value: Any, name: str) -> None:
    assert json_type_name(value) == name
