"""CohortRun: one occurrence of a scheduled cohort, fanned out into SopRun enrolments.

Started by the rule's Temporal Schedule (sopflow/cohorts/schedules.py; its workflow id is the
schedule's plus the scheduled time). It pins the newest deployed version of the SOP, then pages
through the cohort: an activity evaluates a page (ids and keys only, never the whole cohort in
one payload), another enrols it at the rule's pace. Every enrolment carries a business key (SOP +
contact + occurrence), so a retried page, a catch-up or a second trigger enrols nobody twice.
A big cohort continues as new every CONTINUE_EVERY pages, carrying its cursor and totals.

Deterministic by construction: no I/O, clock or zone arithmetic here (the activities do it).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from sopflow.cohorts.contracts import (
        BeginInput,
        Begun,
        CohortProgress,
        CohortRunInput,
        CohortRunResult,
        CohortTotals,
        EnrolInput,
        Page,
        PageInput,
    )

# Set by Temporal on every workflow a schedule starts (a trigger: the time it was triggered).
SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
CONTINUE_EVERY = 20  # pages per run (~10,000 contacts): a short history however big the cohort
# Store queries and Temporal starts, all idempotent: retried, a bounded number of times.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)


@workflow.defn(name="CohortRun")
class CohortRun:
    @workflow.run
    async def run(self, params: CohortRunInput) -> CohortRunResult:
        progress = params.progress
        if progress is None:
            scheduled = (
                params.scheduled_at
                or workflow.info().typed_search_attributes.get(SCHEDULED_AT)
                or workflow.now()
            )
            begun = await workflow.execute_activity(
                "sopflow.cohort_begin",
                BeginInput(sop_id=params.sop_id, rule=params.rule, scheduled_at=scheduled),
                result_type=Begun,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=STEP_RETRY,
            )
            if begun.digest is None:
                workflow.logger.warning(
                    "cohort of %s: nothing to do: %s", params.sop_id, begun.reason
                )
                return CohortRunResult(
                    sop_id=params.sop_id,
                    occurrence=begun.occurrence,
                    totals=CohortTotals(),
                    skipped_reason=begun.reason,
                )
            progress = CohortProgress(digest=begun.digest, occurrence=begun.occurrence)
        pages = 0
        while True:
            page = await workflow.execute_activity(
                "sopflow.cohort_page",
                PageInput(
                    sop_id=params.sop_id,
                    digest=progress.digest,
                    rule=params.rule,
                    segment=params.segment,
                    occurrence=progress.occurrence,
                    cursor=progress.cursor,
                    limit=params.page_size,
                ),
                result_type=Page,
                start_to_close_timeout=timedelta(minutes=10),  # an RFM segment ranks everyone
                retry_policy=STEP_RETRY,
            )
            totals = progress.totals.plus(page.totals)
            if page.members:
                pace = params.rule.max_per_second
                totals = totals.plus(
                    await workflow.execute_activity(
                        "sopflow.cohort_enrol",
                        EnrolInput(
                            sop_id=params.sop_id,
                            digest=progress.digest,
                            occurrence=progress.occurrence,
                            members=page.members,
                            max_per_second=pace,
                        ),
                        result_type=CohortTotals,
                        # Held while the workers catch up (heartbeating): time is generous.
                        start_to_close_timeout=timedelta(seconds=len(page.members) / pace)
                        + timedelta(minutes=30),
                        heartbeat_timeout=timedelta(minutes=2),
                        retry_policy=STEP_RETRY,
                    )
                )
            progress = progress.model_copy(update={"cursor": page.cursor, "totals": totals})
            if page.cursor is None:
                return CohortRunResult(
                    sop_id=params.sop_id, occurrence=progress.occurrence, totals=totals
                )
            pages += 1
            if pages >= CONTINUE_EVERY or workflow.info().is_continue_as_new_suggested():
                following = progress.model_copy(update={"generation": progress.generation + 1})
                workflow.continue_as_new(params.model_copy(update={"progress": following}))
