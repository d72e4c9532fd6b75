"""Cron expressions as the reference reads them (seconds first, 1 = Sunday), plus 5-field Unix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.triggers.cron import parse_cron


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def upcoming(expression: str, start: datetime, n: int = 3) -> list[datetime]:
    schedule = parse_cron(expression)
    out: list[datetime] = []
    t = start
    for _ in range(n):
        nxt = schedule.next_after(t)
        assert nxt is not None
        assert schedule.matches(nxt)
        out.append(nxt)
        t = nxt
    return out


START = at(2024, 1, 31, 23, 59, 58)  # a Wednesday, a leap year


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * * * * *", [at(2024, 1, 31, 23, 59, 59), at(2024, 2, 1), at(2024, 2, 1, 0, 0, 1)]),
        ("0 * * * * *", [at(2024, 2, 1, 0, 0), at(2024, 2, 1, 0, 1), at(2024, 2, 1, 0, 2)]),
        ("0 */5 * * * *", [at(2024, 2, 1), at(2024, 2, 1, 0, 5), at(2024, 2, 1, 0, 10)]),
        ("*/20 * * * * *", [at(2024, 2, 1), at(2024, 2, 1, 0, 0, 20), at(2024, 2, 1, 0, 0, 40)]),
        (
            "30 15 10 * * *",
            [at(2024, 2, 1, 10, 15, 30), at(2024, 2, 2, 10, 15, 30), at(2024, 2, 3, 10, 15, 30)],
        ),
        # a/n: from a to the end of the range.
        ("0 50/5 * * * *", [at(2024, 2, 1, 0, 50), at(2024, 2, 1, 0, 55), at(2024, 2, 1, 1, 50)]),
        ("0 0 9-11/2 * * *", [at(2024, 2, 1, 9), at(2024, 2, 1, 11), at(2024, 2, 2, 9)]),
        ("0 0 0 1,15 * *", [at(2024, 2, 1), at(2024, 2, 15), at(2024, 3, 1)]),
        # Day of week 1-7 with 1 = Sunday (the crate's numbering), or names.
        ("0 0 12 * * 1", [at(2024, 2, 4, 12), at(2024, 2, 11, 12), at(2024, 2, 18, 12)]),
        ("0 0 12 * * SUN", [at(2024, 2, 4, 12), at(2024, 2, 11, 12), at(2024, 2, 18, 12)]),
        ("0 30 9 * * MON-FRI", [at(2024, 2, 1, 9, 30), at(2024, 2, 2, 9, 30), at(2024, 2, 5, 9, 30)]),
        ("0 0 0 * * 7", [at(2024, 2, 3), at(2024, 2, 10), at(2024, 2, 17)]),  # 7 = Saturday
        # Day of month AND day of week: Friday the 13th.
        ("0 0 12 13 * 6", [at(2024, 9, 13, 12), at(2024, 12, 13, 12), at(2025, 6, 13, 12)]),
        ("0 0 0 29 2 *", [at(2024, 2, 29), at(2028, 2, 29), at(2032, 2, 29)]),
        ("0 0 0 1 jan,Jul ?", [at(2024, 7, 1), at(2025, 1, 1), at(2025, 7, 1)]),
        ("0 0 0 1 1 * 2030,2032", [at(2030, 1, 1), at(2032, 1, 1)]),
        ("@hourly", [at(2024, 2, 1), at(2024, 2, 1, 1), at(2024, 2, 1, 2)]),
        ("@daily", [at(2024, 2, 1), at(2024, 2, 2), at(2024, 2, 3)]),
        ("@weekly", [at(2024, 2, 4), at(2024, 2, 11), at(2024, 2, 18)]),
        ("@monthly", [at(2024, 2, 1), at(2024, 3, 1), at(2024, 4, 1)]),
        ("@yearly", [at(2025, 1, 1), at(2026, 1, 1), at(2027, 1, 1)]),
    ],
)
def test_reference_expressions(expression: str, expected: list[datetime]) -> None:
    assert upcoming(expression, START, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # The seed documents' cron sweep: minute-first, fires at second 0.
        ("*/5 * * * *", [at(2024, 2, 1), at(2024, 2, 1, 0, 5), at(2024, 2, 1, 0, 10)]),
        ("0 12 * * 0", [at(2024, 2, 4, 12), at(2024, 2, 11, 12), at(2024, 2, 18, 12)]),  # 0 = Sunday
        ("0 12 * * 7", [at(2024, 2, 4, 12), at(2024, 2, 11, 12), at(2024, 2, 18, 12)]),  # 7 = Sunday too
        ("0 9 * * mon-fri", [at(2024, 2, 1, 9), at(2024, 2, 2, 9), at(2024, 2, 5, 9)]),
        # Both day fields restricted: either matches (Vixie cron).
        ("0 0 13 * 5", [at(2024, 2, 2), at(2024, 2, 9), at(2024, 2, 13)]),
    ],
)
def test_five_field_unix_expressions(expression: str, expected: list[datetime]) -> None:
    assert upcoming(expression, START, len(expected)) == expected


def test_next_is_strictly_after_and_ignores_sub_seconds() -> None:
    schedule = parse_cron("* * * * * *")
    assert schedule.next_after(at(2024, 1, 1, 0, 0, 0)) == at(2024, 1, 1, 0, 0, 1)
    assert schedule.next_after(at(2024, 1, 1) + timedelta(microseconds=999_999)) == at(2024, 1, 1, 0, 0, 1)


def test_year_rollover_and_end_of_range() -> None:
    assert parse_cron("0 0 0 1 1 *").next_after(at(2024, 12, 31, 23, 59, 59)) == at(2025, 1, 1)
    assert parse_cron("0 0 0 1 1 * 2030").next_after(at(2030, 1, 1)) is None
    assert parse_cron("0 0 0 31 2 *").next_after(START) is None  # never: the trigger type refuses it


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * * * *",
        "60 * * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * * 13 *",
        "* * * * * 0",  # the crate's day of week is 1-7
        "* * * * * 8",
        "*/0 * * * * *",
        "5-1 * * * * *",
        "a * * * * *",
        "1,,2 * * * * *",
        "* * * * * * 1969",
        "* * * * FOO *",
        "*/x * * * * *",
        "@sometimes",
    ],
)
def test_invalid_expressions(expression: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_cron(expression)
    assert str(info.value)
