"""Runs and tasks listed newest first, filtered, a page at a time (GET /api/v1/runs and /tasks).

SQL narrows and orders the candidates (SOP, version, run status, rep, team, dates). What only
the scorer knows — a task's status, whether it is past its due time, whether a rep still holds
it — is judged by the scorer (`Scores`, the compliance report's) on each candidate, so "late"
has one definition. Pages are keyset pages: the opaque cursor is the sort key of the last row
given, so a listing stays stable while runs are added and costs the same on page 1 and page
1,000; there is no total (it would mean scoring every run). A request judges at most SCAN_LIMIT
candidates: when a scorer-judged filter (late, waiting_for, a task status) matches few of them,
a page can come back short with a `next_cursor` to go on from.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, assert_never

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from sopflow.compliance.adherence import SYSTEM, Item, RunScore, Status
from sopflow.errors import SopflowError
from sopflow.store.models import Rep, Run, StepEvent
from sopflow.store.reports import Scores
from sopflow.store.views import run_summary

RunStatus = Literal["running", "finished"]  # runs.status: a Finish record closes a run
# What a running run waits for, as far as its step events tell: a rep's outcome on an open
# task, a supervisor's resume, a touch's window (the last event is a deferral); "unknown": a
# wait step's timer, a contact's event or a carrier's answer, which the store does not record.
WaitingFor = Literal["rep", "resume", "window", "unknown"]
TaskStatus = Status  # the scorer's: on_time, late, missed, excused, pending (still open)
MAX_PAGE = 200
DEFAULT_PAGE = 50
SCAN_LIMIT = 2_000  # candidates a request may judge with the scorer (~1.5 s here, measured)
_CHUNK = 200  # candidates fetched and scored at a time when the scorer filters
_CONTROLS = ("paused", "resumed")

Key = tuple[datetime, Any]  # a row's sort key: (time, id), newest first
Row = TypeVar("Row")


def past_due(item: Item, now: datetime) -> bool:
    """A task past its due time: its outcome came late or it expired unreported (the scorer's
    `late` and `missed`), or it is still open after its due time (overdue now, as the engine
    records `overdue`)."""
    match item.status:
        case "late" | "missed":
            return True
        case "pending":
            return item.due_at is not None and item.due_at < now
        case "on_time" | "excused":
            return False
        case _:
            assert_never(item.status)


@dataclass(frozen=True)
class Filters:
    """What both listings filter on. `since`/`until`: enrolled (runs) or assigned (tasks) at or
    after `since` and before `until`. `rep`/`team`: runs with a task assigned to that rep or a
    rep of that team; tasks assigned to them."""

    sop: str | None = None
    version: int | None = None
    rep: str | None = None
    team: str | None = None
    waiting_for: WaitingFor | None = None
    late: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The viewer's scope (a supervisor's teams), not a filter they chose: runs and tasks of
    # reps of these teams only. None: everything (ops).
    teams: frozenset[str] | None = None

    def check(self) -> None:
        if self.version is not None and self.sop is None:
            raise SopflowError("version: give sop too (version numbers are per SOP)")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise SopflowError(
                f"since {self.since.isoformat()} is not before until {self.until.isoformat()}"
            )


@dataclass(frozen=True)
class RunFilters(Filters):
    status: RunStatus | None = None


@dataclass(frozen=True)
class TaskFilters(Filters):
    status: TaskStatus | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(listing: str, key: Key) -> str:
    raw = json.dumps([listing, key[0].isoformat(), key[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(listing: str, given: str, id_type: type[str] | type[int]) -> Key:
    """The sort key in a cursor this listing gave, or a SopflowError (422)."""
    refusal = SopflowError(
        f"cursor: not a cursor of the {listing} listing: pass `next_cursor` back"
    )
    try:
        raw = base64.urlsafe_b64decode(given + "=" * (-len(given) % 4))
        name, at, key = json.loads(raw)
        moment = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError):  # JSON, unpacking and dates: ValueErrors
        raise refusal from None
    if name != listing or type(key) is not id_type or moment.tzinfo is None:
        raise refusal
    return moment, key


def after_cursor(
    time: InstrumentedAttribute[Any], id_: InstrumentedAttribute[Any], key: Key
) -> Any:
    """Rows after `key` in newest-first order; the first term lets an index on time bound it."""
    return and_(time <= key[0], or_(time < key[0], id_ < key[1]))


@dataclass(frozen=True)
class _RunState:
    """What a run's last step events say: its last action and its last pause or resume."""

    latest: str | None = None
    control: str | None = None


def waiting_for(status: str, state: _RunState, score: RunScore) -> WaitingFor | None:
    """What a run waits for now, from its step events; None once it has finished."""
    if status != "running":
        return None
    if state.control == "paused":
        return "resume"
    if any(i.kind == "task" and i.status == "pending" for i in score.items):
        return "rep"
    return "window" if state.latest == "deferred" else "unknown"


def _assigned(run: InstrumentedAttribute[Any]) -> Any:
    return select(StepEvent.id).where(StepEvent.workflow_id == run, StepEvent.kind == "assign")


def of_teams(run: InstrumentedAttribute[Any], teams: Collection[str]) -> ColumnElement[bool]:
    """A run with a task assigned to a rep of one of `teams`: what "a run of a team" means in
    the listings' `team` filter and in a supervisor's scope (the dashboard)."""
    task = aliased(StepEvent)  # not correlated with a query that itself reads step events
    reps = select(Rep.id).where(Rep.team_id.in_(teams))
    return exists(
        select(task.id).where(task.workflow_id == run, task.kind == "assign", task.actor.in_(reps))
    )


def _recorded(action: str) -> Any:
    return exists(
        select(StepEvent.id).where(
            StepEvent.workflow_id == Run.workflow_id,
            StepEvent.kind == "record",
            StepEvent.action == action,
        )
    )


def _waiting_prefilter(wanted: WaitingFor) -> list[ColumnElement[bool]]:
    """A necessary condition in SQL, so the scorer judges fewer runs."""
    running = Run.status == "running"
    match wanted:
        case "resume":
            return [running, _recorded("paused")]
        case "rep":
            return [running, exists(_assigned(Run.workflow_id))]
        case "window":
            return [running, _recorded("deferred")]
        case "unknown":
            return [running]
        case _:
            assert_never(wanted)


class Listing:
    def __init__(self, engine: Engine, scores: Scores | None = None) -> None:
        self.engine = engine
        self.scores = scores or Scores(engine)

    # ------------------------------------------------------------ runs
    def runs(self, filters: RunFilters, limit: int, cursor: str | None, now: datetime) -> Page:
        """Runs enrolled newest first, each with its score, late tasks and what it waits for."""
        filters.check()
        where: list[Any] = []
        if filters.sop is not None:
            where.append(Run.sop_id == filters.sop)
        if filters.version is not None:
            where.append(Run.version == filters.version)
        if filters.status is not None:
            where.append(Run.status == filters.status)
        if filters.rep is not None:
            where.append(exists(_assigned(Run.workflow_id).where(StepEvent.actor == filters.rep)))
        if filters.team is not None:
            where.append(of_teams(Run.workflow_id, [filters.team]))
        if filters.teams is not None:
            where.append(of_teams(Run.workflow_id, filters.teams))
        if filters.since is not None:
            where.append(Run.enrolled_at >= filters.since)
        if filters.until is not None:
            where.append(Run.enrolled_at < filters.until)
        if filters.waiting_for is not None:
            where += _waiting_prefilter(filters.waiting_for)
        if filters.late:  # every task past its due time was due before now
            late = _assigned(Run.workflow_id).where(StepEvent.due_at < now)
            where.append(exists(late))
        query = select(Run).where(*where).order_by(Run.enrolled_at.desc(), Run.workflow_id.desc())

        def fetch(after: Key | None, count: int) -> Sequence[Run]:
            bounded = query if after is None else query.where(after_cursor(*_RUN_KEY, after))
            with Session(self.engine, expire_on_commit=False) as session:
                return session.scalars(bounded.limit(count)).all()

        def judge(rows: Sequence[Run]) -> Iterable[tuple[Key, dict[str, Any] | None]]:
            scores, states = self._judged([run.workflow_id for run in rows])
            for run in rows:
                row = self._run_row(run, scores[run.workflow_id], states, now)
                keep = filters.waiting_for in (None, row["waiting_for"]) and (
                    filters.late is None or filters.late == (row["late_tasks"] > 0)
                )
                yield (run.enrolled_at, run.workflow_id), row if keep else None

        exact = filters.waiting_for is None and filters.late is None
        start = decode_cursor("runs", cursor, str) if cursor else None
        return collect_page("runs", fetch, judge, limit, start, exact)

    def _run_row(
        self, run: Run, score: RunScore, states: dict[str, _RunState], now: datetime
    ) -> dict[str, Any]:
        tasks = [i for i in score.items if i.kind == "task"]
        state = states.get(run.workflow_id, _RunState())
        return run_summary(run) | {
            "waiting_for": waiting_for(run.status, state, score),
            "score": score.score,
            "sla_met": score.sla_met,
            "tasks": len(tasks),
            "late_tasks": sum(past_due(i, now) for i in tasks),
            "reps": sorted({i.actor for i in tasks if i.actor != SYSTEM}),
        }

    # ------------------------------------------------------------ tasks
    def tasks(self, filters: TaskFilters, limit: int, cursor: str | None, now: datetime) -> Page:
        """Rep tasks (assign events) newest first, each with the scorer's status for it."""
        filters.check()
        # 'assign' as a literal, as in the partial index's WHERE (models.TASK_ROWS): with a bound
        # parameter, SQLite and a generic PostgreSQL plan cannot tell the index covers the rows.
        where: list[Any] = [StepEvent.kind == literal_column("'assign'")]
        if filters.sop is not None:
            where.append(Run.sop_id == filters.sop)
        if filters.version is not None:
            where.append(Run.version == filters.version)
        if filters.rep is not None:
            where.append(StepEvent.actor == filters.rep)
        if filters.team is not None:
            where.append(Rep.team_id == filters.team)
        if filters.teams is not None:
            where.append(Rep.team_id.in_(filters.teams))
        if filters.since is not None:
            where.append(StepEvent.executed_at >= filters.since)
        if filters.until is not None:
            where.append(StepEvent.executed_at < filters.until)
        if filters.waiting_for is not None or filters.status == "pending":
            where.append(Run.status == "running")  # an open task of a finished run is excused
        if filters.late or filters.status in ("late", "missed"):
            where.append(StepEvent.due_at < now)  # past due means due before now
        query = (
            select(StepEvent, Run.sop_id, Run.version, Run.contact_id, Run.status, Rep.team_id)
            .join(Run, Run.workflow_id == StepEvent.workflow_id)
            .outerjoin(Rep, Rep.id == StepEvent.actor)
            .where(*where)
            .order_by(StepEvent.executed_at.desc(), StepEvent.id.desc())
        )

        def fetch(after: Key | None, count: int) -> Sequence[Any]:
            bounded = query if after is None else query.where(after_cursor(*_TASK_KEY, after))
            with Session(self.engine, expire_on_commit=False) as session:
                return session.execute(bounded.limit(count)).all()

        def judge(rows: Sequence[Any]) -> Iterable[tuple[Key, dict[str, Any] | None]]:
            scores, states = self._judged(list(dict.fromkeys(r[0].workflow_id for r in rows)))
            for event, sop, version, contact, status, team in rows:
                score = scores[event.workflow_id]
                item = next(i for i in score.items if i.kind == "task" and i.key == event.key)
                state = states.get(event.workflow_id, _RunState())
                row = {
                    "run_id": event.workflow_id,
                    "key": event.key,
                    "step": event.step,
                    "title": (event.detail or {}).get("title"),
                    "sop": sop,
                    "version": version,
                    "contact": contact,
                    "rep": event.actor,
                    "team": team,
                    "assigned_at": event.executed_at.isoformat(),
                    "due_at": item.due_at.isoformat() if item.due_at else None,
                    "status": item.status,
                    "late": past_due(item, now),
                    "overdue": item.status == "pending" and past_due(item, now),
                    "done_at": item.done_at.isoformat() if item.done_at else None,
                    "late_by_seconds": item.late_by.total_seconds() if item.late_by else None,
                    "reason": item.reason or None,
                    "run_status": status,
                    "waiting_for": waiting_for(status, state, score),
                }
                keep = (
                    filters.status in (None, item.status)
                    and filters.late in (None, row["late"])
                    and filters.waiting_for in (None, row["waiting_for"])
                )
                yield (event.executed_at, event.id), row if keep else None

        exact = filters.waiting_for is None and filters.late is None and filters.status is None
        start = decode_cursor("tasks", cursor, int) if cursor else None
        return collect_page("tasks", fetch, judge, limit, start, exact)

    # ------------------------------------------------------------ shared
    def _judged(self, ids: list[str]) -> tuple[dict[str, RunScore], dict[str, _RunState]]:
        """The scorer's verdict on these runs, and their last action and pause or resume."""
        scores = {s.facts.workflow_id: s for s in self.scores.runs(workflow_ids=ids)}
        # Per run, in one pass over its events (the index on workflow_id): the last event and
        # the last pause or resume. A query of its own for the latter made SQLite, with no
        # statistics, walk every record event of the store by the kind index.
        is_control = and_(StepEvent.kind == "record", StepEvent.action.in_(_CONTROLS))
        grouped = (
            select(
                StepEvent.workflow_id,
                func.max(StepEvent.id),
                func.max(case((is_control, StepEvent.id))),
            )
            .where(StepEvent.workflow_id.in_(ids))
            .group_by(StepEvent.workflow_id)
        )
        with Session(self.engine) as session:
            lasts = session.execute(grouped).all()
            wanted = {i for _, last, control in lasts for i in (last, control) if i is not None}
            found = select(StepEvent.id, StepEvent.action).where(StepEvent.id.in_(wanted))
            actions = {event_id: action for event_id, action in session.execute(found)}
        states = {
            workflow_id: _RunState(actions[last], actions.get(control))
            for workflow_id, last, control in lasts
        }
        return scores, states


_RUN_KEY = (Run.enrolled_at, Run.workflow_id)
_TASK_KEY = (StepEvent.executed_at, StepEvent.id)


def collect_page(
    listing: str,
    fetch: Callable[[Key | None, int], Sequence[Row]],
    judge: Callable[[Sequence[Row]], Iterable[tuple[Key, dict[str, Any] | None]]],
    limit: int,
    start: Key | None,
    exact: bool,
) -> Page:
    """Up to `limit` kept rows after `start`. `exact`: SQL alone decides which rows are kept,
    so one fetch of limit + 1 tells whether there is a next page; else chunks are judged until
    the page is full, the rows run out, or SCAN_LIMIT rows were judged."""
    if not 1 <= limit <= MAX_PAGE:
        raise SopflowError(f"limit: {limit} is not between 1 and {MAX_PAGE}")
    kept: list[tuple[Key, dict[str, Any]]] = []
    after, scanned = start, 0
    chunk = limit + 1 if exact else _CHUNK
    while True:
        rows = fetch(after, chunk)
        for key, row in judge(rows):
            if row is not None:
                if len(kept) == limit:  # one more than the page holds: there is a next page
                    return Page([r for _, r in kept], encode_cursor(listing, kept[-1][0]))
                kept.append((key, row))
            after, scanned = key, scanned + 1
        if len(rows) < chunk:
            return Page([r for _, r in kept], None)
        if scanned >= SCAN_LIMIT:
            assert after is not None
            return Page([r for _, r in kept], encode_cursor(listing, after))
