"""The request-id tables on their own: what each role lets through and what it refuses."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError, LocalProtocolError, RemoteProtocolError
from gateway.link.acl import Permissions
from gateway.link.messages import Request
from gateway.link.requests import GetArgs, WatchArgs
from gateway.link.tables import ClientRequests, ServerRequests


def test_client_ids_grow_and_each_answer_is_taken_once() -> None:
    table = ClientRequests()
    assert [table.add("get"), table.add("watch")] == [1, 2]
    assert table.answered(1) == "get"
    with pytest.raises(RemoteProtocolError) as info:
        table.answered(1)
    assert info.value.code == "UNKNOWN_REQUEST_ID"
    assert table.ids() == [2] and len(table) == 1


def test_client_stream_frames_need_a_live_watch() -> None:
    table = ClientRequests()
    get, watch = table.add("get"), table.add("watch")
    assert table.watch_live(watch)
    for bad in (get, 99):
        with pytest.raises(RemoteProtocolError) as info:
            table.watch_live(bad)
        assert info.value.code == "UNKNOWN_SUBSCRIPTION"


def test_client_cancelled_ids_are_swallowed_until_answered() -> None:
    table = ClientRequests()
    watch = table.add("watch")
    assert table.can_cancel(watch)
    table.cancel(watch)
    assert not table.can_cancel(watch)
    assert table.watch_live(watch) is False
    assert table.answered(watch) is None
    assert not table.can_cancel(watch)
    assert len(table) == 0


def test_server_admits_typed_authorized_requests_once() -> None:
    table = ServerRequests(max_open=2)
    perms = Permissions(read=("a*",), watch=("a*",))
    assert table.admit(Request(1, "get", {"scope": "ab", "key": "k"}), perms) == GetArgs("ab", "k")
    with pytest.raises(RemoteProtocolError) as info:
        table.admit(Request(1, "get", {"scope": "ab", "key": "k"}), perms)
    assert info.value.code == "DUPLICATE_REQUEST_ID"
    refused = table.admit(Request(2, "get", {"scope": "b", "key": "k"}), perms)
    assert isinstance(refused, GatewayError) and refused.code == "FORBIDDEN"
    bad = table.admit(Request(3, "get", {}), perms)
    assert isinstance(bad, GatewayError) and bad.code == "deserialization_error"
    assert table.admit(Request(4, "watch", {"patterns": ["a1"]}), perms) == WatchArgs(("a1",))
    full = table.admit(Request(5, "get", {"scope": "ab", "key": "k"}), perms)
    assert isinstance(full, GatewayError) and full.code == "TOO_MANY_REQUESTS"
    assert table.ids() == [1, 4] and 4 in table and 2 not in table


def test_server_answers_only_open_ids_and_streams_only_on_watches() -> None:
    table = ServerRequests(max_open=10)
    perms = Permissions.allow_all()
    table.admit(Request(1, "get", {"scope": "s", "key": "k"}), perms)
    table.admit(Request(2, "watch", {"patterns": ["*"]}), perms)
    table.check_watch(2)
    with pytest.raises(LocalProtocolError):
        table.check_watch(1)
    table.check_open(1, "answer")
    table.finish(1)
    with pytest.raises(LocalProtocolError, match="cannot answer: request 1 is not open"):
        table.check_open(1, "answer")
