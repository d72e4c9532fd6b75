"""Reconnect backoff: exponential growth, cap, jitter bounds, reset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.link.backoff import Backoff


def test_doubles_from_one_second_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(rng=lambda: 0.5)  # factor exactly 1
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.attempts == 8


def test_reset_starts_over() -> None:
    backoff = Backoff(rng=lambda: 0.5)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_jitter_spans_plus_minus_thirty_percent() -> None:
    low = Backoff(rng=lambda: 0.0)
    high = Backoff(rng=lambda: 0.999999)
    assert low.next_delay() == pytest.approx(0.7)
    assert high.next_delay() == pytest.approx(1.3, rel=1e-5)
    for _ in range(10):
        low.next_delay()
        high.next_delay()
    assert low.next_delay() == pytest.approx(21.0)
    assert high.next_delay() == pytest.approx(39.0, rel=1e-5)


@settings(deadline=None, max_examples=200)
@given(st.lists(st.floats(min_value=0.0, max_value=0.999999), min_size=1, max_size=60))
def test_every_delay_is_within_jitter_of_its_capped_base(draws: list[float]) -> None:
    values = iter(draws)
    backoff = Backoff(rng=lambda: next(values))
    for attempt in range(len(draws)):
        base = min(30.0, 2.0**attempt)
        delay = backoff.next_delay()
        assert base * 0.7 - 1e-9 <= delay <= base * 1.3 + 1e-9


def test_a_very_long_outage_does_not_overflow() -> None:
    backoff = Backoff(rng=lambda: 0.5)
    backoff.attempts = 100_000
    assert backoff.next_delay() == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 5, "maximum": 1}, {"multiplier": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
