"""Cron rules: what Temporal fires and what a fan-out counts as its occurrence agree, on the real
server, across zones, DST nights and cron's "either day field" rule."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Schedule, ScheduleActionStartWorkflow, ScheduleSpec, ScheduleState
from temporalio.testing import WorkflowEnvironment

from sopflow.cohorts.cron import CronError, parse_cron
from sopflow.cohorts.occurrences import latest_fire, occurrence
from sopflow.cohorts.schedules import calendars
from sopflow.sop import clock
from sopflow.sop.schema import ContactDateSchedule, CronSchedule

UTC_TIME = datetime.fromisoformat


def test_the_latest_fire_is_the_occurrence_a_manual_trigger_belongs_to() -> None:
    rule = CronSchedule(cron="0 10 * * MON", timezone="Europe/Paris")
    monday = UTC_TIME("2026-12-07T09:00:00+00:00")  # 10:00 in Paris
    assert occurrence(rule, monday) == monday
    assert occurrence(rule, UTC_TIME("2026-12-09T15:37:12+00:00")) == monday  # Wednesday
    assert occurrence(rule, monday - timedelta(seconds=1)) == monday - timedelta(days=7)
    summer = UTC_TIME("2026-07-06T08:00:00+00:00")  # 10:00 CEST is 08:00 UTC
    assert occurrence(rule, summer + timedelta(hours=3)) == summer


def test_contact_date_rules_run_at_their_scheduled_minute() -> None:
    rule = ContactDateSchedule(contact_date="member_since", at="10:00")
    at = UTC_TIME("2026-12-03T13:15:42.5+00:00")
    assert occurrence(rule, at) == UTC_TIME("2026-12-03T13:15:42+00:00")


def test_both_day_fields_restricted_means_either_as_in_cron() -> None:
    cron = parse_cron("0 9 1,15 * MON")
    assert not cron.any_day and not cron.any_weekday
    assert len(calendars(cron)) == 2  # Temporal's calendar fields all hold: one per day field
    at = UTC_TIME("2026-12-16T12:00:00+00:00")  # a Wednesday
    assert latest_fire(cron, "UTC", at) == UTC_TIME("2026-12-15T09:00:00+00:00")  # Tue 15th
    monday_step = parse_cron("0 9 */2 * MON")  # `*/2` starts with `*`: both must hold
    assert len(calendars(monday_step)) == 1
    assert latest_fire(monday_step, "UTC", at) == UTC_TIME("2026-12-07T09:00:00+00:00")


def test_names_numbers_and_shortcuts() -> None:
    assert parse_cron("0 10 * * 7").weekdays == parse_cron("0 10 * * SUN").weekdays == {0}
    assert parse_cron("0 10 * jan-mar mon-fri").months == {1, 2, 3}
    assert parse_cron("@weekly") == replace(parse_cron("0 0 * * 0"), text="@weekly")
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}
    with pytest.raises(CronError, match="minute 60 is out of range 0-59"):
        parse_cron("60 * * * *")
    with pytest.raises(CronError, match="empty item in the hour field"):
        parse_cron("0 9,,10 * * *")
    with pytest.raises(CronError, match="month 'JNA' is not a number 1-12 or a name JAN-DEC"):
        parse_cron("0 9 1 JNA *")


CASES = [
    ("0 10 * * MON", "Europe/Paris"),
    ("30 2 14 3 *", "America/New_York"),  # 02:30 does not exist on some 14 Marches (DST)
    ("30 1 * 11 SUN", "America/New_York"),  # 01:30 happens twice on the first November Sunday
    ("0 9 1,15 * MON", "Asia/Tokyo"),
    ("*/20 9-10 * * 1-5", "Asia/Kolkata"),
    ("0 0 29 2 *", "UTC"),
    ("15 3 */10 * *", "Australia/Lord_Howe"),  # a half-hour DST shift
]


def _same_occurrence(found: datetime | None, fired: datetime, zone: str) -> bool:
    """The fire itself, or the first of a wall time the fall-back night shows twice."""
    if found == fired:
        return True
    wall = clock.to_local(fired, zone).replace(tzinfo=None)
    return (
        found is not None
        and found < fired
        and clock.to_local(found, zone).replace(tzinfo=None) == wall
    )


@pytest.mark.parametrize(("expression", "zone"), CASES)
async def test_temporal_fires_exactly_the_occurrences_sopflow_counts(
    live_env: WorkflowEnvironment, expression: str, zone: str
) -> None:
    cron = parse_cron(expression)
    handle = await live_env.client.create_schedule(
        f"cron-agreement-{uuid.uuid4()}",
        Schedule(
            action=ScheduleActionStartWorkflow("Nothing", id="nothing", task_queue="nowhere"),
            spec=ScheduleSpec(calendars=calendars(cron), time_zone_name=zone),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        fires = (await handle.describe()).info.next_action_times
        assert len(fires) >= 5 and fires[0] > datetime.now(UTC)
        for fired in fires:
            assert _same_occurrence(latest_fire(cron, zone, fired), fired, zone), fired
        for before, fired in itertools.pairwise(fires):
            found = latest_fire(cron, zone, fired - timedelta(seconds=1))
            assert _same_occurrence(found, before, zone), (before, fired, found)
    finally:
        await handle.delete()
