"""The activities of a cohort fan-out (workflows/cohort_run.py): thin wrappers over
sopflow.cohorts, which hold the logic. Only sopflow/runtime.py and tests build them.

    sopflow.cohort_begin  the plan to enrol into and the occurrence the run enrols for
    sopflow.cohort_page   one page of the cohort: ids and their enrolment keys
    sopflow.cohort_enrol  one page's enrolments started, paced; heartbeats per start
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity

from sopflow.cohorts.contracts import BeginInput, Begun, CohortTotals, EnrolInput, Page, PageInput
from sopflow.cohorts.enrol import CohortEnroller
from sopflow.cohorts.occurrences import occurrence
from sopflow.cohorts.select import cohort_page
from sopflow.errors import UnknownSopError
from sopflow.sop.plan import Plan
from sopflow.store.repository import Store


class CohortActivities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.enroller = CohortEnroller(store)
        self._plans: dict[str, Plan] = {}  # by digest: a deployed version never changes

    async def _plan(self, digest: str) -> Plan:
        if digest not in self._plans:
            self._plans[digest] = await asyncio.to_thread(self.store.plan, digest)
        return self._plans[digest]

    @activity.defn(name="sopflow.cohort_begin")
    async def begin(self, params: BeginInput) -> Begun:
        """The newest deployed version of the SOP, if its schedule is still this rule."""
        at = occurrence(params.rule, params.scheduled_at)
        try:
            plan = await asyncio.to_thread(self.store.latest_plan, params.sop_id)
        except UnknownSopError as exc:
            return Begun(occurrence=at, reason=str(exc))
        if plan.sop.entry.schedule != params.rule:  # redeployed since: the sync updates us
            return Begun(
                occurrence=at,
                reason=f"{plan.sop.id} v{plan.sop.version} no longer has this schedule",
            )
        self._plans[plan.digest] = plan
        return Begun(digest=plan.digest, occurrence=at)

    @activity.defn(name="sopflow.cohort_page")
    async def page(self, params: PageInput) -> Page:
        plan = await self._plan(params.digest)
        return await asyncio.to_thread(
            cohort_page,
            self.store.engine,
            params.rule,
            params.segment,
            plan.sop.policy,
            params.occurrence,
            params.cursor,
            params.limit,
        )

    @activity.defn(name="sopflow.cohort_enrol")
    async def enrol(self, params: EnrolInput) -> CohortTotals:
        plan = await self._plan(params.digest)
        totals = await self.enroller.enrol(
            activity.client(),
            activity.info().task_queue,
            plan,
            params.members,
            params.occurrence,
            params.max_per_second,
            activity.heartbeat,
        )
        activity.logger.info(
            "cohort of %s for %s: %s",
            plan.sop.id,
            params.occurrence.isoformat(),
            ", ".join(f"{k} {v}" for k, v in totals.model_dump().items() if v),
        )
        return totals

    def all(self) -> list[Any]:
        return [self.begin, self.page, self.enrol]
