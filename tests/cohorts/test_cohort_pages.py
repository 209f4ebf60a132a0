"""A cohort is evaluated page by page in SQL (SQLite and PostgreSQL alike), and a contact date
is due in each contact's own zone, as the run's clock reads it."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from cohort_helpers import add_contacts
from sqlalchemy import insert

from sopflow.cohorts.occurrences import cron_key, due
from sopflow.cohorts.select import cohort_page
from sopflow.segmenting.schema import Segment
from sopflow.sop.schema import ContactDateSchedule, ContactPolicy, CronSchedule, TimezonePolicy
from sopflow.store.models import Contact
from sopflow.store.repository import Store

WEEKLY = CronSchedule(cron="0 10 * * MON", timezone="Europe/Paris")
VIPS = Segment.model_validate(
    {"id": "vips", "name": "VIPs", "description": "tagged vip", "rules": {"tags": {"all": ["vip"]}}}
)
ANNIVERSARY = ContactDateSchedule(contact_date="member_since", annual=True, at=time(10, 0))
POLICY = ContactPolicy(timezone=TimezonePolicy(sources=["contact", "phone"], default="UTC"))
MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def every_page(
    store: Store,
    rule: CronSchedule | ContactDateSchedule,
    segment: Segment | None,
    at: datetime,
    limit: int,
) -> tuple[list[tuple[str, str]], list[int]]:
    """(id, key) of every member, and each page's size, reading the cohort as a fan-out does."""
    members: list[tuple[str, str]] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(100):
        page = cohort_page(store.engine, rule, segment, POLICY, at, cursor, limit)
        members += [(m.id, m.key) for m in page.members]
        sizes.append(page.totals.scanned)
        if page.cursor is None:
            return members, sizes
        cursor = page.cursor
    raise AssertionError("the pages never end")


def test_a_segment_cohort_comes_in_pages_in_code_point_order(any_store: Store) -> None:
    ids = ["b-2", "B-1", "a-3", "é-4", "a-10", "z-5", "c-6"]
    add_contacts(any_store, *({"id": i, "tags": ["vip"]} for i in ids))
    add_contacts(any_store, {"id": "a-0", "tags": ["lead"]}, {"id": "y-9"})
    members, sizes = every_page(any_store, WEEKLY, VIPS, MONDAY, limit=2)
    assert [m for m, _ in members] == sorted(ids)  # code points: "B" before "a", "é" last
    assert {key for _, key in members} == {cron_key(MONDAY)} == {"cohort-2026-12-07T09:00Z"}
    assert max(sizes) == 2 and sum(sizes) == len(ids)
    everyone, _ = every_page(any_store, WEEKLY, None, MONDAY, limit=3)
    assert [m for m, _ in everyone] == sorted([*ids, "a-0", "y-9"])


def _anniversaries(store: Store) -> None:
    add_contacts(
        store,
        {"id": "tokyo", "timezone": "Asia/Tokyo", "member_since": "2021-12-01"},
        {"id": "tokyo_by_phone", "phone": "+81312345678", "member_since": "2019-12-01"},
        {"id": "new_york", "timezone": "America/New_York", "member_since": "2021-12-01"},
        {"id": "tokyo_yesterday", "timezone": "Asia/Tokyo", "member_since": "2021-11-30"},
        {"id": "joined_today", "timezone": "Asia/Tokyo", "member_since": "2026-12-01"},
        {"id": "june", "timezone": "Asia/Tokyo", "member_since": "2021-06-15"},
        {"id": "datetime", "timezone": "Asia/Tokyo", "member_since": "2021-11-30T20:00:00-05:00"},
        {"id": "no_date", "timezone": "Asia/Tokyo"},
    )
    with store.engine.begin() as connection:  # an unreadable zone, as an older import left it
        row = {"fields": {"member_since": "2020-12-01"}, "updated_at": MONDAY}
        connection.execute(insert(Contact), [{"id": "mars", "timezone": "Mars/Olympus", **row}])


def test_contact_dates_are_due_in_each_contacts_zone(any_store: Store) -> None:
    _anniversaries(any_store)
    # 02:00 UTC on 1 December: 11:00 in Tokyo (10:00 has passed), 21:00 the day before in New York.
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    members, _ = every_page(any_store, ANNIVERSARY, None, at, limit=3)
    # `datetime` is 2021-12-01 10:00 in Tokyo: its anniversary is the 1st there, not the 30th.
    assert members == [
        ("datetime", "member_since-2026-12-01"),
        ("tokyo", "member_since-2026-12-01"),
        ("tokyo_by_phone", "member_since-2026-12-01"),
    ]
    page = cohort_page(any_store.engine, ANNIVERSARY, None, POLICY, at, None, 100)
    # Read in SQL: the dates the window can hold; `june` and `no_date` never reach Python.
    assert page.totals.scanned == 7 and page.totals.invalid == 1  # mars
    assert page.totals.not_due == 3  # new_york (not yet), tokyo_yesterday (done), joined_today
    # 15:30 UTC: 10:30 in New York; Tokyo's 10:00 is 14.5 hours ago, still within the day.
    later, _ = every_page(any_store, ANNIVERSARY, None, at.replace(hour=15, minute=30), limit=50)
    assert [m for m, _ in later] == ["datetime", "new_york", "tokyo", "tokyo_by_phone"]
    # A day and more after Tokyo's, only New York's is left in the window.
    next_day, _ = every_page(any_store, ANNIVERSARY, None, at + timedelta(days=1), limit=50)
    assert [m for m, _ in next_day] == ["new_york"]


def test_a_contact_date_cohort_keeps_to_its_segment(any_store: Store) -> None:
    add_contacts(
        any_store,
        {"id": "vip", "tags": ["vip"], "timezone": "UTC", "member_since": "2020-03-02"},
        {"id": "not_vip", "timezone": "UTC", "member_since": "2020-03-02"},
    )
    members, _ = every_page(
        any_store, ANNIVERSARY, VIPS, datetime(2026, 3, 2, 10, 15, tzinfo=UTC), limit=10
    )
    assert members == [("vip", "member_since-2026-03-02")]


def test_29_february_is_celebrated_on_the_28th_in_other_years() -> None:
    leap = {"id": "leap", "timezone": "Europe/Paris", "member_since": "2020-02-29"}
    in_2027 = datetime(2027, 2, 28, 9, 30, tzinfo=UTC)  # 10:30 in Paris
    assert due(ANNIVERSARY, leap, POLICY, in_2027) == (
        datetime(2027, 2, 28, 9, 0, tzinfo=UTC),
        "member_since-2027-02-28",
    )
    in_2028 = datetime(2028, 2, 29, 9, 30, tzinfo=UTC)
    assert due(ANNIVERSARY, leap, POLICY, in_2028) is not None
    assert due(ANNIVERSARY, leap, POLICY, datetime(2028, 2, 28, 9, 30, tzinfo=UTC)) is None


def test_a_one_off_date_is_due_once() -> None:
    renewal = ContactDateSchedule(contact_date="renews_on", at=time(9, 0))
    contact = {"id": "r", "timezone": "America/New_York", "renews_on": "2026-12-10"}
    assert due(renewal, contact, POLICY, datetime(2026, 12, 10, 14, 5, tzinfo=UTC)) == (
        datetime(2026, 12, 10, 14, 0, tzinfo=UTC),
        "renews_on-2026-12-10",
    )
    assert due(renewal, contact, POLICY, datetime(2027, 12, 10, 14, 5, tzinfo=UTC)) is None
