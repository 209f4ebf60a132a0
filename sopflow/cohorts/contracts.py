"""Inputs and outputs of the CohortRun workflow and its activities: one pydantic model each.

Add fields, never remove or rename them: schedules hold a CohortRunInput, and running fan-outs
and their continue-as-new carry one.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from sopflow.segmenting.schema import Segment
from sopflow.sop.schema import ScheduleRule

PAGE_SIZE = 500  # contacts evaluated per page: ids only, ~20 KB of history per page


class CohortTotals(BaseModel):
    """What became of the contacts a run (or a page) looked at."""

    scanned: int = Field(0, description="contacts the cohort query returned")
    enrolled: int = Field(0, description="runs started")
    already: int = Field(0, description="enrolled for this occurrence before (its business key)")
    running: int = Field(0, description="skipped: a run of this SOP is still running for them")
    opted_out: int = Field(0, description="skipped: opted out, as the events API skips them")
    not_matching: int = Field(0, description="skipped: the entry's conditions do not hold")
    not_due: int = Field(0, description="contact dates: the occurrence is not in this window")
    invalid: int = Field(0, description="skipped: the contact cannot run the SOP (logged why)")

    def plus(self, other: CohortTotals) -> CohortTotals:
        return CohortTotals.model_validate(
            {name: getattr(self, name) + getattr(other, name) for name in CohortTotals.model_fields}
        )


class CohortProgress(BaseModel):
    """Where a fan-out is: carried across continue-as-new."""

    digest: str = Field(description="the plan enrolled into: the newest version at the start")
    occurrence: AwareDatetime
    cursor: str | None = Field(None, description="the last contact id evaluated")
    totals: CohortTotals = Field(default_factory=CohortTotals)
    generation: int = 0


class CohortRunInput(BaseModel):
    """What a cohort's Temporal Schedule starts the fan-out with."""

    sop_id: str
    rule: ScheduleRule
    segment: Segment | None = Field(None, description="the rule's segment as deployed")
    fingerprint: str = Field("", description="of the schedule as synced (schedules.py)")
    page_size: int = Field(PAGE_SIZE, ge=1, le=5000)
    scheduled_at: AwareDatetime | None = Field(
        None, description="a run started by hand: its time (else the schedule's scheduled time)"
    )
    progress: CohortProgress | None = Field(None, description="set when the run continues as new")


class CohortRunResult(BaseModel):
    sop_id: str
    occurrence: AwareDatetime | None
    totals: CohortTotals
    skipped_reason: str = Field("", description="why nothing was enrolled, if the rule is gone")


class BeginInput(BaseModel):
    sop_id: str
    rule: ScheduleRule
    scheduled_at: AwareDatetime


class Begun(BaseModel):
    digest: str | None = Field(None, description="None: the deployed SOP no longer has the rule")
    occurrence: AwareDatetime
    reason: str = ""


class PageInput(BaseModel):
    sop_id: str
    digest: str
    rule: ScheduleRule
    segment: Segment | None
    occurrence: AwareDatetime
    cursor: str | None
    limit: int


class Member(BaseModel):
    id: str
    key: str = Field(description="the enrolment key: the occurrence, or the contact's date")


class Page(BaseModel):
    members: list[Member]
    cursor: str | None = Field(description="the last id evaluated; None: the cohort is done")
    totals: CohortTotals = Field(default_factory=CohortTotals)


class EnrolInput(BaseModel):
    sop_id: str
    digest: str
    occurrence: AwareDatetime
    members: list[Member]
    max_per_second: int
