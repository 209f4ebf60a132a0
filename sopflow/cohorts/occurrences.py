"""Which occurrence a cohort run enrols for, and the business key each enrolment gets from it.

A cron rule's occurrence is its latest fire at or before the run's scheduled time: a run the
schedule started at that fire, a catch-up of it, or a manual trigger later (Temporal's UI, the
client's `trigger()`) all enrol for the same occurrence under the same keys, so a contact is
enrolled once per occurrence however many runs there are.

A contact-date rule's occurrence is per contact: the date (in the contact's zone, from the SOP's
timezone policy as its run reads it) whose `at` falls due. A run at time T enrols the contacts
whose occurrence lies in (T - LOOKBACK, T]: the schedule fires every CONTACT_DATE_EVERY, so each
occurrence is seen by several runs (the keys keep it to one enrolment), and a day of runs lost
(the server down, the schedule paused) is still caught up by the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, assert_never

from sopflow.cohorts.cron import Cron, parse_cron
from sopflow.sop import clock
from sopflow.sop.schema import ContactDateSchedule, ContactPolicy, CronSchedule, Moment

CONTACT_DATE_EVERY = timedelta(minutes=15)  # every UTC offset in use is a multiple of 15 minutes
LOOKBACK = timedelta(days=1)  # = the schedules' catch-up window
_SEARCH_DAYS = 366 * 9  # 29 February of a year divisible by 4 may be 8 years away (2096 → 2104)


def latest_fire(cron: Cron, zone_name: str, at: datetime) -> datetime | None:
    """The latest instant at or before `at` the expression names in `zone_name` (None: none in
    nine years). As Temporal, a local time the spring-forward gap skips never fires; a time the
    fall-back night shows twice fires twice in Temporal but is one occurrence here, the first
    (clock.local_instant), so the repeated hour enrols nobody again."""
    first = clock.to_local(at, zone_name).date()
    minutes = sorted(cron.minutes, reverse=True)
    hours = sorted(cron.hours, reverse=True)
    for back in range(_SEARCH_DAYS):
        day = first - timedelta(days=back)
        if not cron.matches_day(day):
            continue
        for hour in hours:
            for minute in minutes:
                wall = datetime.combine(day, time(hour, minute))
                instant = clock.local_instant(day, wall.time(), zone_name)
                if clock.to_local(instant, zone_name).replace(tzinfo=None) != wall:
                    continue  # in the gap: that wall time does not exist that day
                if instant <= at:
                    return instant
    return None


def occurrence(rule: CronSchedule | ContactDateSchedule, scheduled: datetime) -> datetime:
    """What a run started for `scheduled` enrols for: a cron rule's latest fire (its own
    scheduled time, unless triggered by hand), a contact-date rule's run time."""
    scheduled = scheduled.astimezone(UTC)
    match rule:
        case CronSchedule():
            return latest_fire(parse_cron(rule.cron), rule.timezone, scheduled) or scheduled
        case ContactDateSchedule():
            return scheduled.replace(microsecond=0)
        case _:
            assert_never(rule)


def cron_key(at: datetime) -> str:
    """The enrolment key of a cron occurrence: `sop:{sop}:{contact}:cohort-2026-12-07T09:00Z`."""
    return f"cohort-{at.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def date_key(rule: ContactDateSchedule, local_day: date) -> str:
    """The enrolment key of a contact date: `sop:{sop}:{contact}:member_since-2026-12-01`."""
    return f"{rule.contact_date}-{local_day.isoformat()}"


def candidate_days(at: datetime) -> list[date]:
    """Every date a contact's occurrence in (at - LOOKBACK, at] can be on, in any zone (UTC-12
    to UTC+14), with a day more each side for date-times written with another offset."""
    first = (at - LOOKBACK - timedelta(hours=12)).date() - timedelta(days=1)
    last = (at + timedelta(hours=14)).date() + timedelta(days=1)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def due(
    rule: ContactDateSchedule,
    contact: Mapping[str, Any],
    policy: ContactPolicy,
    at: datetime,
) -> tuple[datetime, str] | None:
    """(the instant, the enrolment key) when the contact's occurrence lies in (at - LOOKBACK,
    at], else None. Raises InvalidContactError for a zone or date the contact gets wrong."""
    zones, _ = clock.contact_zones(contact, policy.timezone)  # the run's zone: its first
    since = at - LOOKBACK
    # The occurrence is the run's own Moment, `wait until {anchor: contact.F, annual, at}`,
    # resolved from the window's start: the first one after it.
    moment = Moment(anchor=f"contact.{rule.contact_date}", annual=rule.annual, at=rule.at)
    calendar = clock.Calendar.from_policy(policy)

    def resolved(moment: Moment) -> datetime:
        return clock.resolve_moment(
            moment,
            now=since,
            enrolled_at=at,
            step_started={},
            contact=contact,
            zone_name=zones[0],
            calendar=calendar,
        )

    instant = resolved(moment)
    if not since < instant <= at:
        return None
    day = clock.to_local(instant, zones[0]).date()
    if rule.annual:  # the date itself (joined today) is no anniversary
        itself = resolved(moment.model_copy(update={"annual": False}))
        if day <= clock.to_local(itself, zones[0]).date():
            return None
    return instant, date_key(rule, day)
