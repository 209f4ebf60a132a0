"""An SOP's funnel: per step, in the plan's order, how many runs reached it, how its tasks and
touches went, and how many runs ended there with which result; one column group per version.

The runs reported are the SOP's runs enrolled in the window (as `GET /api/v1/runs?sop=&since=&
until=`) that the principal may see. Per step and version:
- entries: runs with a step event at the step (the step did something: a touch, a task, a
  record; a wait step leaves none until its timer or event ends it);
- items: the scorer's items at the step (each task and touch attempt, a ladder's several);
  of them on time, overdue (past their due or planned time: done late, never done — an
  expired task, a failed send — or a task open after its due time: store.listing.past_due),
  skipped (excused: blocked or deferred by a rule or window, a missed ladder slot, a task the
  run ended before), open (pending, not due yet): on time + overdue + skipped + open = items;
- exits: runs that finished at the step, by result (an `end` step's result, or the engine's:
  cancelled, opted_out, completed…).
Entries and exits are SQL aggregates; the items' verdicts are the scorer's, one run at a time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from sqlalchemy import ColumnElement, Engine, func, literal_column, select
from sqlalchemy.orm import Session

from sopflow.compliance.adherence import Item
from sopflow.compliance.traced import Count, RepScope, Window, scored
from sopflow.errors import UnknownSopError
from sopflow.principals import Principal
from sopflow.sop.plan import Plan
from sopflow.store.listing import past_due
from sopflow.store.models import Run, SopVersion, StepEvent
from sopflow.store.reports import Scores

FINISH: ColumnElement[str] = literal_column("'finish'")


@dataclass
class _Cell:
    entries: int = 0
    items: int = 0
    on_time: int = 0
    overdue: int = 0
    skipped: int = 0
    open: int = 0
    exits: dict[str, int] = field(default_factory=dict)

    def judge(self, item: Item, now: datetime) -> None:
        self.items += 1
        if past_due(item, now):
            self.overdue += 1
            return
        match item.status:
            case "on_time":
                self.on_time += 1
            case "excused":
                self.skipped += 1
            case "pending":
                self.open += 1
            case "late" | "missed":  # past due: counted above
                raise AssertionError(item.status)
            case _:
                assert_never(item.status)


def deployed(engine: Engine, sop: str) -> list[Plan]:
    """Every deployed version of `sop`, oldest first; UnknownSopError (404) names it."""
    with Session(engine) as session:
        rows = session.scalars(
            select(SopVersion.plan).where(SopVersion.sop_id == sop).order_by(SopVersion.version)
        ).all()
        if not rows:
            known = list(session.scalars(select(SopVersion.sop_id).distinct()))
            raise UnknownSopError(sop, known)
    return [Plan.model_validate(plan) for plan in rows]


def step_order(plans: list[Plan]) -> list[tuple[str, str]]:
    """(step id, kind): the newest version's steps in its order, then steps only older versions
    have, newest first."""
    order: dict[str, str] = {}
    for plan in reversed(plans):
        for step in plan.sop.steps:
            order.setdefault(step.id, step.kind)
    return list(order.items())


def run_conditions(sop: str, window: Window, scope: RepScope) -> list[ColumnElement[bool]]:
    """The runs a per-SOP report covers: the SOP's, enrolled in the window, visible."""
    return [Run.sop_id == sop, *window.sql(Run.enrolled_at), scope.run()]


class Funnel:
    def __init__(self, engine: Engine, scores: Scores | None = None) -> None:
        self.engine = engine
        self.scores = scores or Scores(engine)

    def report(
        self, principal: Principal, sop: str, window: Window, now: datetime
    ) -> dict[str, Any]:
        plans = deployed(self.engine, sop)
        where = run_conditions(sop, window, RepScope.of(principal))
        cells: dict[tuple[int, str], _Cell] = defaultdict(_Cell)
        at_step = (Run.version, StepEvent.step)
        events = select(*at_step).join(Run, Run.workflow_id == StepEvent.workflow_id).where(*where)
        entries = events.add_columns(func.count(StepEvent.workflow_id.distinct())).group_by(
            *at_step
        )
        exits = (
            events.add_columns(StepEvent.outcome, func.count())
            .where(StepEvent.kind == FINISH)
            .group_by(*at_step, StepEvent.outcome)
        )
        runs = select(Run.version, func.count()).where(*where).group_by(Run.version)
        with Session(self.engine) as session:
            for version, step, count in session.execute(entries):
                cells[version, step].entries = count
            for version, step, result, count in session.execute(exits):
                cells[version, step].exits[result or "(none)"] = count
            run_counts = {version: count for version, count in session.execute(runs)}
        for score in scored(self.scores, select(Run.workflow_id).where(*where)):
            for item in score.items:
                cells[score.facts.version, item.step].judge(item, now)
        return self._view(sop, plans, cells, run_counts, window, now)

    def _view(
        self,
        sop: str,
        plans: list[Plan],
        cells: dict[tuple[int, str], _Cell],
        run_counts: dict[int, int],
        window: Window,
        now: datetime,
    ) -> dict[str, Any]:
        def runs(version: int, value: int, exact: bool = False, **extra: Any) -> dict[str, Any]:
            query = {"sop": sop, "version": version} | window.query() | extra
            return Count("runs", query, exact, value).view()

        def cell(plan: Plan, step: str) -> dict[str, Any] | None:
            if not plan.has_step(step):
                return None
            v, found = plan.sop.version, cells.get((plan.sop.version, step), _Cell())
            return {
                "version": v,
                "entries": runs(v, found.entries),
                "items": runs(v, found.items),
                "on_time": runs(v, found.on_time),
                "overdue": runs(v, found.overdue),
                "skipped": runs(v, found.skipped),
                "open": runs(v, found.open),
                "exits": {
                    result: runs(v, count, status="finished")
                    for result, count in sorted(found.exits.items())
                },
            }

        return {
            "sop": sop,
            "since": window.since.isoformat() if window.since else None,
            "until": window.until.isoformat() if window.until else None,
            "as_of": now.isoformat(),
            "versions": [
                {
                    "version": p.sop.version,
                    "digest": p.digest,
                    "runs": runs(p.sop.version, run_counts.get(p.sop.version, 0), exact=True),
                }
                for p in plans
            ],
            "steps": [
                {"step": step, "kind": kind, "columns": [cell(p, step) for p in plans]}
                for step, kind in step_order(plans)
            ],
        }
