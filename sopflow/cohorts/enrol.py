"""One page of a cohort enrolled through the steps an event's enrolment takes (the gateway's
intake): the contact checked against the SOP (`enrolment_for`), opted-out contacts skipped,
split arms assigned, the run started under its business key (`start_enrolment`), its row
recorded. What a schedule adds: the entry's conditions are read with a `schedule` event, and a
contact still running this SOP is left alone (a weekly campaign does not stack on last week's,
and the VIP year enrolled by its event is not doubled by its anniversary).

The pace: starts take turns at `max_per_second`, CONCURRENCY in flight, and hold while more
than about WINDOW of the runs started wait for a worker (Backpressure): each new run needs a
workflow task, and a cohort started faster than the workers take them up would queue every
other run of the task queue (a lead's first call, a timer due) behind it. The runs' rows are
written RECORD_EVERY at a time in one transaction (a row per start cost a SQLite write
transaction per enrolment; the run also writes its own row with its first record).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from temporalio.client import Client

from sopflow.cohorts.contracts import CohortTotals, Member
from sopflow.cohorts.select import contacts_by_id, running_or_enrolled
from sopflow.enrolment import Enrolment, enrolment_for, start_enrolment, workflow_id
from sopflow.errors import InvalidContactError, SopflowError
from sopflow.segmenting.files import SEGMENTS_DIR
from sopflow.segmenting.membership import page_entry_answers
from sopflow.sop.engine import entry_holds
from sopflow.sop.plan import Plan
from sopflow.sop.splits import split_steps
from sopflow.store.contacts import contact_view
from sopflow.store.models import Run
from sopflow.store.repository import Store, run_row
from sopflow.store.rows import insert_if_new
from sopflow.store.splits import SplitAssignments

log = logging.getLogger("sopflow.cohorts")
TRIGGER = "schedule"  # the run's trigger event, as `lead.created` is for an event's
CONCURRENCY = 16  # starts in flight: what the dev server on SQLite serves best (README)
RECORD_EVERY = 50  # runs' rows per store transaction
WINDOW = 4 * CONCURRENCY  # runs started and not yet taken up by a worker, at most about
POLL = 0.1  # seconds between looks at a run while holding
_START_EVENTS = 3  # started, task scheduled, task started: taken up once its task is done
_LOGGED_PER_PAGE = 20  # contacts that cannot run the SOP, named in the log per page


class Pacer:
    """Hands out start times `1 / per_second` apart: at most `per_second` starts a second,
    however many wait."""

    def __init__(self, per_second: float, now: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.now = 1.0 / per_second, now
        self.next = now()

    async def wait(self) -> None:
        now = self.now()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Backpressure:
    """Keeps the runs a page started that no worker has taken up yet to about `window`: every
    `step` starts, the run started `window` starts back must have had its first workflow task
    done (a history longer than the three events of a start) before more start. Read from the
    run itself, which is current (the task queue's statistics lag by seconds), so the cohort
    goes as fast as the workers take its runs, never far ahead of them."""

    def __init__(
        self,
        client: Client,
        alive: Callable[[], None],
        window: int = WINDOW,
        step: int = CONCURRENCY,
        poll: float = POLL,
    ) -> None:
        self.client, self.alive = client, alive
        self.window, self.step, self.poll = window, step, poll
        self.started: list[str] = []
        self.taken = -1  # index in `started` of the last run seen taken up
        self.lock = asyncio.Lock()
        self.held = 0.0  # seconds spent holding, for the log

    async def _taken_up(self, workflow_id: str) -> bool:
        described = await self.client.get_workflow_handle(workflow_id).describe()
        return (described.history_length or 0) > _START_EVENTS

    async def wait(self) -> None:
        async with self.lock:  # one look at a time; the other starts wait for its answer
            behind = len(self.started) - self.window
            if behind < 0 or behind - self.taken < self.step:
                return
            while not await self._taken_up(self.started[behind]):
                self.alive()  # a heartbeat: holding is progress, not a hang
                await asyncio.sleep(self.poll)
                self.held += self.poll
            self.taken = behind


class CohortEnroller:
    def __init__(self, store: Store, segments: Path = SEGMENTS_DIR) -> None:
        """`segments`: the folder of segment files the entry's conditions may name."""
        self.store, self.segments = store, segments
        self.splits = SplitAssignments(store.engine)

    def _triage(
        self, plan: Plan, members: Sequence[Member], trigger_data: dict[str, Any]
    ) -> tuple[list[Enrolment], CohortTotals]:
        """The enrolments to start, and what became of the others (CPU and two queries)."""
        sop = plan.sop
        engine = self.store.engine
        ids = [m.id for m in members]
        keys = [workflow_id(sop.id, m.id, m.key) for m in members]
        rows = contacts_by_id(engine, ids)
        running, started = running_or_enrolled(engine, sop.id, ids, keys)
        totals, ready, unfit = CohortTotals(), [], []
        answers, unanswered = self._segment_answers(plan, ids, trigger_data)
        for member, key in zip(members, keys, strict=True):
            row = rows.get(member.id)
            if row is None:  # contacts are never deleted; a member that vanished is unfit
                totals.invalid += 1
                unfit.append(f"{member.id}: not in the store")
            elif row.opted_out_at is not None:  # the events API skips them the same way
                totals.opted_out += 1
            elif key in started:
                totals.already += 1
            elif member.id in running:
                totals.running += 1
            elif member.id in unanswered:
                totals.invalid += 1
                unfit.append(f"{member.id}: {unanswered[member.id]}")
            elif not entry_holds(
                plan, TRIGGER, contact_view(row), trigger_data, answers[member.id]
            ):
                totals.not_matching += 1
            else:
                try:
                    ready.append(enrolment_for(plan, contact_view(row), member.key))
                except InvalidContactError as exc:
                    totals.invalid += 1
                    unfit.append(str(exc))
        for why in unfit[:_LOGGED_PER_PAGE]:
            log.warning("cohort of %s: not enrolled: %s", sop.id, why)
        if len(unfit) > _LOGGED_PER_PAGE:
            log.warning("cohort of %s: %d more not enrolled", sop.id, len(unfit) - _LOGGED_PER_PAGE)
        return ready, totals

    def _segment_answers(
        self, plan: Plan, ids: Sequence[str], trigger_data: dict[str, Any]
    ) -> tuple[dict[str, dict[str, bool]], dict[str, str]]:
        """The store's answers for the segments the entry names, per member, as of the
        occurrence; a segment no file defines any more leaves every member unanswered (why)."""
        as_of = datetime.fromisoformat(trigger_data["occurrence"])
        try:
            found = page_entry_answers(self.store.engine, self.segments, plan, ids, as_of)
        except SopflowError as exc:
            return {}, {i: f"entry condition: {exc}" for i in ids}
        return found, {}

    def _record_runs(self, rows: Sequence[dict[str, Any]]) -> None:
        """The runs' rows, as `Store.start_run` writes one, in one transaction."""
        with Session(self.store.engine) as session, session.begin():
            for row in rows:
                insert_if_new(session, Run, row, Run.workflow_id)

    async def enrol(
        self,
        client: Client,
        task_queue: str,
        plan: Plan,
        members: Sequence[Member],
        occurrence: datetime,
        max_per_second: int,
        progress: Callable[[int], None] = lambda _: None,
    ) -> CohortTotals:
        """Start the page's enrolments at most `max_per_second`; `progress(n)` after each start."""
        trigger_data = {"occurrence": occurrence.astimezone(UTC).isoformat()}
        ready, totals = await asyncio.to_thread(self._triage, plan, members, trigger_data)
        pacer, slots = Pacer(max_per_second), asyncio.Semaphore(CONCURRENCY)
        has_splits = bool(split_steps(plan))
        unrecorded: list[dict[str, Any]] = []
        done = 0
        backpressure = Backpressure(client, lambda: progress(done))

        async def record() -> None:
            rows = unrecorded[:]
            unrecorded.clear()
            if rows:
                await asyncio.to_thread(self._record_runs, rows)

        async def start(enrolment: Enrolment) -> None:
            nonlocal done
            async with slots:
                await backpressure.wait()
                await pacer.wait()
                contact_id = enrolment.contact["id"]
                variants = (
                    await asyncio.to_thread(self.splits.assign, plan, contact_id)
                    if has_splits
                    else {}
                )
                started = await start_enrolment(
                    client, enrolment, TRIGGER, trigger_data, task_queue, variants
                )
                if started.created:
                    backpressure.started.append(enrolment.workflow_id)
                    unrecorded.append(
                        run_row(
                            enrolment.workflow_id,
                            started.run_id,
                            plan.sop.id,
                            started.version,
                            plan.digest,
                            contact_id,
                            datetime.now(UTC),
                        )
                    )
                    totals.enrolled += 1
                else:
                    totals.already += 1
                if len(unrecorded) >= RECORD_EVERY:
                    await record()
                done += 1
                progress(done)

        # One failure cancels the rest: the activity's retry redoes them (under the same keys).
        async with asyncio.TaskGroup() as group:
            for enrolment in ready:
                group.create_task(start(enrolment))
        await record()
        if backpressure.held:
            log.info("cohort of %s: held %.0f s for the workers", plan.sop.id, backpressure.held)
        return totals
