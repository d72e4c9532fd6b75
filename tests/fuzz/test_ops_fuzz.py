"""Property tests for the update ops: total, pure, and form-independent.

* ``apply_ops`` never raises for well-formed ops on any JSON value, never mutates its input
  or the op values, and a batch gives the same result as applying its ops one call at a
  time (which exercises the copy-on-write reuse of containers inside a batch).
* ``parse_ops`` on arbitrary JSON either returns ops that round-trip through ``to_json`` or
  raises ``InputError``; nothing else escapes.
* The seed documents' form and the typed form give identical outcomes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InputError
from gateway.jsonutil import dumps
from gateway.state.ops import (
    OpsOutcome,
    UpdateOp,
    apply_ops,
    parse_op,
    parse_ops,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
KINDS = ["set", "merge", "increment", "decrement", "append", "remove"]

KEYS = st.sampled_from(["a", "b", "c", "", "a.b", "é", "__proto__", "constructor", "prototype"])
INTS = st.integers(min_value=-(2**66), max_value=2**66) | st.sampled_from(
    [0, 1, -1, I64_MIN, I64_MAX, U64_MAX, 2**63, I64_MIN - 1, U64_MAX + 1, 10**400]
)
SCALARS = (
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=10,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=3)
FIELD_PATHS = KEYS | st.just("x" * 257)
SEGMENTS = st.lists(KEYS, max_size=4).map(tuple) | st.just(("k",) * 33)
BY = st.integers(min_value=I64_MIN, max_value=I64_MAX) | st.sampled_from([0, 1, -1, I64_MIN, I64_MAX])

OPS = st.one_of(
    st.builds(lambda p, v: UpdateOp("set", p, v), FIELD_PATHS, JSON),
    st.builds(lambda p, v: UpdateOp("merge", p, v), SEGMENTS, OBJECTS | JSON),
    st.builds(lambda p, b: UpdateOp("increment", p, by=b), FIELD_PATHS, BY),
    st.builds(lambda p, b: UpdateOp("decrement", p, by=b), FIELD_PATHS, BY),
    st.builds(lambda p, v: UpdateOp("append", p, v), SEGMENTS, JSON),
    st.builds(lambda p: UpdateOp("remove", p), FIELD_PATHS),
)


def frozen(value: Any) -> str:
    """A strict snapshot: tells 1 from 1.0 and true, and sees nested changes."""
    return dumps(value)


def outcome_key(outcome: OpsOutcome) -> tuple[str, list[tuple[int, str, str]]]:
    return frozen(outcome.value), [(e.op_index, e.code, e.message) for e in outcome.errors]


@settings(max_examples=300, deadline=None)
@given(current=JSON, existed=st.booleans(), ops=st.lists(OPS, max_size=8))
def test_apply_is_total_and_pure(current: Any, existed: bool, ops: list[UpdateOp]) -> None:
    before = frozen(current)
    op_values = frozen([op.to_json() for op in ops])
    outcome = apply_ops(current, existed, ops)
    assert frozen(current) == before
    assert frozen([op.to_json() for op in ops]) == op_values
    frozen(outcome.value)  # the result is plain JSON
    indexes = [e.op_index for e in outcome.errors]
    assert indexes == sorted(set(indexes))
    assert all(0 <= i < len(ops) for i in indexes)
    assert all(e.code.startswith(ops[e.op_index].kind + ".") for e in outcome.errors)
    assert outcome_key(apply_ops(current, existed, ops)) == outcome_key(outcome)


@settings(max_examples=200, deadline=None)
@given(current=JSON, ops=st.lists(OPS, min_size=1, max_size=8))
def test_a_batch_equals_one_call_per_op(current: Any, ops: list[UpdateOp]) -> None:
    batch = apply_ops(current, True, ops)
    value = current
    errors = []
    for index, op in enumerate(ops):
        step = apply_ops(value, True, [op])
        errors += [(index, e.code, e.message) for e in step.errors]
        value = step.value
    assert frozen(batch.value) == frozen(value)
    assert [(e.op_index, e.code, e.message) for e in batch.errors] == errors


@settings(max_examples=100, deadline=None)
@given(op=OPS)
def test_to_json_round_trips(op: UpdateOp) -> None:
    assert parse_op(op.to_json()) == op


OP_FIELDS = st.sampled_from(["type", "path", "value", "by", "field", *KINDS])
OPISH = st.fixed_dictionaries(
    {"type": st.sampled_from(KINDS) | JSON},
    optional={"path": st.lists(KEYS, max_size=3) | JSON, "value": JSON, "by": BY | JSON},
) | st.dictionaries(
    OP_FIELDS, JSON | st.dictionaries(st.sampled_from(["field", "by"]), BY | JSON), max_size=3
)


@settings(max_examples=250, deadline=None)
@given(raw=st.lists(OPISH, max_size=5) | JSON)
def test_parse_raises_only_input_error(raw: Any) -> None:
    try:
        ops = parse_ops(raw)
    except InputError as exc:
        assert exc.code == "deserialization_error"
        assert exc.message
        return
    assert isinstance(raw, list)
    assert len(ops) == len(raw)
    assert parse_ops([op.to_json() for op in ops]) == ops


def _pair(kind: str, field: str, value: Any, by: int) -> tuple[dict[str, Any], dict[str, Any]]:
    if kind == "set":
        return {"set": value}, {"type": "set", "path": "", "value": value}
    if kind in ("merge", "append"):
        return {kind: value}, {"type": kind, "value": value}
    if kind == "remove":
        return {"remove": field}, {"type": "remove", "path": field}
    return {kind: {"field": field, "by": by}}, {"type": kind, "path": field, "by": by}


PAIRS = st.builds(_pair, st.sampled_from(KINDS), FIELD_PATHS, OBJECTS | JSON, BY)


@settings(max_examples=150, deadline=None)
@given(current=JSON, existed=st.booleans(), pairs=st.lists(PAIRS, max_size=5))
def test_seed_form_and_typed_form_agree(
    current: Any, existed: bool, pairs: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    legacy = parse_ops([p[0] for p in pairs])
    typed = parse_ops([p[1] for p in pairs])
    assert legacy == typed
    assert outcome_key(apply_ops(current, existed, legacy)) == outcome_key(apply_ops(current, existed, typed))
