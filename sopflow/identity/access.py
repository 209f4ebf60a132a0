"""Who holds a task, whose a run is, and so what a user may see and do there. Read from the
store's step events: a task is held by the rep of its latest `assign` or `reassign` event (a
reassignment that found nobody leaves it where it was); a run belongs to the reps given its
tasks and to their teams (or the team the task's rule named, for a task nobody was given).
A supervisor sees a run any rep of their teams ever held a task of (as the listings' `team`
filter finds it: the rep first given the task), and acts on the tasks their teams hold now.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sopflow.principals import Principal, Role
from sopflow.store.models import Rep, Run, StepEvent
from sopflow.store.reports import Scores

HOLDING = ("assign", "reassign")  # the step events that give a task to a rep


@dataclass(frozen=True)
class HeldTask:
    """A task (the latest `assign` of its step) and who holds it now."""

    run_id: str
    step: str
    key: str  # the assign event's key: one per attempt
    holder: str | None
    team: str | None  # the holder's team, else the team the task's rule named
    due_at: datetime | None
    assigned_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)  # title, rendered instructions…
    channel: str | None = None  # the channel the rep works it in (call: click-to-call)
    held_by: frozenset[str] = frozenset()  # every rep who held it, the holder included
    teams_seen: frozenset[str] = frozenset()  # their teams (held by nobody: its rule's team)


class Refused(Exception):
    """Not this user's to see or do (403): the message says why."""


def _tasks(session: Session, events: list[StepEvent]) -> dict[tuple[str, str], HeldTask]:
    """Per (run, step), its latest task and holder, from assign / reassign events in order."""
    found: dict[tuple[str, str], HeldTask] = {}
    for event in events:
        where = (event.workflow_id, event.step)
        if event.action == "assign":
            rule_team = (event.detail or {}).get("assign", {}).get("team")
            found[where] = HeldTask(
                event.workflow_id,
                event.step,
                event.key,
                event.actor,
                rule_team,
                event.due_at,
                event.executed_at,
                dict(event.detail or {}),
                event.channel,
                frozenset({event.actor} if event.actor else ()),
            )
        elif where in found and event.actor is not None:  # a reassignment to someone
            task = found[where]
            found[where] = replace(task, holder=event.actor, held_by=task.held_by | {event.actor})
    holders = {rep for t in found.values() for rep in t.held_by}
    query = select(Rep.id, Rep.team_id).where(Rep.id.in_(holders))
    teams = {rep: team for rep, team in session.execute(query) if team is not None}
    return {
        where: replace(
            task,
            team=teams.get(task.holder or "") or task.team,
            teams_seen=frozenset(teams[r] for r in task.held_by if r in teams)
            or frozenset({task.team} if task.team else ()),
        )
        for where, task in found.items()
    }


def _holding_events(session: Session, *where: Any) -> list[StepEvent]:
    query = select(StepEvent).where(StepEvent.action.in_(HOLDING), *where).order_by(StepEvent.id)
    return list(session.scalars(query))


def held_task(engine: Engine, run_id: str, step: str) -> HeldTask | None:
    """The run's latest task of `step` and its holder; None when the step gave no task."""
    with Session(engine) as session:
        events = _holding_events(session, StepEvent.workflow_id == run_id, StepEvent.step == step)
        return _tasks(session, events).get((run_id, step))


def run_tasks(engine: Engine, run_id: str) -> list[HeldTask]:
    """Every step's latest task in the run, with its holder."""
    with Session(engine) as session:
        return list(
            _tasks(session, _holding_events(session, StepEvent.workflow_id == run_id)).values()
        )


def open_tasks(engine: Engine, scores: Scores, rep_id: str) -> list[HeldTask]:
    """The open tasks `rep_id` holds now, soonest due first: of running runs, still pending
    by the scorer (one definition of open), their latest holder this rep."""
    with Session(engine) as session:
        runs = select(StepEvent.workflow_id).join(Run, Run.workflow_id == StepEvent.workflow_id)
        runs = runs.where(
            Run.status == "running", StepEvent.action.in_(HOLDING), StepEvent.actor == rep_id
        )
        ids = sorted(set(session.scalars(runs)))
        if not ids:
            return []
        tasks = _tasks(session, _holding_events(session, StepEvent.workflow_id.in_(ids)))
    pending = {
        item.key
        for score in scores.runs(workflow_ids=ids)
        for item in score.items
        if item.kind == "task" and item.status == "pending"
    }
    mine = [t for t in tasks.values() if t.holder == rep_id and t.key in pending]
    return sorted(mine, key=lambda t: (t.due_at or t.assigned_at, t.run_id, t.step))


def check_task(principal: Principal, task: HeldTask | None, run_id: str, step: str) -> None:
    """Refused unless `principal` may report on the task: ops on any, a supervisor on their
    teams' tasks, a rep on the tasks they hold."""
    if principal.sees_everything:
        return
    if task is None:
        raise Refused(f"step {step!r} of run {run_id!r} has given nobody a task")
    if principal.may_act_on_task(task.holder, task.team):
        return
    held = f"held by {task.holder!r}" if task.holder else "held by nobody"
    match principal.role:
        case Role.rep:
            raise Refused(f"the task of step {step!r} is {held}, not by you ({principal.rep_id!r})")
        case Role.supervisor:
            raise Refused(f"the task of step {step!r} is {held}, outside your teams")
        case Role.ops:  # sees everything: returned above
            raise AssertionError("ops may act on every task")


def may_see_run(principal: Principal, tasks: list[HeldTask]) -> bool:
    """Ops see every run; a rep the runs they hold a task in; a supervisor the runs a rep of
    their teams holds or held a task of (a task moved to another team leaves its history in
    sight, as the listings show it)."""
    if principal.sees_everything:
        return True
    if principal.role is Role.supervisor and any(t.teams_seen & principal.teams for t in tasks):
        return True
    return any(principal.may_act_on_task(t.holder, t.team) for t in tasks)


def check_control(principal: Principal, tasks: list[HeldTask], run_id: str) -> None:
    """Refused unless `principal` may pause, resume or cancel the run: ops, or the supervisor
    of a team whose rep was given one of its tasks."""
    match principal.role:
        case Role.ops:
            return
        case Role.supervisor:
            if any(principal.may_see_team(t.team) for t in tasks):
                return
            raise Refused(f"run {run_id!r} has no task of your teams")
        case Role.rep:
            raise Refused("a rep cannot pause, resume or cancel runs: ask your supervisor")
