"""What the supervisors' dashboard asks the store besides the listings (store/listing.py): the
overview's figures over a period, the step events behind a figure (a keyset page), a run's
timeline with the rule of each deferral and block.

Every query takes the viewer's scope: `teams` None sees everything (ops); a set of team ids
sees the runs of those teams only (a run with a task assigned to one of their reps, as the
listings' `team` filter means it), enforced here in SQL, not in the links.

Figures the store can count are counted in SQL (enrolments, touches by channel and day, blocks
and deferrals by rule); figures only the scorer can judge (SLA met, violations, late tasks)
come from scoring the period's runs (compliance/adherence.py, via store.reports.Scores), so the
overview and the listings share one definition of each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from sopflow.compliance.adherence import RunScore, Violation
from sopflow.store.listing import (
    Page,
    after_cursor,
    collect_page,
    decode_cursor,
    of_teams,
    past_due,
)
from sopflow.store.models import Run, StepEvent
from sopflow.store.reports import Scores

Scope = frozenset[str] | None  # a supervisor's teams; None: everything (ops)
# The step events behind an overview figure: touches that went out, and touches held back.
EventKind = Literal["touch", "deferred", "blocked", "skipped"]
EVENT_KINDS: tuple[EventKind, ...] = ("touch", "deferred", "blocked", "skipped")
HELD = ("deferred", "blocked", "skipped")
TOUCHES = ("send", "call")  # step event kinds of touches sopflow makes itself
_SCORE_CHUNK = 500  # runs scored per query (an IN list of ids)
_SLACK = timedelta(days=1)


def _rule() -> ColumnElement[str]:
    """The rule that held a touch back, as the overview groups and the timeline shows it: the
    gate's rule when it named one (quiet_hours, frequency_cap, consent…); else `paused` for a
    deferral of a paused run (it has no `until`), else `window` (the SOP's send window)."""
    named = StepEvent.detail["rule"].as_string()
    return case(
        (and_(named.is_not(None), named != ""), named),
        (
            and_(StepEvent.action == "deferred", StepEvent.detail["until"].as_string().is_(None)),
            literal("paused"),
        ),
        else_=literal("window"),
    )


def _day(engine: Engine, column: Any) -> Any:
    """The UTC date of a timestamp column, as text YYYY-MM-DD, on SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite keeps UTC (models.UTCDateTime)


def _alive(period: Period) -> ColumnElement[bool]:
    """Runs that can have touches or held touches in the period. A run's commands are issued
    between its enrolment and its Finish (its last command: only `ignored` and failed-effect
    records come after it), so step events of the period are found through the runs alive in
    it and the (workflow_id, executed_at) index, not by reading every step event (there is no
    index on executed_at alone). The slack covers the gateway writing `enrolled_at` just after
    the workflow started; the executed_at conditions stay exact."""
    return and_(
        Run.enrolled_at < period.until + _SLACK,
        or_(Run.finished_at.is_(None), Run.finished_at >= period.since - _SLACK),
    )


def _in_scope(query: Any, teams: Scope) -> Any:
    """`query` (over runs, or joined with them) narrowed to the viewer's runs."""
    return query if teams is None else query.where(of_teams(Run.workflow_id, teams))


@dataclass(frozen=True)
class Period:
    """[since, until): runs enrolled, or step events executed, in it."""

    since: datetime
    until: datetime

    def days(self) -> list[date]:
        first, last = self.since.date(), (self.until - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass
class Judged:
    """The scorer's figures over the period's runs."""

    runs: int = 0
    sla_met: int = 0
    sla_judged: int = 0
    late_tasks: int = 0  # past their due time, as the listings' `late` (listing.past_due)
    late_runs: int = 0  # runs with such a task: the listings' `late=true`
    overdue_now: int = 0  # open tasks past their due time, whenever they were assigned
    violations: list[tuple[RunScore, Violation]] = field(default_factory=list)

    @property
    def sla_percent(self) -> float | None:
        return round(100 * self.sla_met / self.sla_judged, 1) if self.sla_judged else None


@dataclass(frozen=True)
class Figures:
    period: Period
    enrolments: list[tuple[str, int]]  # (SOP, runs enrolled), most first
    touches: list[tuple[str, str, int]]  # (day, channel, touches), by day then channel
    held: list[tuple[str, str, int]]  # (deferred|blocked|skipped, rule, count), most first
    judged: Judged

    @property
    def enrolled(self) -> int:
        return sum(count for _, count in self.enrolments)


class Overview:
    def __init__(self, engine: Engine, scores: Scores | None = None) -> None:
        self.engine = engine
        self.scores = scores or Scores(engine)

    # ------------------------------------------------------------ the overview's figures
    def figures(self, period: Period, teams: Scope, now: datetime) -> Figures:
        return Figures(
            period,
            self.enrolments(period, teams),
            self.touches(period, teams),
            self.held(period, teams),
            self.judge(period, teams, now),
        )

    def enrolments(self, period: Period, teams: Scope) -> list[tuple[str, int]]:
        count = func.count()
        query = (
            select(Run.sop_id, count)
            .where(Run.enrolled_at >= period.since, Run.enrolled_at < period.until)
            .group_by(Run.sop_id)
            .order_by(count.desc(), Run.sop_id)
        )
        with Session(self.engine) as session:
            rows = session.execute(_in_scope(query, teams)).all()
        return [(sop, n) for sop, n in rows]

    def touches(self, period: Period, teams: Scope) -> list[tuple[str, str, int]]:
        day = _day(self.engine, StepEvent.executed_at).label("day")
        query = (
            select(day, StepEvent.channel, func.count())
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .where(
                _alive(period),
                StepEvent.kind.in_(TOUCHES),
                StepEvent.executed_at >= period.since,
                StepEvent.executed_at < period.until,
            )
            .group_by(day, StepEvent.channel)
            .order_by(day, StepEvent.channel)
        )
        with Session(self.engine) as session:
            rows = session.execute(_in_scope(query, teams)).all()
        return [(d, channel or "(none)", n) for d, channel, n in rows]

    def held(self, period: Period, teams: Scope) -> list[tuple[str, str, int]]:
        rule, count = _rule().label("rule"), func.count()
        query = (
            select(StepEvent.action, rule, count)
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .where(
                _alive(period),
                StepEvent.kind == "record",
                StepEvent.action.in_(HELD),
                StepEvent.executed_at >= period.since,
                StepEvent.executed_at < period.until,
            )
            .group_by(StepEvent.action, rule)
            .order_by(count.desc(), StepEvent.action, rule)
        )
        with Session(self.engine) as session:
            rows = session.execute(_in_scope(query, teams)).all()
        return [(action, r, n) for action, r, n in rows]

    def judge(self, period: Period, teams: Scope, now: datetime) -> Judged:
        """The scorer's figures: over the runs enrolled in the period, and the open tasks past
        due now of any run (SQL finds the running runs with a task due before now, the scorer
        says which are still open). Each run is scored once; the cost grows with their number."""
        enrolled = select(Run.workflow_id).where(
            Run.enrolled_at >= period.since, Run.enrolled_at < period.until
        )
        due = (
            select(StepEvent.workflow_id)
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .where(Run.status == "running", StepEvent.kind == "assign", StepEvent.due_at < now)
            .distinct()
        )
        with Session(self.engine) as session:
            in_period = set(session.scalars(_in_scope(enrolled, teams)))
            overdue = set(session.scalars(_in_scope(due, teams)))
        judged = Judged()
        for score in self._scored(sorted(in_period | overdue)):
            judged.overdue_now += sum(
                i.kind == "task" and i.status == "pending" and past_due(i, now) for i in score.items
            )
            if score.facts.workflow_id not in in_period:
                continue
            judged.runs += 1
            if score.sla_met is not None:
                judged.sla_judged += 1
                judged.sla_met += score.sla_met
            late = sum(i.kind == "task" and past_due(i, now) for i in score.items)
            judged.late_tasks += late
            judged.late_runs += late > 0
            judged.violations += [(score, v) for v in score.violations]
        judged.violations.sort(key=lambda pair: pair[1].at, reverse=True)
        return judged

    def _scored(self, ids: Sequence[str]) -> Iterator[RunScore]:
        for start in range(0, len(ids), _SCORE_CHUNK):
            yield from self.scores.runs(workflow_ids=ids[start : start + _SCORE_CHUNK])

    # ------------------------------------------------------------ the events behind a figure
    def events(
        self,
        kind: EventKind,
        period: Period,
        teams: Scope,
        limit: int,
        cursor: str | None,
        channel: str | None = None,
        rule: str | None = None,
    ) -> Page:
        """Touches (of a channel) or held touches (by a rule) executed in the period, newest
        first, a keyset page at a time (cursors as the listings')."""
        label = _rule().label("rule")
        where: list[Any] = [
            _alive(period),
            StepEvent.executed_at >= period.since,
            StepEvent.executed_at < period.until,
        ]
        if kind == "touch":
            where.append(StepEvent.kind.in_(TOUCHES))
        else:
            where += [StepEvent.kind == "record", StepEvent.action == kind]
        if channel is not None:
            where.append(StepEvent.channel == channel)
        if rule is not None:
            where.append(_rule() == rule)
        query = _in_scope(
            select(StepEvent, Run.sop_id, Run.contact_id, label)
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .where(*where)
            .order_by(StepEvent.executed_at.desc(), StepEvent.id.desc()),
            teams,
        )

        def fetch(after: tuple[datetime, Any] | None, count: int) -> Sequence[Any]:
            keyed = query if after is None else query.where(after_cursor(*_EVENT_KEY, after))
            with Session(self.engine, expire_on_commit=False) as session:
                return session.execute(keyed.limit(count)).all()

        def judge(rows: Sequence[Any]) -> Iterator[tuple[tuple[datetime, Any], dict[str, Any]]]:
            for event, sop, contact, held_by in rows:
                row = {
                    "run_id": event.workflow_id,
                    "sop": sop,
                    "contact": contact,
                    "step": event.step,
                    "action": event.action,
                    "channel": event.channel,
                    "planned_at": event.planned_at,
                    "executed_at": event.executed_at,
                    "rule": None if kind == "touch" else held_by,
                    "reason": event.reason,
                }
                yield (event.executed_at, event.id), row

        start = decode_cursor("events", cursor, int) if cursor else None
        return collect_page("events", fetch, judge, limit, start, exact=True)

    # ------------------------------------------------------------ one run
    def timeline(self, run_id: str) -> list[tuple[StepEvent, str | None]]:
        """The run's step events in the order recorded, each deferral, block and skip with the
        rule that held it back (the overview's grouping, `_rule`)."""
        held = case((StepEvent.action.in_(HELD), _rule()), else_=None)
        query = select(StepEvent, held).where(StepEvent.workflow_id == run_id)
        with Session(self.engine, expire_on_commit=False) as session:
            return [(e, r) for e, r in session.execute(query.order_by(StepEvent.id))]


_EVENT_KEY = (StepEvent.executed_at, StepEvent.id)
