"""One Temporal Schedule per cohort rule (never one per contact), kept in step with the deployed
plans: `CohortSchedules.sync` creates the schedule of every newest plan with `entry.schedule`,
updates one whose rule or segment changed, and deletes one whose rule went.

Why a reconciler and not a step of deploy: SOPs are deployed three ways (`sopflow sop deploy`,
`sopflow up` at start, the upkeep's redeploy of edited files), and all three end in the store;
the worker's upkeep runs `sync` against the store (at start, then every SYNC_EVERY), so whatever
deployed a plan, its schedule follows, and one deployed while Temporal was down, or a schedule
deleted by hand, is put right at the next pass. Several workers may sync at once: every step is
idempotent. A schedule paused in Temporal's UI stays paused across updates (its state is kept).

Policies, the same for every rule:
- overlap BUFFER_ONE: a fire that comes while the last occurrence's fan-out is still enrolling
  (a big cohort at its pace) waits for it, and at most one waits. SKIP would lose that
  occurrence's cohort; ALLOW_ALL would run two fan-outs over the same contacts at once (the keys
  keep them to one enrolment each, but the pace would double); BUFFER_ALL could pile up after
  an outage.
- catch-up window 1 day (LOOKBACK): fires missed while the server was down or the worker away
  run late if they are less than a day old; an older Monday campaign is not sent on Thursday.
  A contact-date rule also looks a day back in every run, so a contact whose date fell in a
  lost hour is enrolled by the next run that comes.
- A cron rule fires at its times in its zone (as calendars, built from the parsed cron, so
  Temporal and sopflow read the expression alike); a contact-date rule fires every 15 minutes
  in UTC, which reaches every zone's quarter hour, and the fan-out picks the contacts due.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import assert_never

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from sopflow.cohorts.contracts import CohortRunInput
from sopflow.cohorts.cron import Cron, parse_cron
from sopflow.cohorts.occurrences import CONTACT_DATE_EVERY, LOOKBACK
from sopflow.segmenting.files import SEGMENTS_DIR, folder_segments
from sopflow.segmenting.schema import Segment
from sopflow.sop.plan import Plan, canonical_json
from sopflow.sop.schema import ContactDateSchedule, CronSchedule
from sopflow.store.repository import Store

log = logging.getLogger("sopflow.cohorts")
WORKFLOW = "CohortRun"
OVERLAP = ScheduleOverlapPolicy.BUFFER_ONE
CATCHUP_WINDOW = LOOKBACK
SYNC_EVERY = timedelta(seconds=10)  # as the upkeep's redeploy: an edit is live within seconds
_FORMAT = 1  # bump when what a schedule holds changes: every schedule is then updated
_SOP_ID = re.compile(r"[a-z][a-z0-9_]*")  # schema.Identifier


def schedule_id(task_queue: str, sop_id: str) -> str:
    """`cohort:{task queue}:{sop}`: one per rule; the queue keeps deployments sharing a
    namespace apart. The fan-outs it starts are this id plus the scheduled time."""
    return f"cohort:{task_queue}:{sop_id}"


def _ranges(values: frozenset[int]) -> list[ScheduleRange]:
    """Consecutive runs of `values` as Temporal's inclusive ranges."""
    ranges: list[ScheduleRange] = []
    for value in sorted(values):
        if ranges and ranges[-1].end == value - 1:
            ranges[-1] = ScheduleRange(ranges[-1].start, value)
        else:
            ranges.append(ScheduleRange(value, value))
    return ranges


def calendars(cron: Cron) -> list[ScheduleCalendarSpec]:
    """The cron as Temporal calendars. A calendar matches when every field does, so cron's
    "either day field" (both restricted) is two calendars, one per day field."""

    def calendar(days: frozenset[int], weekdays: frozenset[int]) -> ScheduleCalendarSpec:
        return ScheduleCalendarSpec(
            second=[ScheduleRange(0)],
            minute=_ranges(cron.minutes),
            hour=_ranges(cron.hours),
            day_of_month=_ranges(days),
            month=_ranges(cron.months),
            day_of_week=_ranges(weekdays),
            comment=cron.text,
        )

    every_day, every_weekday = frozenset(range(1, 32)), frozenset(range(7))
    if cron.any_day or cron.any_weekday:
        return [calendar(cron.days, cron.weekdays)]
    return [calendar(cron.days, every_weekday), calendar(every_day, cron.weekdays)]


def describe(rule: CronSchedule | ContactDateSchedule) -> str:
    """The rule in a few words (the schedule's note in Temporal's UI)."""
    among = f" among segment {rule.segment}" if rule.segment else ""
    match rule:
        case CronSchedule():
            return f"cron '{rule.cron}' in {rule.timezone}{among}"
        case ContactDateSchedule():
            every = "the anniversary of" if rule.annual else "the date in"
            return f"{every} contact.{rule.contact_date} at {rule.at:%H:%M} local{among}"
        case _:
            assert_never(rule)


def desired(plan: Plan, segment: Segment | None, task_queue: str) -> Schedule:
    """The schedule of `plan`'s rule (which it must have)."""
    rule = plan.sop.entry.schedule
    assert rule is not None
    payload = {
        "format": _FORMAT,
        "rule": rule.model_dump(mode="json"),
        "segment": segment.model_dump(mode="json") if segment else None,
        "task_queue": task_queue,
    }
    fingerprint = hashlib.sha256(canonical_json(payload).encode()).hexdigest()
    match rule:
        case CronSchedule():
            spec = ScheduleSpec(
                calendars=calendars(parse_cron(rule.cron)), time_zone_name=rule.timezone
            )
        case ContactDateSchedule():
            spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=CONTACT_DATE_EVERY)])
        case _:
            assert_never(rule)
    run_input = CohortRunInput(
        sop_id=plan.sop.id, rule=rule, segment=segment, fingerprint=fingerprint
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW,
            run_input,
            id=schedule_id(task_queue, plan.sop.id),
            task_queue=task_queue,
            static_summary=f"cohort of {plan.sop.id}",
        ),
        spec=spec,
        policy=SchedulePolicy(overlap=OVERLAP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(note=f"sopflow: {plan.sop.id}: {describe(rule)}"),
    )


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # rules left as they were, and why


class CohortSchedules:
    """The cohort schedules of one task queue; `segments_dir`: where rules' segments are read
    (segments/ of the working directory, as the gateway and the CLI read them)."""

    def __init__(
        self, client: Client, store: Store, task_queue: str, segments_dir: Path = SEGMENTS_DIR
    ) -> None:
        self.client, self.store, self.task_queue = client, store, task_queue
        self.segments_dir = segments_dir
        self._problems: set[str] = set()  # logged once each, not at every pass

    def _ours(self, sid: str) -> bool:
        """A cohort schedule of this task queue (another queue may have a longer name: "a:b")."""
        prefix = schedule_id(self.task_queue, "")
        return sid.startswith(prefix) and _SOP_ID.fullmatch(sid.removeprefix(prefix)) is not None

    async def _fingerprint(self, action: object) -> str | None:
        if not isinstance(action, ScheduleActionStartWorkflow) or not action.args:
            return None
        try:
            [held] = await self.client.data_converter.decode(
                list(action.args),  # raw payloads when described
                [CohortRunInput],
            )
        except (ValueError, TypeError, RuntimeError):  # an older format, or not ours: rewrite
            return None
        return held.fingerprint if isinstance(held, CohortRunInput) else None

    async def _put(self, sid: str, want: Schedule, report: SyncReport) -> None:
        """Create the schedule, or update it if what it holds differs (keeping its state)."""
        assert isinstance(want.action, ScheduleActionStartWorkflow)
        [run_input] = want.action.args
        assert isinstance(run_input, CohortRunInput)
        wanted = run_input.fingerprint
        changed = False

        async def update(given: ScheduleUpdateInput) -> ScheduleUpdate | None:
            nonlocal changed
            current = given.description.schedule
            changed = await self._fingerprint(current.action) != wanted
            return ScheduleUpdate(replace(want, state=current.state)) if changed else None

        try:
            await self.client.get_schedule_handle(sid).update(update)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            try:
                await self.client.create_schedule(sid, want)
            except ScheduleAlreadyRunningError:  # another worker created it a moment ago
                report.unchanged.append(sid)
                return
            report.created.append(sid)
            return
        (report.updated if changed else report.unchanged).append(sid)

    async def sync(self) -> SyncReport:
        """Make Temporal's cohort schedules those of the newest deployed plans."""
        report = SyncReport()
        plans = await asyncio.to_thread(self.store.latest_plans)
        ruled = [plan for plan in plans if plan.sop.entry.schedule is not None]
        segments: dict[str, Segment] = {}
        if any(plan.sop.entry.schedule and plan.sop.entry.schedule.segment for plan in ruled):
            segments, _ = await asyncio.to_thread(folder_segments, self.segments_dir, True)
        wanted: dict[str, Schedule] = {}
        kept: set[str] = set()
        for plan in ruled:
            rule = plan.sop.entry.schedule
            assert rule is not None
            sid = schedule_id(self.task_queue, plan.sop.id)
            if rule.segment is not None and rule.segment not in segments:
                kept.add(sid)  # its schedule, if any, keeps the segment it was given
                report.problems.append(
                    f"{plan.sop.id}: segment {rule.segment!r} is not a valid file in "
                    f"{self.segments_dir}: its schedule is left as it was"
                )
                continue
            segment = segments.get(rule.segment) if rule.segment else None
            wanted[sid] = desired(plan, segment, self.task_queue)
        for sid, want in wanted.items():
            await self._put(sid, want, report)
        listed = [entry.id async for entry in await self.client.list_schedules()]
        for sid in listed:
            if self._ours(sid) and sid not in wanted and sid not in kept:
                try:
                    await self.client.get_schedule_handle(sid).delete()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue  # another worker deleted it first
                report.deleted.append(sid)
        for name, sids in (("created", report.created), ("updated", report.updated)):
            for sid in sids:
                log.info("cohort schedule %s %s", sid, name)
        for sid in report.deleted:
            log.info("cohort schedule %s deleted: its rule is no longer deployed", sid)
        for problem in set(report.problems) - self._problems:
            log.error("cohort schedule: %s", problem)
        self._problems = set(report.problems)
        return report
