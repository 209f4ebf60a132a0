"""Local time, send windows, business days and holidays. Pure: time always comes in as a value.

All instants are timezone-aware UTC datetimes; local wall-clock times exist only inside
these functions. A contact may have several candidate zones (a phone number spanning
zones): a moment is allowed only if it is allowed in every one of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache, partial
from typing import Any
from zoneinfo import ZoneInfo

import holidays as holidays_lib
from phonenumbers import timezone as phone_timezone

from sopflow.errors import InvalidContactError
from sopflow.phones import E164_HINT, parse_phone
from sopflow.sop.conditions import next_anniversary
from sopflow.sop.schema import WEEKDAYS, ContactPolicy, Moment, TimezonePolicy, WindowSpec

# Looking further ahead than this for an allowed moment means the policy allows none.
_HORIZON_DAYS = 400


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_local(at: datetime, zone_name: str) -> datetime:
    return at.astimezone(zone(zone_name))


def local_instant(day: date, clock: time, zone_name: str) -> datetime:
    """The UTC instant a local wall clock shows `clock` on `day`.

    In a spring-forward gap the wall time does not exist; fold=0 maps it just past the gap
    (02:30 on a 02:00→03:00 night becomes 03:30), so a slot is late by the gap, never early.
    On a fall-back night the first of the two occurrences is used.
    """
    return datetime.combine(day, clock, tzinfo=zone(zone_name)).astimezone(UTC)


@contextmanager
def _outside_workflow_sandbox() -> Iterator[None]:
    """holidays reads its translation files when it builds a table: deterministic for a given
    package version, but file access is forbidden in Temporal's workflow sandbox. The engine
    does not import Temporal; it only looks for it when a workflow is running."""
    workflow: Any = sys.modules.get("temporalio.workflow")
    if workflow is not None and workflow.in_workflow():
        with workflow.unsafe.sandbox_unrestricted():
            yield
    else:
        yield


@lru_cache(maxsize=256)
def _calendar_year(
    country: str, subdivision: str | None, year: int
) -> tuple[Mapping[date, str], frozenset[date]]:
    """A year's public holidays, and its make-up working days (weekend days worked in exchange
    for a bridge holiday, as in China)."""
    with _outside_workflow_sandbox():
        table = holidays_lib.country_holidays(country, subdiv=subdivision, years=year)
        workdays = frozenset(d for d in getattr(table, "weekend_workdays", ()) if d.year == year)
        return dict(table.items()), workdays


def holiday_names(country: str, subdivision: str | None, years: range) -> set[str]:
    """Every holiday name the `holidays` package knows for a region over `years`."""
    names: set[str] = set()
    for year in years:
        for name in _calendar_year(country, subdivision, year)[0].values():
            names.update(name.split("; "))
    return names


@dataclass(frozen=True)
class Calendar:
    """Business days and public holidays of one SOP's policy."""

    business_days: frozenset[int]  # 0 = Monday
    country: str | None = None
    subdivision: str | None = None
    # Only these holidays close the calendar (a rule's explicit no-call list); None: every one.
    only_holidays: frozenset[str] | None = None

    @classmethod
    def from_policy(cls, policy: ContactPolicy) -> Calendar:
        days = frozenset(WEEKDAYS.index(d) for d in policy.business_days)
        if policy.holidays is None:
            return cls(days)
        return cls(days, policy.holidays.country, policy.holidays.subdivision)

    def holiday(self, day: date) -> str | None:
        if self.country is None:
            return None
        name = _calendar_year(self.country, self.subdivision, day.year)[0].get(day)
        if name is None or self.only_holidays is None:
            return name
        # `holidays` joins two holidays on one day with "; "
        return name if self.only_holidays & set(name.split("; ")) else None

    def is_makeup_workday(self, day: date) -> bool:
        if self.country is None:
            return False
        return day in _calendar_year(self.country, self.subdivision, day.year)[1]

    def is_business_day(self, day: date) -> bool:
        if self.holiday(day) is not None:
            return False
        return day.weekday() in self.business_days or self.is_makeup_workday(day)

    def nth_business_day_after(self, day: date, n: int) -> date:
        found = 0
        for offset in range(1, _HORIZON_DAYS):
            candidate = day + timedelta(days=offset)
            if self.is_business_day(candidate):
                found += 1
                if found == n:
                    return candidate
        raise ValueError("the policy has no business days")


def _day_allowed(day: date, window: WindowSpec, calendar: Calendar) -> bool:
    return window.days == "all" or calendar.is_business_day(day)


def _next_allowed_in_zone(
    at: datetime, zone_name: str, window: WindowSpec, calendar: Calendar
) -> datetime | None:
    first = to_local(at, zone_name).date()
    for offset in range(_HORIZON_DAYS):
        day = first + timedelta(days=offset)
        if not _day_allowed(day, window, calendar):
            continue
        for start, end in window.hours:
            opens, closes = local_instant(day, start, zone_name), local_instant(day, end, zone_name)
            if closes > at:
                return max(opens, at)
    return None


def _earliest_common(
    at: datetime, finders: Sequence[Callable[[datetime], datetime | None]]
) -> datetime | None:
    """The earliest instant >= `at` every finder allows: each moves the candidate forward to
    its own next opening until all agree (None: one of them never allows it again)."""
    candidate = at
    for _ in range(64):
        moved = False
        for find in finders:
            found = find(candidate)
            if found is None:
                return None
            if found != candidate:
                candidate, moved = found, True
        if not moved:
            return candidate
    return None


def next_allowed(
    at: datetime, zones: Sequence[str], window: WindowSpec | None, calendar: Calendar
) -> datetime | None:
    """The earliest instant >= `at` inside `window` in every zone; None if there is none."""
    if window is None:
        return at
    return _earliest_common(
        at,
        [
            partial(_next_allowed_in_zone, zone_name=z, window=window, calendar=calendar)
            for z in zones
        ],
    )


def _open_until_in_zone(
    at: datetime, zone_name: str, window: WindowSpec, calendar: Calendar
) -> datetime:
    """When the window range holding `at` closes in one zone (`at` must be allowed there)."""
    local = to_local(at, zone_name)
    for start, end in window.hours:
        if start <= local.time() < end:
            return local_instant(local.date(), end, zone_name)
    return at  # not inside a range: nothing is left of it


def open_until(
    at: datetime, zones: Sequence[str], windows: Sequence[tuple[WindowSpec, Calendar]]
) -> datetime:
    """The end of the stretch of allowed time that starts at `at` (allowed in every window and
    zone): ranges that touch (09:00-13:00, 13:00-18:00) count as one stretch."""
    end = at
    for _ in range(_HORIZON_DAYS * 4):
        closes = [
            _open_until_in_zone(end, zone_name, window, calendar)
            for window, calendar in windows
            for zone_name in zones
        ]
        if not closes:
            return datetime.max.replace(tzinfo=UTC)
        nearest = min(closes)
        if nearest <= end or next_allowed_in_all(nearest, zones, windows) != nearest:
            return max(nearest, end)
        end = nearest
    return end


def next_allowed_in_all(
    at: datetime, zones: Sequence[str], windows: Sequence[tuple[WindowSpec, Calendar]]
) -> datetime | None:
    """The earliest instant >= `at` inside every window (each with its own calendar)."""
    return _earliest_common(
        at, [partial(next_allowed, zones=zones, window=w, calendar=c) for w, c in windows]
    )


def add_window_time(
    start: datetime,
    duration: timedelta,
    zones: Sequence[str],
    windows: Sequence[tuple[WindowSpec, Calendar]],
) -> datetime | None:
    """`duration` of allowed time counted from `start`: the clock stops outside the windows.
    A 15-minute task at 17:55 with hours 09:00-18:00 is due at 09:10 on the next allowed day,
    so a rep who is on time never has to work outside the window. None: the window never
    opens again."""
    if not windows:
        return start + duration
    at, remaining = start, duration
    for _ in range(_HORIZON_DAYS * 4):
        opened = next_allowed_in_all(at, zones, windows)
        if opened is None:
            return None
        closes = open_until(opened, zones, windows)
        if opened + remaining <= closes:
            return opened + remaining
        remaining -= closes - opened
        at = closes
    return None


def why_blocked(
    at: datetime, zones: Sequence[str], channel: str, window: WindowSpec, calendar: Calendar
) -> str:
    """A sentence an ops person understands: why `at` is outside the window."""
    for zone_name in zones:
        local = to_local(at, zone_name)
        day = local.date()
        where = f"local {local:%a %Y-%m-%d %H:%M} {zone_name}"
        if window.days == "business":
            holiday = calendar.holiday(day)
            if holiday:
                return f"{holiday} is a public holiday ({where})"
            if not calendar.is_business_day(day):
                return f"{local:%A} is not a business day ({where})"
        if not any(start <= local.time() < end for start, end in window.hours):
            hours = ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in window.hours)
            return f"outside the {channel} window {hours} ({where})"
    return "outside the allowed window"


# ---------------------------------------------------------------- moments
def _parse_instant(value: Any, zone_name: str, field: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(0))
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidContactError(
                f"field {field!r} is {value!r}, not an ISO 8601 date or date-time"
            ) from exc
    else:
        raise InvalidContactError(f"field {field!r} is {value!r}, not a date or date-time")
    if parsed.tzinfo is None:  # a naive value is the contact's local time
        parsed = parsed.replace(tzinfo=zone(zone_name))
    return parsed.astimezone(UTC)


def resolve_moment(
    moment: Moment,
    *,
    now: datetime,
    enrolled_at: datetime,
    step_started: Mapping[str, datetime],
    contact: Mapping[str, Any],
    zone_name: str,
    calendar: Calendar,
) -> datetime:
    """Turn a Moment of the SOP into a UTC instant for one run."""
    anchor = moment.anchor
    if anchor == "enrolment":
        base = enrolled_at
    elif anchor == "now":
        base = now
    elif anchor.startswith("step:"):
        base = step_started.get(anchor[5:], now)
    else:  # contact.<field>; checked at validation
        field = anchor.removeprefix("contact.")
        if contact.get(field) in (None, ""):
            raise InvalidContactError(f"missing field {field!r}, needed to schedule a step")
        base = _parse_instant(contact[field], zone_name, field)
        if moment.annual:  # a birthday: its next occurrence, keeping the local time of day
            local_base = to_local(base, zone_name)
            today = to_local(now - moment.offset, zone_name).date()
            base = local_instant(
                next_anniversary(local_base.date(), today), local_base.time(), zone_name
            )
    base += moment.offset
    local = to_local(base, zone_name)
    if moment.day is not None:
        day = local.date() + timedelta(days=moment.day - 1)
    elif moment.business_day is not None:
        day = calendar.nth_business_day_after(local.date(), moment.business_day)
    else:
        day = local.date()
    clock = moment.at if moment.at is not None else local.time().replace(tzinfo=None)
    if moment.at is None and moment.day is None and moment.business_day is None:
        return base
    return local_instant(day, clock, zone_name)


# ---------------------------------------------------------------- time zones of a contact
def zones_for_phone(number: str) -> list[str]:
    """Candidate IANA zones of an E.164 phone number; raises InvalidContactError if invalid."""
    parsed = parse_phone(number)
    if parsed is None:
        raise InvalidContactError(f"invalid phone number {number!r}: {E164_HINT}")
    zones = [z for z in phone_timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return sorted(zones)


def contact_zones(contact: Mapping[str, Any], policy: TimezonePolicy) -> tuple[list[str], str]:
    """The contact's zones and where they came from ("contact", "phone" or "default")."""
    for source in policy.sources:
        if source == "contact" and contact.get("timezone"):
            name = str(contact["timezone"])
            try:
                zone(name)
            except (ValueError, KeyError) as exc:
                raise InvalidContactError(f"unknown time zone {name!r}") from exc
            return [name], "contact"
        if source == "phone" and contact.get("phone"):
            zones = zones_for_phone(str(contact["phone"]))
            if zones:
                return zones, "phone"
    return [policy.default], "default"
