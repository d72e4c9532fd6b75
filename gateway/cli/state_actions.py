"""The actions of ``iii-gateway state`` (see :mod:`gateway.cli.state` for what each prints).

Kept apart from the parser so that ``iii-gateway --help`` and the other commands do not load
the link stack; :func:`gateway.cli.state.run` imports this module when an action runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cli.remote import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Target,
    fail,
    parse_json_text,
    print_json,
    read_text_argument,
    request,
)
from gateway.cli.state_watch import watch
from gateway.errors import InputError
from gateway.jsonutil import dumps
from gateway.link.client import LinkClient
from gateway.link.requests import (
    DeleteArgs,
    GetArgs,
    InfoArgs,
    ItemsArgs,
    ListGroupsArgs,
    SetArgs,
    UpdateArgs,
)

__all__ = ["ACTIONS", "PREPARE"]

Action = Callable[[argparse.Namespace, LinkClient, Target], Awaitable[int]]
Prepare = Callable[[argparse.Namespace], None]  # checks and parses input before connecting


# -- actions ----------------------------------------------------------------------------------


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


async def _get(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    found = await request(client, GetArgs(args.scope, args.key), target.timeout)
    if found is None:
        print(f"not found: key {args.key!r} in scope {args.scope!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print_json(
            {"scope": args.scope, "key": args.key, "value": found["value"], "revision": found["revision"]}
        )
    else:
        print(_pretty(found["value"]))
    return EXIT_OK


def _prepare_set(args: argparse.Namespace) -> None:
    text = read_text_argument(args.value, args.value_file, "value", "--value-file")
    args.parsed_value = parse_json_text(text, "VALUE")


async def _set(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    result = await request(client, SetArgs(args.scope, args.key, args.parsed_value), target.timeout)
    if args.json:
        print_json({"scope": args.scope, "key": args.key, **_write_fields(result)})
    else:
        verb = "updated" if result.get("existed") else "created"
        print(f"{verb} {args.scope} {args.key} at revision {result.get('revision')}")
    return EXIT_OK


async def _delete(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    result = await request(client, DeleteArgs(args.scope, args.key), target.timeout)
    if args.json:
        fields = _write_fields(result)
        fields.pop("new_value", None)
        print_json({"scope": args.scope, "key": args.key, **fields})
    elif result.get("existed"):
        print(f"deleted {args.scope} {args.key} at revision {result.get('revision')}")
    else:
        print(f"nothing to delete: key {args.key!r} was not in scope {args.scope!r}")
    return EXIT_OK


def _prepare_update(args: argparse.Namespace) -> None:
    text = read_text_argument(args.ops, args.ops_file, "ops", "--ops-file")
    ops = parse_json_text(text, "OPS")
    if isinstance(ops, dict):
        ops = [ops]
    from gateway.state.ops import parse_ops  # the gateway's own parser: same rules, both forms

    try:
        parse_ops(ops)
    except InputError as exc:
        fail(EXIT_USAGE, f"OPS: {exc.message}")
    args.parsed_ops = tuple(ops)


async def _update(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    result = await request(client, UpdateArgs(args.scope, args.key, args.parsed_ops), target.timeout)
    errors = result.get("errors") or []
    if args.json:
        print_json({"scope": args.scope, "key": args.key, **_write_fields(result), "errors": errors})
    else:
        print(_pretty(result.get("new_value")))
    for err in errors:
        print(
            f"error: {err.get('code')}: ops[{err.get('op_index')}]: {err.get('message')}",
            file=sys.stderr,
        )
    return EXIT_FAILURE if errors else EXIT_OK


async def _list(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    items = sorted(await request(client, ItemsArgs(args.scope), target.timeout), key=lambda i: i[0])
    if args.keys:
        _print_names(args, [key for key, _, _ in items])
    elif args.json:
        print_json([{"key": key, "value": value, "revision": rev} for key, value, rev in items])
    else:
        sys.stdout.write("".join(f"{key}\t{dumps(value)}\n" for key, value, _ in items))
    return EXIT_OK


async def _groups(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    scopes = sorted(await request(client, ListGroupsArgs(), target.timeout))
    _print_names(args, scopes)
    return EXIT_OK


async def _info(args: argparse.Namespace, client: LinkClient, target: Target) -> int:
    info = await request(client, InfoArgs(), target.timeout)
    engine = client.peer.peer_id if client.peer is not None else None
    doc = {"gateway": target.label, "engine": engine, "epoch": info["epoch"], "revision": info["revision"]}
    if args.json:
        print_json(doc)
    else:
        for name, value in doc.items():
            print(f"{name}: {value}")
    return EXIT_OK


def _print_names(args: argparse.Namespace, names: list[str]) -> None:
    if args.json:
        print_json(names)
    else:
        sys.stdout.write("".join(f"{name}\n" for name in names))


def _write_fields(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "existed": result.get("existed"),
        "old_value": result.get("old_value"),
        "new_value": result.get("new_value"),
        "revision": result.get("revision"),
    }


ACTIONS: dict[str, Action] = {
    "get": _get,
    "set": _set,
    "delete": _delete,
    "update": _update,
    "list": _list,
    "groups": _groups,
    "info": _info,
    "watch": watch,
}
PREPARE: dict[str, Prepare] = {"set": _prepare_set, "update": _prepare_update}
