"""The read cache's rules on their own: revisions decide, racing answers, complete scopes, LRU."""

from __future__ import annotations

from adapters.bridge.cache import ReadCache
from gateway.state.adapter import Entry


def test_an_answer_older_than_a_racing_event_is_neither_kept_nor_returned() -> None:
    cache = ReadCache(10)
    ticket = cache.begin_key("s", "k")
    cache.apply("s", "k", Entry("new", 5), 5)  # the event overtakes the answer
    assert cache.finish_get(ticket, Entry("old", 3)) == Entry("new", 5)
    assert cache.lookup("s", "k") == (True, Entry("new", 5))


def test_a_missing_answer_racing_with_a_create_returns_the_created_value() -> None:
    cache = ReadCache(10)
    ticket = cache.begin_key("s", "k")
    cache.apply("s", "k", Entry(1, 7), 7)
    assert cache.finish_get(ticket, None) == Entry(1, 7)


def test_a_racing_delete_wins_over_an_older_answer() -> None:
    cache = ReadCache(10)
    ticket = cache.begin_key("s", "k")
    cache.apply("s", "k", None, 9)
    assert cache.finish_get(ticket, Entry("v", 4)) is None
    assert cache.lookup("s", "k") == (True, None)


def test_a_racing_answer_whose_key_was_evicted_is_returned_but_not_kept() -> None:
    cache = ReadCache(1)
    ticket = cache.begin_key("s", "k")
    cache.apply("s", "k", Entry("new", 5), 5)
    cache.apply("s", "other", Entry(0, 6), 6)  # evicts k
    assert cache.finish_get(ticket, Entry("old", 3)) == Entry("old", 3)
    assert cache.lookup("s", "k") == (False, None)


def test_events_never_go_backwards() -> None:
    cache = ReadCache(10)
    cache.apply("s", "k", Entry("b", 8), 8)
    cache.apply("s", "k", Entry("a", 4), 4)
    assert cache.lookup("s", "k") == (True, Entry("b", 8))


def test_a_flush_drops_everything_and_fills_in_flight() -> None:
    cache = ReadCache(10)
    cache.apply("s", "k", Entry(1, 1), 1)
    ticket = cache.begin_key("s", "j")
    scope = cache.begin_scope("t")
    cache.flush("next")
    assert cache.finish_get(ticket, Entry(2, 2)) == Entry(2, 2)
    cache.finish_items(scope, [("x", Entry(3, 3))])
    assert len(cache) == 0 and cache.lookup_scope("t") is None


def test_a_scope_listing_merges_racing_events_and_stays_complete() -> None:
    cache = ReadCache(10)
    ticket = cache.begin_scope("s")
    cache.apply("s", "b", None, 10)  # deleted after the answer was made
    cache.apply("s", "c", Entry("c", 11), 11)  # created after it
    answer = [("a", Entry("a", 1)), ("b", Entry("b", 2))]
    assert cache.finish_items(ticket, answer) == [("a", Entry("a", 1)), ("c", Entry("c", 11))]
    cache.apply("s", "d", Entry("d", 12), 12)
    cache.apply("s", "a", None, 13)
    assert cache.lookup_scope("s") == [("c", Entry("c", 11)), ("d", Entry("d", 12))]
    assert cache.lookup("s", "zzz") == (True, None)  # absent from a complete scope


def test_evicting_a_key_of_a_complete_scope_makes_it_incomplete() -> None:
    cache = ReadCache(3)
    cache.finish_items(cache.begin_scope("s"), [("a", Entry(1, 1)), ("b", Entry(2, 2))])
    assert cache.lookup_scope("s") is not None
    cache.apply("t", "x", Entry(0, 3), 3)
    cache.apply("t", "y", Entry(0, 4), 4)
    assert cache.lookup_scope("s") is None and cache.evictions_total == 1
    assert cache.lookup("s", "a") == (False, None)
