"""``state::update`` operations: parse them, apply them. Pure; shared by every adapter.

This is the import surface; the code lives in :mod:`~gateway.state.ops_model` (the types),
:mod:`~gateway.state.ops_parse` (wire decoding) and :mod:`~gateway.state.ops_apply` (the
semantics). ``parse_ops`` runs once at the edge; adapters call ``apply_ops`` inside their own
atomic step and never re-parse.

Wire forms
----------
The reference engine's internally tagged form is canonical (and what ``UpdateOp.to_json``
writes, e.g. for forwarding over the link)::

    {"type": "set",       "path": str,                   "value"?: any}
    {"type": "merge",     "path"?: str | [str] | null,   "value": any}
    {"type": "increment", "path": str,                   "by": i64}
    {"type": "decrement", "path": str,                   "by": i64}
    {"type": "append",    "path"?: str | [str] | null,   "value": any}
    {"type": "remove",    "path": str}

The seed documents describe an older single-key form that the reference engine itself
rejects (``missing field `type```). We accept it as an extension when an op object has no
``type`` key and exactly one of the six op names as a key. It maps to the typed form like
this, so both forms give identical results:

======================================================  ====================================================
seed form                                               typed equivalent
======================================================  ====================================================
``{"set": v}``                                          ``{"type":"set","path":"","value":v}`` (replace all)
``{"merge": v}``                                        ``{"type":"merge","value":v}`` (shallow root merge)
``{"increment": {"field": f, "by": n}}``                ``{"type":"increment","path":f,"by":n}``
``{"decrement": {"field": f, "by": n}}``                ``{"type":"decrement","path":f,"by":n}``
``{"remove": f}``                                       ``{"type":"remove","path":f}``
``{"append": v}``                                       ``{"type":"append","value":v}`` (root append)
======================================================  ====================================================

The seed documents give no shape for ``append``; it takes its value directly and targets the
root, like ``set`` and ``merge``. A value-shaped payload is never read as a path:
``{"set": {"path": "a", "value": 1}}`` replaces the whole value with that object. ``field``
and ``by`` are required and ``by`` must be an i64 integer, as in the typed form. Extra keys
next to the op name are ignored, like unknown fields of the typed form.

Divergences from serde, all documented here because no client depends on them: the
positional array form of an op (``["set", "a", 1]``, which serde would accept for an
internally tagged enum) is rejected, as are integer variant indices as ``type``; error
messages end with ``at ops[i]``.

Semantics
---------
Exactly the reference's Rust path (not its Redis Lua script): see ``apply_ops`` and section 2
of the reference notes. Per-op failures become :class:`OpError` values with the reference
codes and messages; the batch is never all-or-nothing.
"""

from __future__ import annotations

from gateway.state.ops_apply import apply_ops
from gateway.state.ops_model import (
    DOC_URL,
    MAX_PATH_DEPTH,
    MAX_SEGMENT_BYTES,
    MAX_VALUE_DEPTH,
    MAX_VALUE_KEYS,
    PROTO_KEYS,
    OpError,
    OpKind,
    OpsOutcome,
    UpdateOp,
    append_op,
    decrement_op,
    increment_op,
    json_type_name,
    merge_op,
    remove_op,
    set_op,
    value_depth,
)
from gateway.state.ops_parse import parse_op, parse_ops

__all__ = [
    "DOC_URL",
    "MAX_PATH_DEPTH",
    "MAX_SEGMENT_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_KEYS",
    "PROTO_KEYS",
    "OpError",
    "OpKind",
    "OpsOutcome",
    "UpdateOp",
    "append_op",
    "apply_ops",
    "decrement_op",
    "increment_op",
    "json_type_name",
    "merge_op",
    "parse_op",
    "parse_ops",
    "remove_op",
    "set_op",
    "value_depth",
]
