"""``iii-gateway state ACTION``: read and write a running gateway's state over its link.

Actions: ``get``, ``set``, ``delete``, ``update``, ``list``, ``groups``, ``info`` and ``watch``
(see :mod:`gateway.cli.state_watch`). Each one opens one authenticated link (see
:mod:`gateway.cli.remote` for the connection flags and exit codes), makes its request and
prints the answer: for people by default, one compact JSON document per result with ``--json``.

Input is checked before anything is sent, so a typo never reaches the gateway: values and ops
are strict JSON (no NaN, integers within 64 bits, as the link carries them), update ops are
parsed by the same code the gateway uses (both op forms: ``{"type": "increment", "path": "n",
"by": 1}`` and ``{"increment": {"field": "n", "by": 1}}``); a bad one exits 2.

**Missing is not null.** ``get`` of a key that does not exist prints nothing on stdout and a
``not found`` line on stderr and exits 4; a key that holds JSON ``null`` prints ``null`` (or
``{"value": null, ...}`` with ``--json``) and exits 0. ``delete`` of a missing key is not an
error (deleting is idempotent): it exits 0 and says nothing was there.

**Update op errors.** The gateway applies the ops it can and reports the others (the
reference engine's semantics); the result is printed and each op error is an ``error:`` line
on stderr, with exit 1, since part of what was asked did not happen.

What each prints (people / ``--json``):

- ``get``: the value, indented / ``{"scope", "key", "value", "revision"}``;
- ``set``: ``created|updated SCOPE KEY at revision N`` / ``{"scope", "key", "existed",
  "old_value", "new_value", "revision"}``; ``delete`` the same without ``new_value``;
- ``update``: the new value / the ``set`` object plus ``"errors"`` (the op error objects);
- ``list``: ``KEY<TAB>VALUE`` lines sorted by key / ``[{"key", "value", "revision"}]``
  (``--keys``: the keys only, a line each / a JSON array);
- ``groups``: a scope per line / a JSON array (only scopes this client may read);
- ``info``: the gateway address, engine id, store epoch and revision / the same object.

The action modules (:mod:`gateway.cli.state_actions`, :mod:`gateway.cli.state_watch`) are
imported by :func:`run` only, so parsing flags (and every other command) never loads the
link stack.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.remote import CliFailure, Target, add_link_arguments, open_link, report, resolve_target

if TYPE_CHECKING:
    from gateway.cli.state_actions import Action

__all__ = ["HELP", "configure", "run"]

HELP = "get, set, delete, update, list, groups, watch: a running gateway's state over its link"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="state_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text)

    _scope_key(action("get", "print the value of a key (exit 4 when the key does not exist)"))
    p = action("set", "store a JSON value")
    _scope_key(p)
    p.add_argument("value", nargs="?", metavar="VALUE", help="the value as JSON text (- reads stdin)")
    p.add_argument("--value-file", metavar="FILE", help="read the JSON value from FILE (- for stdin)")
    _scope_key(action("delete", "delete a key (exit 0 also when it did not exist)"))
    p = action("update", "apply update ops to a key (typed or seed form)")
    _scope_key(p)
    p.add_argument("ops", nargs="?", metavar="OPS", help="a JSON array of ops, or one op (- reads stdin)")
    p.add_argument("--ops-file", metavar="FILE", help="read the ops JSON from FILE (- for stdin)")
    p = action("list", "the keys of a scope with their values, sorted by key")
    p.add_argument("scope", metavar="SCOPE")
    p.add_argument("--keys", action="store_true", help="only the keys")
    action("groups", "the scopes holding keys that this client may read, sorted")
    action("info", "the gateway's engine id, store epoch and current revision")
    p = action("watch", "print changes to scopes matching the patterns until interrupted")
    p.add_argument("patterns", nargs="+", metavar="SCOPE_PATTERN", help="scope globs (* and ?)")
    p.add_argument(
        "--from-revision",
        type=int,
        metavar="N",
        help="first replay the changes after revision N (from the gateway's history), then go live",
    )
    p.add_argument(
        "--epoch",
        metavar="EPOCH",
        help="the store epoch N belongs to: HISTORY_GONE instead of replaying another store's revisions",
    )
    for p in sub.choices.values():
        add_link_arguments(p)
        p.add_argument("--json", action="store_true", help="machine output: one JSON document per result")


def _scope_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("scope", metavar="SCOPE")
    p.add_argument("key", metavar="KEY")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.cli.state_actions import ACTIONS, PREPARE  # the link stack, only to run

    try:
        target = resolve_target(args)
        prepare = PREPARE.get(args.state_action)
        if prepare is not None:
            prepare(args)
        return asyncio.run(_with_link(ACTIONS[args.state_action], args, target))
    except CliFailure as failure:
        return report(failure)


async def _with_link(fn: Action, args: argparse.Namespace, target: Target) -> int:
    client = await open_link(target)
    try:
        return int(await fn(args, client, target))
    finally:
        await client.aclose()
