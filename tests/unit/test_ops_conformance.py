"""Conformance with the reference engine's own update-op tests.

One test per case of the reference's ``engine/src/update_ops.rs`` unit tests ($UO) and
``engine/tests/state_stream_update_e2e.rs`` (e2e), named ``test_uo_<line>_...`` and
``test_e2e_<line>_...`` after the checklist in section 6 of the reference notes. Ops are
written in the typed wire form and go through ``parse_ops``, as they do in the engine.
The e2e cases run several update calls against a tiny in-memory store that applies the ops
exactly as an adapter does (missing key -> ``existed=False``; the result is always written).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.jsonutil import dumps
from gateway.state.ops import DOC_URL, OpError, OpsOutcome, apply_ops, parse_ops


def same(actual: Any, expected: Any) -> bool:
    """JSON equality that tells 1 from 1.0 and true from 1 (Python's == does not)."""
    return bool(dumps(actual) == dumps(expected))


def update(old: Any, ops: list[dict[str, Any]], *, existed: bool = True) -> OpsOutcome:
    return apply_ops(old, existed, parse_ops(ops))


def run(old: Any, ops: list[dict[str, Any]], *, existed: bool = True) -> Any:
    """Like the reference's ``run``: asserts no errors and returns the value."""
    outcome = update(old, ops, existed=existed)
    assert outcome.errors == (), outcome.errors
    return outcome.value


def codes(outcome: OpsOutcome) -> list[tuple[int, str]]:
    return [(e.op_index, e.code) for e in outcome.errors]


class Store:
    """What ``BuiltinKvStore.update`` does around ``apply_update_ops``."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def update(self, key: str, ops: list[dict[str, Any]]) -> OpsOutcome:
        outcome = apply_ops(self.data.get(key), key in self.data, parse_ops(ops))
        self.data[key] = outcome.value
        return outcome


def assert_structured_error(errors: tuple[OpError, ...], op_index: int, code: str, text: str) -> None:
    assert len(errors) == 1
    assert errors[0].op_index == op_index
    assert errors[0].code == code
    assert text in errors[0].message
    assert errors[0].doc_url == DOC_URL


def s(path: str, value: Any) -> dict[str, Any]:
    return {"type": "set", "path": path, "value": value}


def app(path: Any, value: Any) -> dict[str, Any]:
    return {"type": "append", "path": path, "value": value}


def mrg(path: Any, value: Any) -> dict[str, Any]:
    return {"type": "merge", "path": path, "value": value}


def inc(path: str, by: int) -> dict[str, Any]:
    return {"type": "increment", "path": path, "by": by}


def dec(path: str, by: int) -> dict[str, Any]:
    return {"type": "decrement", "path": path, "by": by}


def rem(path: str) -> dict[str, Any]:
    return {"type": "remove", "path": path}


I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

# ------------------------------------------------------------------ $UO (update_ops.rs)


def test_uo_674_appends_to_array_field_as_single_element() -> None:
    out = run({"events": [{"kind": "start"}]}, [app("events", {"kind": "chunk"})])
    assert same(out, {"events": [{"kind": "start"}, {"kind": "chunk"}]})


def test_uo_687_concatenates_string_fields() -> None:
    assert same(run({"transcript": "hello"}, [app("transcript", " world")]), {"transcript": "hello world"})


def test_uo_697_initializes_missing_fields_by_value_kind() -> None:
    out = run({}, [app("transcript", "hello"), app("events", {"kind": "chunk"})])
    assert same(out, {"transcript": "hello", "events": [{"kind": "chunk"}]})


def test_uo_716_initializes_missing_root_by_value_kind() -> None:
    assert same(run(None, [app("", "hello")], existed=False), "hello")
    assert same(run(None, [app("", {"kind": "chunk"})], existed=False), [{"kind": "chunk"}])


def test_uo_725_set_empty_path_replaces_root_even_with_null_value() -> None:
    assert run({"": "empty-field", "keep": True}, [{"type": "set", "path": ""}]) is None


def test_uo_738_skips_incompatible_string_append_value() -> None:
    out = update({"transcript": "hello"}, [app("transcript", {"not": "string"})])
    assert same(out.value, {"transcript": "hello"})
    assert codes(out) == [(0, "append.type_mismatch")]


def test_uo_750_skips_incompatible_object_append_target() -> None:
    out = update({"events": {}}, [app("events", "chunk")])
    assert same(out.value, {"events": {}})
    assert codes(out) == [(0, "append.type_mismatch")]


def test_uo_762_increments_existing_number_and_missing_fields() -> None:
    assert same(run({"count": 2}, [inc("count", 3), inc("missing", 3)]), {"count": 5, "missing": 3})


def test_uo_775_increment_rejects_existing_non_number() -> None:
    out = update({"count": 2, "bad": "value"}, [inc("count", 3), inc("bad", 3), inc("missing", 3)])
    assert same(out.value, {"count": 5, "bad": "value", "missing": 3})
    assert codes(out) == [(1, "increment.not_number")]


def test_uo_792_decrements_existing_number_and_missing_fields() -> None:
    assert same(run({"count": 5}, [dec("count", 3), dec("missing", 3)]), {"count": 2, "missing": -3})


def test_uo_805_decrement_rejects_existing_non_number() -> None:
    out = update({"count": 5, "bad": "value"}, [dec("count", 3), dec("bad", 3), dec("missing", 3)])
    assert same(out.value, {"count": 2, "bad": "value", "missing": -3})
    assert codes(out) == [(1, "decrement.not_number")]


def test_uo_825_preserves_order_across_multiple_numeric_ops() -> None:
    assert same(run({"count": 10}, [inc("count", 5), dec("count", 3)]), {"count": 12})


def test_uo_838_numeric_ops_accept_json_float_fields() -> None:
    assert same(run({"count": 1.5}, [inc("count", 2), dec("count", 1)]), {"count": 2.5})


def test_uo_851_numeric_ops_reject_null_fields_instead_of_treating_them_as_missing() -> None:
    out = update({"inc": None, "dec": None}, [inc("inc", 1), dec("dec", 1)])
    assert same(out.value, {"inc": None, "dec": None})
    assert codes(out) == [(0, "increment.not_number"), (1, "decrement.not_number")]


def test_uo_866_numeric_ops_with_zero_still_validate_existing_type() -> None:
    out = update({"bad": "value", "count": 2}, [inc("bad", 0), dec("count", 0)])
    assert same(out.value, {"bad": "value", "count": 2})
    assert codes(out) == [(0, "increment.not_number")]


def test_uo_882_numeric_overflow_promotes_to_exact_unsigned_integer() -> None:
    out = run({"count": I64_MAX}, [inc("count", 1)])
    assert out["count"] == 9223372036854775808
    assert isinstance(out["count"], int)


def test_uo_892_numeric_ops_preserve_large_unsigned_integer_precision() -> None:
    large = I64_MAX + 10
    out = run({"inc": large, "dec": large}, [inc("inc", 1), dec("dec", 1)])
    assert same(out, {"inc": I64_MAX + 11, "dec": I64_MAX + 9})


def test_uo_904_missing_decrement_by_i64_min_initializes_exact_unsigned_value() -> None:
    assert same(run({}, [dec("count", I64_MIN)]), {"count": 2**63})


def test_uo_911_empty_path_numeric_ops_target_root_value() -> None:
    assert same(run(2, [inc("", 3)]), 5)
    assert same(run(5, [dec("", 3)]), 2)


def test_uo_920_empty_path_remove_clears_root_value() -> None:
    assert run({"": "empty-field", "keep": True}, [rem("")]) is None


def test_uo_930_failed_ops_continue_and_preserve_error_indexes() -> None:
    out = update(
        {"bad": "value", "events": {}},
        [inc("bad", 1), s("__proto__", True), app("events", "chunk"), s("ok", True)],
    )
    assert same(out.value, {"bad": "value", "events": {}, "ok": True})
    assert codes(out) == [
        (0, "increment.not_number"),
        (1, "set.path.proto_polluted"),
        (2, "append.type_mismatch"),
    ]


def test_uo_958_dotted_paths_are_first_level_fields() -> None:
    out = run({"user.name": ["A"], "user": {"name": ["B"]}}, [app("user.name", "C")])
    assert same(out, {"user.name": ["A", "C"], "user": {"name": ["B"]}})


def test_uo_978_preserves_order_across_multiple_append_ops() -> None:
    assert same(
        run({"events": []}, [app("events", "first"), app("events", "second")]),
        {"events": ["first", "second"]},
    )


def test_uo_991_append_array_value_to_array_target_as_single_element() -> None:
    assert same(run({"events": []}, [app("events", ["nested", "array"])]), {"events": [["nested", "array"]]})


def test_uo_1001_append_to_null_field_initializes_by_value_kind() -> None:
    out = run({"string": None, "array": None}, [app("string", "chunk"), app("array", {"kind": "chunk"})])
    assert same(out, {"string": "chunk", "array": [{"kind": "chunk"}]})


def test_uo_1026_merges_into_existing_first_level_object_field() -> None:
    out = run({"session-1": {"ts1": "a"}}, [mrg("session-1", {"ts2": "b"})])
    assert same(out, {"session-1": {"ts1": "a", "ts2": "b"}})


def test_uo_1036_merges_into_missing_first_level_field_creates_object() -> None:
    assert same(run({}, [mrg("session-1", {"author": "alice"})]), {"session-1": {"author": "alice"}})


def test_uo_1046_merges_at_nested_path_replacing_non_object_intermediate() -> None:
    out = run({"sessions": {"abc": "garbage"}}, [mrg(["sessions", "abc"], {"author": "alice"})])
    assert same(out, {"sessions": {"abc": {"author": "alice"}}})


def test_uo_1064_merges_at_nested_path_creating_missing_intermediates() -> None:
    assert same(run({}, [mrg(["a", "b", "c"], {"x": 1})]), {"a": {"b": {"c": {"x": 1}}}})


def test_uo_1074_merges_at_nested_target_shallowly_overwrites_keys() -> None:
    old = {"sessions": {"abc": {"author": "old", "topic": "preserved"}}}
    out = run(old, [mrg(["sessions", "abc"], {"author": "new"})])
    assert same(out, {"sessions": {"abc": {"author": "new", "topic": "preserved"}}})


def test_uo_1099_merge_with_non_object_value_returns_error_and_no_ops() -> None:
    out = update({"a": 1}, [mrg("foo", "not-an-object")])
    assert same(out.value, {"a": 1})
    assert codes(out) == [(0, "merge.value.not_an_object")]


def test_uo_1112_root_level_merge_unchanged_for_none_empty_string_and_empty_array() -> None:
    expected = {"a": 1, "b": 2}
    assert same(run({"a": 1}, [{"type": "merge", "value": {"b": 2}}]), expected)
    assert same(run({"a": 1}, [mrg("", {"b": 2})]), expected)
    assert same(run({"a": 1}, [mrg([], {"b": 2})]), expected)


def test_uo_1133_root_merge_on_non_object_current_value_remains_silent_noop() -> None:
    out = update("leaf", [{"type": "merge", "value": {"a": 1}}])
    assert out.value == "leaf"
    assert out.errors == ()


def test_uo_1142_single_string_path_equivalent_to_single_segment_array() -> None:
    from_string = run({}, [mrg("foo", {"x": 1})])
    from_array = run({}, [mrg(["foo"], {"x": 1})])
    assert same(from_string, from_array)
    assert same(from_string, {"foo": {"x": 1}})


def test_uo_1151_literal_dotted_segment_treated_as_one_key() -> None:
    out = run({"a": {"b": {"preserved": True}}}, [mrg(["a.b"], {"x": 1})])
    assert same(out, {"a": {"b": {"preserved": True}}, "a.b": {"x": 1}})


def test_uo_1170_rejects_path_too_deep() -> None:
    out = update({}, [mrg([f"k{i}" for i in range(33)], {"x": 1})])
    assert codes(out) == [(0, "merge.path.too_deep")]
    assert out.errors[0].message == "Path depth 33 exceeds maximum of 32"


def test_uo_1182_rejects_oversized_segment() -> None:
    out = update({}, [mrg(["a" * 257], {"x": 1})])
    assert codes(out) == [(0, "merge.path.segment_too_long")]
    assert out.errors[0].message == "Path segment of 257 bytes exceeds maximum of 256"


def test_uo_1192_rejects_empty_segment() -> None:
    out = update({}, [mrg(["a", ""], {"x": 1})])
    assert codes(out) == [(0, "merge.path.empty_segment")]
    assert out.errors[0].message == "Path contains an empty segment"


@pytest.mark.parametrize("sink", ["__proto__", "constructor", "prototype"])
def test_uo_1203_rejects_proto_polluted_path_segment(sink: str) -> None:
    out = update({}, [mrg([sink], {"x": 1})])
    assert codes(out) == [(0, "merge.path.proto_polluted")]
    assert out.errors[0].message == f"Path segment '{sink}' is not allowed (prototype pollution)."


@pytest.mark.parametrize("sink", ["__proto__", "constructor", "prototype"])
@pytest.mark.parametrize(
    ("name", "op"),
    [
        ("set", lambda p: s(p, True)),
        ("append", lambda p: app(p, "chunk")),
        ("increment", lambda p: inc(p, 1)),
        ("decrement", lambda p: dec(p, 1)),
        ("remove", rem),
    ],
)
def test_uo_1214_rejects_all_proto_pollution_sinks_for_each_non_merge_op(
    sink: str, name: str, op: Any
) -> None:
    out = update({}, [op(sink)])
    assert codes(out) == [(0, f"{name}.path.proto_polluted")]
    assert same(out.value, {})


def test_uo_1262_validates_set_path_segments_with_op_specific_error_code() -> None:
    assert codes(update({}, [s("__proto__", True)])) == [(0, "set.path.proto_polluted")]


def test_uo_1276_validates_append_path_segments_with_op_specific_error_code() -> None:
    assert codes(update({}, [app("a" * 257, "x")])) == [(0, "append.path.segment_too_long")]


def test_uo_1286_rejects_proto_polluted_value_top_level_key() -> None:
    out = update({}, [mrg("foo", {"__proto__": {"polluted": True}})])
    assert codes(out) == [(0, "merge.value.proto_polluted")]
    assert out.errors[0].message == 'Merge value top-level key "__proto__" is a prototype-pollution sink'


def test_uo_1300_rejects_value_too_deep() -> None:
    v: Any = {}
    for _ in range(17):
        v = {"n": v}
    out = update({}, [mrg("foo", v)])
    assert codes(out) == [(0, "merge.value.too_deep")]
    assert out.errors[0].message == "Merge value JSON nesting depth 18 exceeds maximum of 16"


def test_uo_1315_append_segments_path_walks_and_pushes_to_existing_array() -> None:
    out = run({"entityId": {"buffer": ["a"]}}, [app(["entityId", "buffer"], "b")])
    assert same(out, {"entityId": {"buffer": ["a", "b"]}})


def test_uo_1327_append_segments_path_creates_intermediate_object() -> None:
    assert same(run({}, [app(["entityId", "buffer"], "a")]), {"entityId": {"buffer": ["a"]}})


def test_uo_1338_append_segments_missing_leaf_string_value_becomes_array() -> None:
    assert same(run({"entityId": {}}, [app(["entityId", "buffer"], "x")]), {"entityId": {"buffer": ["x"]}})
    assert same(run({}, [app("buffer", "x")]), {"buffer": "x"})


def test_uo_1356_append_dotted_string_path_keeps_literal_segment_semantics() -> None:
    out = run({"entityId": {"buffer": ["nested"]}}, [app("entityId.buffer", "flat")])
    assert same(out, {"entityId": {"buffer": ["nested"]}, "entityId.buffer": "flat"})


def test_uo_1377_append_segments_path_object_leaf_returns_type_mismatch() -> None:
    old = {"entityId": {"buffer": {"x": "y"}}}
    out = update(old, [app(["entityId", "buffer"], "z")])
    assert codes(out) == [(0, "append.type_mismatch")]
    assert same(out.value, {"entityId": {"buffer": {"x": "y"}}})


def test_uo_1394_append_segments_path_non_object_root_returns_target_not_object() -> None:
    out = update([1, 2, 3], [app(["a", "b"], "x")])
    assert codes(out) == [(0, "append.target_not_object")]
    assert out.errors[0].message == "Cannot append at path '[a, b]': target is array, expected object."
    assert same(out.value, [1, 2, 3])


def test_uo_1412_append_proto_polluted_at_root_segment_rejected() -> None:
    out = update({}, [app(["__proto__"], "x")])
    assert codes(out) == [(0, "append.path.proto_polluted")]
    assert same(out.value, {})


def test_uo_1424_append_proto_polluted_at_intermediate_segment_rejected() -> None:
    out = update({}, [app(["a", "constructor", "b"], "x")])
    assert codes(out) == [(0, "append.path.proto_polluted")]
    assert same(out.value, {})


def test_uo_1441_append_proto_polluted_at_leaf_segment_rejected() -> None:
    out = update({"safe": {}}, [app(["safe", "prototype"], "x")])
    assert codes(out) == [(0, "append.path.proto_polluted")]
    assert same(out.value, {"safe": {}})


def test_uo_1455_multi_op_partial_failure_retains_prior_successes() -> None:
    out = update(
        {"buffer": []},
        [app("buffer", "first"), app(["__proto__", "polluted"], True), app("buffer", "third")],
    )
    assert codes(out) == [(1, "append.path.proto_polluted")]
    assert same(out.value, {"buffer": ["first", "third"]})


# ------------------------------------------------------------------ state_stream_update_e2e.rs


def test_e2e_38_merge_first_level_path_accumulates_siblings_across_calls() -> None:
    store = Store()
    assert store.update("session-abc", [mrg("session-1", {"ts:0001": "first chunk"})]).errors == ()
    r2 = store.update("session-abc", [mrg("session-1", {"ts:0002": "second chunk"})])
    assert r2.errors == ()
    assert same(r2.value, {"session-1": {"ts:0001": "first chunk", "ts:0002": "second chunk"}})


def test_e2e_80_merge_replaces_null_intermediate_along_nested_path() -> None:
    store = Store()
    store.update("key", [s("sessions", None)])
    result = store.update("key", [mrg(["sessions", "abc"], {"author": "alice"})])
    assert result.errors == ()
    assert same(result.value, {"sessions": {"abc": {"author": "alice"}}})


def test_e2e_123_merge_then_remove_then_merge_recreates_field_cleanly() -> None:
    r = Store().update("key", [mrg("session-1", {"a": 1}), rem("session-1"), mrg("session-1", {"b": 2})])
    assert r.errors == ()
    assert same(r.value, {"session-1": {"b": 2}})


def test_e2e_146_merge_with_proto_polluted_segment_returns_structured_error() -> None:
    r = Store().update("key", [mrg(["__proto__", "polluted"], {"x": 1})])
    assert codes(r) == [(0, "merge.path.proto_polluted")]
    assert r.errors[0].doc_url == DOC_URL
    assert same(r.value, {})


@pytest.mark.parametrize(
    ("name", "op"),
    [
        ("set", s("__proto__", 1)),
        ("append", app("__proto__", 1)),
        ("increment", inc("__proto__", 1)),
        ("decrement", dec("__proto__", 1)),
        ("remove", rem("__proto__")),
    ],
)
def test_e2e_170_non_merge_ops_with_proto_polluted_path_return_structured_errors(
    name: str, op: dict[str, Any]
) -> None:
    result = Store().update(f"proto-{name}", [op])
    assert_structured_error(result.errors, 0, f"{name}.path.proto_polluted", "__proto__")
    assert same(result.value, {})


def test_e2e_201_set_on_non_object_target_returns_structured_error_and_skips() -> None:
    store = Store()
    store.update("set-target", [s("", "leaf")])
    result = store.update("set-target", [s("field", 1)])
    assert_structured_error(result.errors, 0, "set.target_not_object", "field")
    assert result.errors[0].message == "Cannot set at path 'field': target is string, expected object."
    assert result.value == "leaf"


def test_e2e_222_append_type_mismatch_returns_structured_error_and_skips() -> None:
    store = Store()
    store.update("append-type", [s("count", 1)])
    result = store.update("append-type", [app("count", "chunk")])
    assert_structured_error(result.errors, 0, "append.type_mismatch", "count")
    assert result.errors[0].message == (
        "Cannot append at path 'count': target is number, expected array, string, null, or missing field."
    )
    assert same(result.value, {"count": 1})


def test_e2e_247_append_on_non_object_target_returns_structured_error_and_skips() -> None:
    store = Store()
    store.update("append-target", [s("", "leaf")])
    result = store.update("append-target", [app("events", "chunk")])
    assert_structured_error(result.errors, 0, "append.target_not_object", "events")
    assert result.errors[0].message == "Cannot append at path '[events]': target is string, expected object."
    assert result.value == "leaf"


def test_e2e_272_failed_update_ops_continue_and_report_original_indexes() -> None:
    store = Store()
    store.update("partial-errors", [s("", {"bad": "value", "events": {}})])
    result = store.update(
        "partial-errors",
        [inc("bad", 1), s("__proto__", True), app("events", "chunk"), s("ok", True)],
    )
    assert same(result.value, {"bad": "value", "events": {}, "ok": True})
    assert codes(result) == [
        (0, "increment.not_number"),
        (1, "set.path.proto_polluted"),
        (2, "append.type_mismatch"),
    ]


def test_e2e_311_increment_non_number_returns_structured_error_and_skips() -> None:
    store = Store()
    store.update("increment-number", [s("name", "Ada")])
    result = store.update("increment-number", [inc("name", 1)])
    assert_structured_error(result.errors, 0, "increment.not_number", "name")
    assert result.errors[0].message == "Expected number at path 'name', got string."
    assert same(result.value, {"name": "Ada"})


def test_e2e_332_decrement_non_number_returns_structured_error_and_skips() -> None:
    store = Store()
    store.update("decrement-number", [s("name", "Ada")])
    result = store.update("decrement-number", [dec("name", 1)])
    assert_structured_error(result.errors, 0, "decrement.not_number", "name")
    assert same(result.value, {"name": "Ada"})


@pytest.mark.parametrize(
    ("name", "op"), [("increment", inc("count", 1)), ("decrement", dec("count", 1)), ("remove", rem("count"))]
)
def test_e2e_353_numeric_ops_and_remove_on_non_object_target_return_structured_errors(
    name: str, op: dict[str, Any]
) -> None:
    store = Store()
    store.update(f"{name}-target", [s("", "leaf")])
    result = store.update(f"{name}-target", [op])
    assert_structured_error(result.errors, 0, f"{name}.target_not_object", "count")
    assert result.errors[0].message == f"Cannot {name} at path 'count': target is string, expected object."
    assert result.value == "leaf"


def test_e2e_390_remove_missing_path_remains_idempotent_and_silent() -> None:
    result = Store().update("remove-missing", [rem("missing")])
    assert result.errors == ()
    assert same(result.value, {})


def test_e2e_411_issue_1552_case1_dotted_string_keeps_literal_segment() -> None:
    store = Store()
    store.update("case1", [s("entityId", {"buffer": ["nested"]})])
    result = store.update("case1", [app("entityId.buffer", "flat")])
    assert result.errors == ()
    assert same(result.value, {"entityId": {"buffer": ["nested"]}, "entityId.buffer": "flat"})


def test_e2e_448_issue_1552_case2_object_value_returns_type_mismatch() -> None:
    store = Store()
    store.update("case2", [s("entityId", {"buffer": {"x": "y"}})])
    result = store.update("case2", [app(["entityId", "buffer"], "z")])
    assert_structured_error(result.errors, 0, "append.type_mismatch", "buffer")
    assert same(result.value, {"entityId": {"buffer": {"x": "y"}}})


def test_e2e_480_issue_1552_case3_array_path_appends_to_nested_array() -> None:
    store = Store()
    store.update("case3", [s("entityId", {"buffer": ["a"]})])
    result = store.update("case3", [app(["entityId", "buffer"], "b")])
    assert result.errors == ()
    assert same(result.value, {"entityId": {"buffer": ["a", "b"]}})


def test_e2e_511_nested_append_creates_intermediate_objects_through_kv_store() -> None:
    result = Store().update("nested-create", [app(["session", "abc", "events"], "first")])
    assert result.errors == ()
    assert same(result.value, {"session": {"abc": {"events": ["first"]}}})


def test_e2e_537_nested_append_proto_pollution_rejected_at_intermediate_segment() -> None:
    result = Store().update("proto-mid", [app(["safe", "__proto__", "x"], "never")])
    assert_structured_error(result.errors, 0, "append.path.proto_polluted", "__proto__")
    assert same(result.value, {})


def test_e2e_561_nested_append_multi_op_partial_failure_retains_prior_successes() -> None:
    result = Store().update(
        "multi-op",
        [
            app(["session", "abc", "events"], "first"),
            app(["__proto__", "polluted"], True),
            app(["session", "abc", "events"], "third"),
        ],
    )
    assert codes(result) == [(1, "append.path.proto_polluted")]
    assert same(result.value, {"session": {"abc": {"events": ["first", "third"]}}})


def test_e2e_591_nested_append_segments_path_round_trips_via_merge_path_segments() -> None:
    [op] = parse_ops([app(["a", "b"], 42)])
    assert op.to_json() == {"type": "append", "path": ["a", "b"], "value": 42}
    assert parse_ops([op.to_json()]) == [op]
    result = Store().update("round-trip", [op.to_json()])
    assert result.errors == ()
    assert same(result.value, {"a": {"b": [42]}})


def test_e2e_617_append_existing_empty_array_at_single_segment_pushes_value() -> None:
    store = Store()
    store.update("empty-leaf", [s("buffer", [])])
    result = store.update("empty-leaf", [app("buffer", "x")])
    assert result.errors == ()
    assert same(result.value, {"buffer": ["x"]})


def test_e2e_645_append_root_when_state_is_empty_array_pushes_value() -> None:
    store = Store()
    store.update("empty-root-array", [s("", [])])
    result = store.update("empty-root-array", [{"type": "append", "value": "x"}])
    assert result.errors == ()
    assert same(result.value, ["x"])


def test_e2e_675_nested_append_replaces_array_intermediate_with_object() -> None:
    store = Store()
    store.update("array-intermediate", [s("a", [1, 2, 3])])
    result = store.update("array-intermediate", [app(["a", "b"], 42)])
    assert result.errors == ()
    assert same(result.value, {"a": {"b": [42]}})
    assert not same(result.value, {"a": {"1": 1, "2": 2, "3": 3, "b": [42]}})
