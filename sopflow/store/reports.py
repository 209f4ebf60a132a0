"""Adherence scores recomputed from the event log (sopflow.compliance.adherence does the
scoring), kept per run in `run_verdicts` (store/verdicts.py) while the run's inputs stay the
same. Runs are streamed in workflow-id order with the count and last id of their step events and
judged a batch at a time: the batch's kept verdicts are looked up, and a run whose verdict is
missing or stale has its step events read and is rescored, its new verdict kept. Memory stays
flat however many runs a report covers; a report over runs that did not change reads no step
event at all."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Engine,
    Select,
    String,
    and_,
    any_,
    case,
    func,
    literal,
    select,
)

from sopflow.compliance.adherence import (
    DETAIL_ACTIONS,
    Grouping,
    Report,
    RunFacts,
    RunScore,
    StepRow,
    score_run,
)
from sopflow.errors import InvalidContactError, NotFoundError, SopflowError
from sopflow.limits import year_problem
from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import Command
from sopflow.sop.values import parse_duration
from sopflow.store import verdicts
from sopflow.store.models import Contact, Run, RunVerdict, StepEvent
from sopflow.store.repository import Store, event_fields
from sopflow.store.reps import RepDirectory

_BATCH = 1_000  # runs per batch: the stale ones' events are read with an IN list of their ids
# ids per IN list: with 1,000 (5% of 20k runs) PostgreSQL scanned the whole events table for
# each list; up to ~250 it looks each run up in the (workflow_id, executed_at) index.
_LOOKUP = 200
_EVENT_COLUMNS = (
    StepEvent.id,
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
    # Only the records whose detail the scorer reads: decoding every event's JSON was a third
    # of the scorer's pass (py-spy, bench_reports).
    case(
        (and_(StepEvent.kind == "record", StepEvent.action.in_(DETAIL_ACTIONS)), StepEvent.detail)
    ).label("detail"),
)


def _runs_query(
    since: datetime | None, sop: str | None, workflow_ids: Collection[str] | None
) -> Select[Any]:
    """The runs with what their score depends on, and their step events' count and last id
    (aggregated in SQL over the same runs: no event row leaves the database). Their kept
    verdicts are read a batch at a time (Scores._judge), not joined here: a cursor is planned
    once, and on a first report `run_verdicts` is empty when it is planned and then filled
    while it is read — PostgreSQL scanned the whole table again for every run."""
    counted = select(
        StepEvent.workflow_id,
        func.count().label("events"),
        func.max(StepEvent.id).label("last_event"),
    ).group_by(StepEvent.workflow_id)
    if since is not None or sop is not None:
        joined = counted.join(Run, Run.workflow_id == StepEvent.workflow_id)
        counted = _filtered(joined, since, sop, None)
    if workflow_ids is not None:
        # On the events' own column: PostgreSQL carries an equality across a join, not an IN,
        # and took a list of ids on `runs` as a reason to read every event.
        counted = counted.where(StepEvent.workflow_id.in_(workflow_ids))
    events = counted.subquery()
    query = (
        select(
            Run.workflow_id,
            Run.sop_id,
            Run.version,
            Run.digest,
            Run.status,
            Contact.phone,
            Contact.timezone,
            Contact.opted_out_at,
            events.c.events,
            events.c.last_event,
        )
        .outerjoin(Contact, Contact.id == Run.contact_id)
        .outerjoin(events, events.c.workflow_id == Run.workflow_id)
        .order_by(Run.workflow_id)
    )
    return _filtered(query, since, sop, workflow_ids)


def _filtered(
    query: Select[*tuple[Any, ...]],
    since: datetime | None,
    sop: str | None,
    workflow_ids: Collection[str] | None,
) -> Select[*tuple[Any, ...]]:
    if since is not None:
        query = query.where(Run.enrolled_at >= since)
    if sop is not None:
        query = query.where(Run.sop_id == sop)
    if workflow_ids is not None:
        query = query.where(Run.workflow_id.in_(workflow_ids))
    return query


def _facts(run: Any, zones: list[str]) -> RunFacts:
    """What the run's score depends on besides its step events (`run`: a row of _runs_query)."""
    finished = run.status == "finished"
    return RunFacts(run.workflow_id, run.sop_id, run.version, finished, zones, run.opted_out_at)


def _step_row(row: Any) -> StepRow:
    """A row of _EVENT_COLUMNS as the scorer reads it (the detail left out is empty)."""
    fields = (*row[2:13], row.detail or {})
    return StepRow(*fields)


def _kept(run: Any, stored: tuple[str, str] | None) -> verdicts.Verdict | None:
    """The run's kept verdict (`stored`: its basis and verdict) if its basis still holds
    (`run`: a row of _runs_query)."""
    if stored is None or stored[0] != _basis(run, run.events or 0, run.last_event or 0):
        return None
    try:
        return verdicts.load(stored[1])
    except (ValueError, TypeError):  # a damaged row: a cache, so rescore and overwrite it
        return None


def _basis(run: Any, events: int, last_event: int) -> str:
    finished = run.status == "finished"
    return verdicts.basis(
        run.digest, finished, run.phone, run.timezone, run.opted_out_at, events, last_event
    )


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
        query = _runs_query(since, sop, workflow_ids)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=_BATCH).execute(
                query
            )
            for batch in result.partitions():
                yield from self._judge(batch)

    def _judge(self, batch: Sequence[Any]) -> Iterator[RunScore]:
        """A batch of runs' scores, in the batch's order: kept verdicts whose basis still
        holds, the others rescored from their step events and kept."""
        ids = [run.workflow_id for run in batch]
        query = select(RunVerdict.workflow_id, RunVerdict.basis, RunVerdict.verdict)
        with self.engine.connect() as connection:
            lookup = query.where(self._one_of(RunVerdict.workflow_id, ids))
            rows = connection.execute(lookup).all()
            stored = {workflow_id: (basis, verdict) for workflow_id, basis, verdict in rows}
        kept = [_kept(run, stored.get(run.workflow_id)) for run in batch]
        stale = [run for run, found in zip(batch, kept, strict=True) if found is None]
        fresh = self._rescore(stale)
        for run, found in zip(batch, kept, strict=True):
            if found is None:
                yield fresh[run.workflow_id]
            else:
                facts = _facts(run, found.zones)
                yield RunScore(facts, found.items, found.violations, found.variant)

    def _one_of(self, column: Any, ids: list[str]) -> ColumnElement[bool]:
        """`column IN ids`; on PostgreSQL as `= ANY(array)`, one parameter: psycopg parsing
        a statement with 1,000 placeholders took longer than PostgreSQL answering it."""
        match self.engine.dialect.name:
            case "postgresql":
                found: ColumnElement[bool] = column == any_(literal(ids, ARRAY(String)))
                return found
            case _:
                listed: ColumnElement[bool] = column.in_(ids)
                return listed

    def _rescore(self, stale: Sequence[Any]) -> dict[str, RunScore]:
        if not stale:
            return {}
        ids = [run.workflow_id for run in stale]
        events: dict[str, list[Any]] = defaultdict(list)
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _LOOKUP):
                query = (
                    select(*_EVENT_COLUMNS)
                    .where(self._one_of(StepEvent.workflow_id, ids[start : start + _LOOKUP]))
                    .order_by(StepEvent.workflow_id, StepEvent.id)
                )
                for row in connection.execute(query).all():  # at once: not row by row
                    events[row.workflow_id].append(row)
        fresh: dict[str, RunScore] = {}
        kept: list[dict[str, Any]] = []
        for run in stale:
            rows = events.get(run.workflow_id, [])
            plan = self._plan(run.digest)
            contact = {"phone": run.phone, "timezone": run.timezone}
            try:
                zones, _ = clock.contact_zones(contact, plan.sop.policy.timezone)
            except InvalidContactError:
                zones = []
            score = score_run(plan, _facts(run, zones), map(_step_row, rows))
            fresh[run.workflow_id] = score
            # The basis of the events scored (read after the run's row: maybe newer than it).
            found = _basis(run, len(rows), rows[-1].id if rows else 0)
            kept.append(
                {"workflow_id": run.workflow_id, "basis": found, "verdict": verdicts.dump(score)}
            )
        with self.engine.begin() as connection:
            verdicts.save(connection, kept)
        return fresh

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
