"""A cohort's members meet the entry's conditions as an event's contact does, segment
conditions included: the store answers them for the whole page, as of the occurrence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cohort_helpers import add_contacts, plan, write_segment

from sopflow.cohorts.contracts import CohortTotals, Member
from sopflow.cohorts.enrol import CohortEnroller
from sopflow.store.repository import Store

WEEKLY = {"cron": "0 10 * * MON", "timezone": "UTC", "segment": "vips"}
OCCURRENCE = {"occurrence": datetime(2026, 11, 30, 10, tzinfo=UTC).isoformat()}


def members(*ids: str) -> list[Member]:
    return [Member(id=i, key="2026-11-30T10:00Z") for i in ids]


def test_segment_conditions_of_the_entry_are_answered_for_the_page(
    any_store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "segments"
    write_segment(folder, "vips", "vip")
    write_segment(folder, "lapsed", "lapsed")
    add_contacts(
        any_store,
        {"id": "a", "tags": ["vip"], "phone": "+12125550101"},
        {"id": "b", "tags": ["vip", "lapsed"], "phone": "+12125550102"},
        {"id": "c", "tags": ["vip"], "phone": "+12125550103"},
    )
    sop = plan(WEEKLY, conditions=[{"not_segment": "lapsed"}], segments=("vips", "lapsed"))
    ready, totals = CohortEnroller(any_store, folder)._triage(
        sop, members("a", "b", "c"), OCCURRENCE
    )
    assert [e.contact["id"] for e in ready] == ["a", "c"]
    assert totals == CohortTotals(not_matching=1)

    within = plan(WEEKLY, conditions=[{"segment": "lapsed"}], segments=("vips", "lapsed"))
    ready, totals = CohortEnroller(any_store, folder)._triage(
        within, members("a", "b", "c"), OCCURRENCE
    )
    assert [e.contact["id"] for e in ready] == ["b"]
    assert totals == CohortTotals(not_matching=2)


def test_a_segment_gone_since_deployment_enrols_nobody_and_says_why(
    store: Store, tmp_path: Path, caplog: object
) -> None:
    folder = tmp_path / "segments"
    write_segment(folder, "vips", "vip")  # "lapsed" was deleted after the SOP was deployed
    add_contacts(store, {"id": "a", "tags": ["vip"], "phone": "+12125550101"})
    sop = plan(WEEKLY, conditions=[{"not_segment": "lapsed"}], segments=("vips", "lapsed"))
    ready, totals = CohortEnroller(store, folder)._triage(sop, members("a"), OCCURRENCE)
    assert ready == [] and totals == CohortTotals(invalid=1)
    assert "lapsed" in caplog.text  # type: ignore[attr-defined]
