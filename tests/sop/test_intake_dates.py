"""Intake refuses the date and date-time fields the engine could not use later: a run that fails on
its contact's date fails for good, long after the API said 202."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopflow.enrolment import EARLIEST_YEAR, LATEST_YEAR, enrolment_for
from sopflow.errors import InvalidContactError
from sopflow.sop import clock
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop

PLAN = compile_plan(
    Sop.model_validate(
        {
            "id": "visit",
            "version": 1,
            "name": "Visit",
            "owner": "qa",
            "entry": {"events": ["visit.booked"]},
            "contact_fields": {"visit_at": {"type": "datetime"}, "birthday": {"type": "date"}},
            "steps": [{"id": "done", "kind": "end", "result": "converted"}],
        }
    )
)


def test_dates_at_the_edges_of_the_range_pass_and_beyond_them_are_refused() -> None:
    edges = {"visit_at": "1900-01-01T00:00:00+14:00", "birthday": date(LATEST_YEAR, 12, 31)}
    enrolment_for(PLAN, {"id": "c-1", **edges}, "k")
    enrolment_for(PLAN, {"id": "c-1", "visit_at": "", "birthday": None}, "k")  # not given
    for field, value in [
        ("visit_at", "1899-12-31T23:59:59"),
        ("visit_at", f"{LATEST_YEAR + 1}-01-01"),
        ("birthday", "0001-01-01"),
        ("birthday", datetime(9999, 12, 31, tzinfo=UTC)),
        ("visit_at", "31/12/2026"),
        ("visit_at", ["2026-01-01"]),
    ]:
        with pytest.raises(InvalidContactError, match=f"contact 'c-1': field '{field}'"):
            enrolment_for(PLAN, {"id": "c-1", field: value}, "k")


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    st.one_of(
        st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat),
        st.dates().map(date.isoformat),
        st.text(min_size=1, max_size=30),  # "" is a missing field, not a date
    )
)
def test_what_intake_accepts_the_engine_can_schedule_in_any_zone(value: str) -> None:
    try:
        enrolment_for(PLAN, {"id": "c-1", "visit_at": value}, "k")
    except InvalidContactError:
        return
    for zone_name in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14, UTC-11
        instant = clock._parse_instant(value, zone_name, "visit_at")
        assert clock.to_local(instant - timedelta(weeks=52), zone_name).year >= EARLIEST_YEAR - 1
        assert clock.to_local(instant + timedelta(weeks=52), zone_name).year <= LATEST_YEAR + 2
