"""Request-id bookkeeping of the link, one table per role (pure, used by LinkConnection).

The link multiplexes many requests and watch streams over one connection by id. Both ends
keep a table so that every answer and every stream frame can be checked against what is
actually outstanding, which is what turns a confused or hostile peer into a clean protocol
error instead of a future resolved twice or an event delivered to nobody:

- :class:`ClientRequests`: ids we allocated and sent, until their one answer. A watch is a
  request whose answer ends its stream. Cancelled ids stay until that answer, so their late
  answer and late events are recognised and swallowed rather than treated as unknown.
- :class:`ServerRequests`: ids the peer sent, until we answered. It also admits requests:
  parse the args, enforce the open-request bound and the peer's scope permissions.
"""

from __future__ import annotations

from typing import Final

from gateway.errors import GatewayError, InputError, LocalProtocolError, RemoteProtocolError
from gateway.link.acl import Permissions
from gateway.link.messages import Request
from gateway.link.requests import RequestArgs, WatchArgs, parse_args

__all__ = [
    "DUPLICATE_REQUEST_ID",
    "TOO_MANY_REQUESTS",
    "UNKNOWN_REQUEST_ID",
    "UNKNOWN_SUBSCRIPTION",
    "ClientRequests",
    "ServerRequests",
]

# Protocol error codes (the connection fails with these).
UNKNOWN_REQUEST_ID: Final = "UNKNOWN_REQUEST_ID"
UNKNOWN_SUBSCRIPTION: Final = "UNKNOWN_SUBSCRIPTION"
DUPLICATE_REQUEST_ID: Final = "DUPLICATE_REQUEST_ID"
# Request error code (the request is refused, the link stays up).
TOO_MANY_REQUESTS: Final = "TOO_MANY_REQUESTS"

_WATCH: Final = WatchArgs.OP


class ClientRequests:
    """Our outstanding requests: id -> op, and which of them we cancelled."""

    def __init__(self) -> None:
        self.next_id = 1
        self._pending: dict[int, str] = {}
        self._cancelled: set[int] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def ids(self) -> list[int]:
        return list(self._pending)

    def add(self, op: str) -> int:
        """Record a request as sent; returns its id (ids start at 1 and only grow)."""
        rid = self.next_id
        self.next_id = rid + 1
        self._pending[rid] = op
        return rid

    def answered(self, rid: int) -> str | None:
        """Take ``rid`` out on its answer: its op, or None when it was cancelled (swallow it)."""
        op = self._pending.pop(rid, None)
        if op is None:
            raise RemoteProtocolError(f"answer to unknown request id {rid}", code=UNKNOWN_REQUEST_ID)
        if rid in self._cancelled:
            self._cancelled.discard(rid)
            return None
        return op

    def watch_live(self, sub_id: int) -> bool:
        """Whether a stream frame of ``sub_id`` should surface (False: cancelled, swallow)."""
        if self._pending.get(sub_id) != _WATCH:
            raise RemoteProtocolError(f"watch frame for unknown watch id {sub_id}", code=UNKNOWN_SUBSCRIPTION)
        return sub_id not in self._cancelled

    def can_cancel(self, rid: int) -> bool:
        return rid in self._pending and rid not in self._cancelled

    def cancel(self, rid: int) -> None:
        self._cancelled.add(rid)


class ServerRequests:
    """The peer's requests we have not answered yet: id -> op."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._open: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, rid: object) -> bool:
        return rid in self._open

    def ids(self) -> list[int]:
        return list(self._open)

    def admit(self, msg: Request, permissions: Permissions) -> RequestArgs | GatewayError:
        """The typed args of an acceptable request (now open), or why it is refused.

        A reused open id is a protocol error (raised): answers could not be told apart.
        """
        if msg.id in self._open:
            raise RemoteProtocolError(f"request id {msg.id} is already open", code=DUPLICATE_REQUEST_ID)
        try:
            args = parse_args(msg.op, msg.args)
        except InputError as exc:
            return exc
        if len(self._open) >= self.max_open:
            return GatewayError(f"more than {self.max_open} open requests", code=TOO_MANY_REQUESTS)
        denied = permissions.check(args)
        if denied is not None:
            return denied
        self._open[msg.id] = args.OP
        return args

    def check_open(self, rid: int, what: str) -> None:
        if rid not in self._open:
            raise LocalProtocolError(f"cannot {what}: request {rid} is not open")

    def finish(self, rid: int) -> None:
        del self._open[rid]

    def check_watch(self, sub_id: int) -> None:
        if self._open.get(sub_id) != _WATCH:
            raise LocalProtocolError(f"{sub_id} is not an open watch")
