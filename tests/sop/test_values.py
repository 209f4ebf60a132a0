"""Durations and clock times: the forms ops people write, and one canonical form for digests."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from sopflow.sop.values import format_duration, parse_clock, parse_duration


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30m", timedelta(minutes=30)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("-1d", timedelta(days=-1)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_parse_duration(text: str | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["3x", "", "m30", "1.5h", True, None, "1d -2h"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    "bare, hint", [(30, "write 30m, 30s or 30h"), (1.5, "write whole units, e.g. 90m")]
)
def test_a_bare_number_is_no_duration(bare: float, hint: str) -> None:
    """`due_within: 30` meant 30 seconds, which nobody writing it means: a unit is required."""
    with pytest.raises(ValueError, match="a duration needs a unit") as caught:
        parse_duration(bare)
    assert hint in str(caught.value)


def test_canonical_duration_is_the_same_for_the_same_length() -> None:
    assert format_duration(parse_duration("60m")) == format_duration(parse_duration("1h")) == "1h"
    assert format_duration(parse_duration("-1d 2h")) == "-1d2h"
    assert format_duration(timedelta(0)) == "0s"


@pytest.mark.parametrize(
    "text, expected", [("09:00", time(9)), ("9:05", time(9, 5)), (1080, time(18))]
)
def test_parse_clock(text: str | int, expected: time) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("bad", ["24:00", "12:60", "noon", "12", -1])
def test_parse_clock_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid clock time"):
        parse_clock(bad)


def test_chinas_make_up_working_days_are_business_days() -> None:
    """2026-01-04 is a Sunday worked in exchange for the New Year bridge (Fri 2026-01-02)."""
    from datetime import date

    from sopflow.sop.clock import Calendar

    china = Calendar(frozenset(range(5)), "CN")
    assert china.is_business_day(date(2026, 1, 4))  # make-up Sunday
    assert not china.is_business_day(date(2026, 1, 2))  # the bridge day off
    assert not china.is_business_day(date(2026, 1, 11))  # an ordinary Sunday
    assert china.nth_business_day_after(date(2026, 1, 1), 1) == date(2026, 1, 4)
