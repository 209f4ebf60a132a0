"""Cron expressions of scheduled cohorts: parsed here, once, into the sets of minutes, hours,
days and months they name; the Temporal Schedule is built from those sets
(sopflow/cohorts/schedules.py) and the fan-out finds an occurrence from them
(sopflow/cohorts/occurrences.py), so what fires and what a run counts as its occurrence agree.

Five fields, as crontab(5): minute hour day-of-month month day-of-week; `*`, `N`, `N-M`, `*/S`,
`N-M/S`, `N/S`, lists with commas; month names JAN-DEC, weekday names SUN-SAT (0 and 7 are
Sunday); @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually. When both day fields
are restricted (neither starts with `*`), a day matches either, as cron has always done.

Pure: imports nothing of sopflow (sopflow/sop/schema.py validates with it).
"""

from __future__ import annotations

import difflib
from calendar import monthrange
from dataclasses import dataclass
from datetime import date

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
EXAMPLE = "e.g. '0 10 * * MON' (Mondays at 10:00)"


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names for low, low + 1, …
    name_base: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("day of week", 0, 7, WEEKDAYS, 0),  # 7 is Sunday again
)


class CronError(ValueError):
    """A cron expression that cannot be used; the message says what to write instead."""

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"invalid cron {text!r}: {why}")


@dataclass(frozen=True)
class Cron:
    """What a cron expression names. `weekdays`: 0 is Sunday (Temporal's numbering too)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # the day-of-month field starts with `*`
    any_weekday: bool  # the day-of-week field starts with `*`

    def matches_day(self, day: date) -> bool:
        """Does the expression fire on this (local) date? Both day fields restricted: either."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week


def _value(text: str, item: str, raw: str, field: _Field) -> int:
    word = raw.upper()
    if field.names and word in field.names:
        return field.names.index(word) + field.name_base
    if raw.isdigit():
        number = int(raw)
        if not field.low <= number <= field.high:
            raise CronError(text, f"{field.name} {number} is out of range {field.low}-{field.high}")
        return number
    close = difflib.get_close_matches(word, field.names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    named = f" or a name {field.names[0]}-{field.names[-1]}" if field.names else ""
    inside = f" in {item!r}" if item != raw else ""
    raise CronError(
        text,
        f"{field.name} {raw!r}{inside} is not a number {field.low}-{field.high}{named}{hint}",
    )


def _parse_item(text: str, item: str, field: _Field) -> set[int]:
    if not item:
        raise CronError(text, f"empty item in the {field.name} field (a stray comma?)")
    if any(mark in item for mark in "?LW#"):
        raise CronError(
            text, f"{item!r}: ?, L, W and # are not supported; use numbers, ranges and steps"
        )
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise CronError(text, f"step {step_text!r} in {item!r} must be a whole number from 1")
        step = int(step_text)
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(text, item, first, field), _value(text, item, last, field)
        if low > high:
            raise CronError(text, f"range {base!r} runs backwards: write the smaller end first")
    else:
        low = _value(text, item, base, field)
        high = field.high if slash else low  # N/S: from N to the end, every S
    return set(range(low, high + 1, step))


def parse_cron(text: str) -> Cron:
    """The sets a five-field cron expression names; CronError says precisely what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise CronError(
            str(text), f"write five fields: minute hour day-of-month month day-of-week, {EXAMPLE}"
        )
    spelled = text.strip()
    if spelled.startswith("@"):
        if spelled.lower() not in ALIASES:
            names = ", ".join(ALIASES)
            raise CronError(text, f"unknown shortcut {spelled!r} (known: {names})")
        spelled = ALIASES[spelled.lower()]
    parts = spelled.split()
    if len(parts) != len(_FIELDS):
        seconds = " (sopflow's cron has no seconds or years field)" if len(parts) > 5 else ""
        raise CronError(
            text,
            f"{len(parts)} field{'s' if len(parts) != 1 else ''}{seconds}; write five: minute "
            f"hour day-of-month month day-of-week, {EXAMPLE}",
        )
    sets = [
        set().union(*(_parse_item(text, item, field) for item in part.split(",")))
        for part, field in zip(parts, _FIELDS, strict=True)
    ]
    minutes, hours, days, months, weekdays = sets
    weekdays = {d % 7 for d in weekdays}
    cron = Cron(
        text=text,
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        any_day=parts[2].startswith("*"),
        any_weekday=parts[4].startswith("*"),
    )
    if cron.any_weekday and not any(
        d <= monthrange(2024, m)[1] for m in months for d in days
    ):  # 2024: a leap year, so 29 February counts
        raise CronError(
            text,
            f"never fires: no month it names has day {min(days)}"
            if len(days) == 1
            else "never fires: no month it names has any of those days",
        )
    return cron
