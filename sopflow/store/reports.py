"""Adherence scores recomputed from the event log (sopflow.compliance.adherence does the
scoring). Runs and their step events are streamed in workflow-id order and merged, one run in
memory at a time, so a report over millions of step events runs in flat memory."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from sopflow.compliance.adherence import Grouping, Report, RunFacts, RunScore, StepRow, score_run
from sopflow.errors import InvalidContactError, NotFoundError, SopflowError
from sopflow.limits import year_problem
from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import Command
from sopflow.sop.values import parse_duration
from sopflow.store.models import Contact, Run, StepEvent
from sopflow.store.repository import Store, event_fields
from sopflow.store.reps import RepDirectory

_BATCH = 5_000
_EVENT_COLUMNS = (
    StepEvent.workflow_id,
    StepEvent.key,
    StepEvent.step,
    StepEvent.kind,
    StepEvent.action,
    StepEvent.executed_at,
    StepEvent.planned_at,
    StepEvent.due_at,
    StepEvent.outcome,
    StepEvent.actor,
    StepEvent.channel,
    StepEvent.reason,
    StepEvent.detail,
)


def _runs_query(
    since: datetime | None, sop: str | None, workflow_ids: Collection[str] | None
) -> Select[Any]:
    query = (
        select(
            Run.workflow_id,
            Run.sop_id,
            Run.version,
            Run.digest,
            Run.status,
            Contact.phone,
            Contact.timezone,
            Contact.fields,
            Contact.opted_out_at,
        )
        .outerjoin(Contact, Contact.id == Run.contact_id)
        .order_by(Run.workflow_id)
    )
    return _filtered(query, since, sop, workflow_ids)


def _filtered(
    query: Select[Any],
    since: datetime | None,
    sop: str | None,
    workflow_ids: Collection[str] | None,
) -> Select[Any]:
    if since is not None:
        query = query.where(Run.enrolled_at >= since)
    if sop is not None:
        query = query.where(Run.sop_id == sop)
    if workflow_ids is not None:
        query = query.where(Run.workflow_id.in_(workflow_ids))
    return query


class Scores:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._plans: dict[str, Plan] = {}

    def _plan(self, digest: str) -> Plan:
        if digest not in self._plans:
            self._plans[digest] = Store(self.engine).plan(digest)
        return self._plans[digest]

    def runs(
        self,
        since: datetime | None = None,
        sop: str | None = None,
        workflow_id: str | None = None,
        workflow_ids: Collection[str] | None = None,
    ) -> Iterator[RunScore]:
        """Every matching run's score, in workflow-id order (`workflow_ids`: those runs only, e.g.
        a page of a listing)."""
        if workflow_id is not None:
            workflow_ids = [workflow_id]
        events_query = _filtered(
            select(*_EVENT_COLUMNS)
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .order_by(StepEvent.workflow_id, StepEvent.id),
            since,
            sop,
            workflow_ids,
        )
        options = {"stream_results": True, "yield_per": _BATCH}
        with Session(self.engine) as run_session, Session(self.engine) as event_session:
            runs = run_session.execute(
                _runs_query(since, sop, workflow_ids), execution_options=options
            )
            events = iter(event_session.execute(events_query, execution_options=options))
            pending = next(events, None)
            # Both streams are in the database's order of workflow ids (its collation, not
            # Python's), and every event's run is in the run stream: equality is enough.
            for run in runs:
                rows: list[StepRow] = []
                while pending is not None and pending.workflow_id == run.workflow_id:
                    rows.append(StepRow(*pending[1:]))
                    pending = next(events, None)
                yield self._score(run, rows)

    def _score(self, run: Any, rows: list[StepRow]) -> RunScore:
        plan = self._plan(run.digest)
        contact = {**(run.fields or {}), "phone": run.phone, "timezone": run.timezone}
        try:
            zones, _ = clock.contact_zones(contact, plan.sop.policy.timezone)
        except InvalidContactError:
            zones = []
        facts = RunFacts(
            run.workflow_id,
            run.sop_id,
            run.version,
            run.status == "finished",
            zones,
            run.opted_out_at,
        )
        return score_run(plan, facts, rows)

    def run(self, workflow_id: str) -> RunScore:
        found = next(self.runs(workflow_id=workflow_id), None)
        if found is None:
            raise NotFoundError(f"unknown run {workflow_id!r}")
        return found

    def report(
        self, by: Grouping, since: datetime | None = None, sop: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per group: runs, items per status, violations, SLA, score."""
        teams = {r.id: r.team_id for r in RepDirectory(self.engine).reps() if r.team_id}
        report = Report(by, teams if by == "team" else None)
        for run in self.runs(since, sop):
            report.add(run)
        return report.rows()


def step_row(command: Command, actor: str | None = None) -> StepRow:
    """The step event the store writes for `command` (`actor`: the rep a task went to), as
    scoring reads it: for scoring commands that were never stored (simulations, tests)."""
    fields = event_fields(command) | ({"actor": actor} if actor else {})
    return StepRow(key=command.key, step=command.step, executed_at=command.at, **fields)


def run_score_view(score: RunScore) -> dict[str, Any]:
    """A run's score for the API and the CLI: the score, the SLA, each item and each loss."""
    return {
        "run_id": score.facts.workflow_id,
        "sop": score.facts.sop,
        "version": score.facts.version,
        "variant": score.variant,
        "score": score.score,
        "sla_met": score.sla_met,
        "items": [
            {
                "step": i.step,
                "key": i.key,
                "kind": i.kind,
                "actor": i.actor,
                "status": i.status,
                "due_at": i.due_at.isoformat() if i.due_at else None,
                "done_at": i.done_at.isoformat() if i.done_at else None,
                "late_by_seconds": i.late_by.total_seconds() if i.late_by else None,
                "weight": i.weight,
                "reason": i.reason,
            }
            for i in score.items
        ],
        "violations": [
            {
                "step": v.step,
                "actor": v.actor,
                "at": v.at.isoformat(),
                "rule": v.rule,
                "reason": v.reason,
            }
            for v in score.violations
        ],
        "losses": score.losses(),
    }


def parse_since(text: str | None, now: datetime, name: str = "since") -> datetime | None:
    """`--since`/`since=`: an ISO date or date-time (naive = UTC), or a span back from now
    such as 7d or 12h; its year must be 1900 to 2200 (sopflow.limits), as any client date's.
    `name`: the parameter's name in the error (the listings' `until` takes the same forms)."""
    if not text:
        return None
    hint = "use an ISO date (2026-11-01), a date-time, or a span like 7d"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = now - parse_duration(text)
        except (ValueError, OverflowError, SopflowError):  # OverflowError: a span of eons
            raise SopflowError(f"{name} {text!r}: {hint}") from None
    if why := year_problem(parsed):
        raise SopflowError(f"{name} {text!r}: {why}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
