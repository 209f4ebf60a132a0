"""Teams and reps, and who gets a task: the `assign` rules of an SOP resolved against the store.

Rules (the README documents them for authors):
- owner: the contact's owner if an active rep, else the rep of this run's last task;
- rep: that rep if active;
- round_robin: the team's active reps in id order, starting after the rep of the team's last task;
- least_loaded: the team's active rep with the fewest tasks assigned in the last 24 hours.
Nobody found → None (the task is recorded unassigned and escalations go to the supervisor).
Workload caps: a rep with `max_tasks_per_day` gets no task while that many were assigned to them
in the trailing 24 hours. Team rules pick among the reps under their cap; when every candidate is
at capacity, RepsAtCapacity says until when (the task is deferred, not given to someone else).
Two tasks assigned at the same instant may pick the same rep: balance, not a strict rota.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sopflow.compliance.rules import next_free
from sopflow.errors import SopflowError
from sopflow.sop.rep_view import rep_view
from sopflow.sop.schema import AssignRule
from sopflow.store.models import Contact, Rep, StepEvent, Team

LOAD_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class RepInfo:
    id: str
    name: str
    phone: str | None
    team_id: str | None
    max_tasks_per_day: int | None = None
    email: str | None = None
    timezone: str | None = None  # IANA: the rep's own, else their team's (None: neither set)

    def template_view(self) -> dict[str, Any]:
        """What `{{ rep.* }}` shows in templates (one definition: sopflow.sop.rep_view)."""
        return rep_view(self.id, self.name, self.phone, self.email, self.team_id)


def _info(row: Rep, session: Session) -> RepInfo:
    team = session.get(Team, row.team_id) if row.team_id and not row.timezone else None
    zone = row.timezone or (team.timezone if team is not None else None)
    return RepInfo(row.id, row.name, row.phone, row.team_id, row.max_tasks_per_day, row.email, zone)


class RepsAtCapacity(SopflowError):
    """Every rep the rule could pick has reached their workload cap until `retry_at`."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class RepDirectory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ maintenance
    def import_teams(self, teams: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Upsert teams and their reps from `[{id, name, supervisor, reps: [{id, name, phone,
        active}]}]`; returns (teams, reps) written. Reps missing from a team are kept."""
        team_count = rep_count = 0
        with Session(self.engine) as session, session.begin():
            for team in teams:
                team_id = str(team["id"])
                row = session.get(Team, team_id) or Team(id=team_id)
                row.name = str(team.get("name") or team_id)
                row.supervisor_id = team.get("supervisor")
                row.timezone = team.get("timezone")
                session.add(row)
                session.flush()
                team_count += 1
                for rep in team.get("reps", []):
                    rep_row = session.get(Rep, str(rep["id"])) or Rep(id=str(rep["id"]))
                    rep_row.name = str(rep.get("name") or rep["id"])
                    rep_row.phone = rep.get("phone")
                    rep_row.email = rep.get("email")
                    rep_row.team_id = team_id
                    rep_row.active = bool(rep.get("active", True))
                    rep_row.timezone = rep.get("timezone")
                    rep_row.max_tasks_per_day = rep.get("max_tasks_per_day") or team.get(
                        "max_tasks_per_day"
                    )
                    session.add(rep_row)
                    rep_count += 1
            session.flush()
            supervisors = {t.supervisor_id for t in session.scalars(select(Team))}
            known = set(session.scalars(select(Rep.id)))
            unknown = sorted(s for s in supervisors if s and s not in known)
            if unknown:  # rolls the whole import back
                raise SopflowError(f"supervisor {unknown[0]!r} is not a rep of any team")
        return team_count, rep_count

    def reps(self) -> list[RepInfo]:
        with Session(self.engine) as session:
            return [_info(r, session) for r in session.scalars(select(Rep).order_by(Rep.id))]

    def rep(self, rep_id: str | None) -> RepInfo | None:
        if not rep_id:
            return None
        with Session(self.engine) as session:
            row = session.get(Rep, rep_id)
            return _info(row, session) if row is not None and row.active else None

    def owner_of(self, contact_id: str) -> str | None:
        with Session(self.engine) as session:
            contact = session.get(Contact, contact_id)
            return contact.owner if contact is not None else None

    def supervisor_of(self, rep_id: str | None, team_id: str | None = None) -> RepInfo | None:
        with Session(self.engine) as session:
            rep = session.get(Rep, rep_id) if rep_id else None
            team = session.get(Team, team_id or (rep.team_id if rep else None) or "")
            return self.rep(team.supervisor_id) if team is not None else None

    # ------------------------------------------------------------ assignment
    def assigned_in_run(self, workflow_id: str) -> RepInfo | None:
        """The rep of the run's latest task (or reassignment)."""
        with Session(self.engine) as session:
            rep_id = session.scalars(
                select(StepEvent.actor)
                .where(
                    StepEvent.workflow_id == workflow_id,
                    StepEvent.action.in_(("assign", "reassign")),
                    StepEvent.actor.is_not(None),
                )
                .order_by(StepEvent.id.desc())
            ).first()
        return self.rep(rep_id)

    def _assigned_since(
        self, session: Session, ids: list[str], since: datetime
    ) -> dict[str, list[datetime]]:
        """When each rep was given each task since `since` (their load)."""
        times: dict[str, list[datetime]] = {rep_id: [] for rep_id in ids}
        for actor, at in session.execute(
            select(StepEvent.actor, StepEvent.executed_at).where(
                StepEvent.action == "assign",
                StepEvent.actor.in_(ids),
                StepEvent.executed_at > since,
            )
        ):
            times[str(actor)].append(at)
        return times

    def choose(
        self, rule: AssignRule, contact_id: str, workflow_id: str, now: datetime | None = None
    ) -> RepInfo | None:
        """The rep `rule` gives the task to at `now`; None if there is none; RepsAtCapacity
        when the rule's candidates are all at their workload cap."""
        now = now or datetime.now(UTC)
        if rule.strategy in ("rep", "owner"):
            if rule.strategy == "rep":
                named = self.rep(rule.rep)
            else:
                named = self.rep(self.owner_of(contact_id)) or self.assigned_in_run(workflow_id)
            if named is not None:
                self._under_cap([named], now, f"rep {named.id!r}")
            return named
        with Session(self.engine) as session:
            team = [
                _info(r, session)
                for r in session.scalars(
                    select(Rep).where(Rep.team_id == rule.team, Rep.active).order_by(Rep.id)
                )
            ]
            if not team:
                return None
            candidates = self._under_cap(team, now, f"every active rep of team {rule.team!r}")
            if rule.strategy == "round_robin":
                ids = [r.id for r in team]
                last = session.scalars(
                    select(StepEvent.actor)
                    .where(StepEvent.action == "assign", StepEvent.actor.in_(ids))
                    .order_by(StepEvent.id.desc())
                ).first()
                start = ids.index(last) + 1 if last in ids else 0
                rotation = team[start:] + team[:start]
                return next(r for r in rotation if r in candidates)
            loads = self._assigned_since(session, [r.id for r in team], now - LOAD_WINDOW)
            return min(candidates, key=lambda r: (len(loads[r.id]), r.id))

    def _under_cap(self, reps: list[RepInfo], now: datetime, who: str) -> list[RepInfo]:
        """The reps free to take a task now; RepsAtCapacity (with the earliest moment one is
        free) when none is."""
        capped = [r for r in reps if r.max_tasks_per_day is not None]
        if not capped:
            return reps
        with Session(self.engine) as session:
            loads = self._assigned_since(session, [r.id for r in capped], now - LOAD_WINDOW)
        free_at = {
            r.id: next_free(now, loads[r.id], r.max_tasks_per_day, LOAD_WINDOW)
            for r in capped
            if r.max_tasks_per_day is not None
        }
        free = [r for r in reps if free_at.get(r.id, now) == now]
        if free:
            return free
        retry_at = min(at for at in free_at.values() if at is not None)
        raise RepsAtCapacity(
            f"{who} reached max_tasks_per_day (tasks in the last 24 hours); "
            f"the first frees up at {retry_at.isoformat()}",
            retry_at,
        )

    def claim_owner(self, contact_id: str, rep_id: str, *, transfer: bool = False) -> None:
        """The first rep who works a lead without an owner becomes its owner; a reassignment by
        the SOP (`transfer`) moves the lead to the new rep."""
        with Session(self.engine) as session, session.begin():
            contact = session.get(Contact, contact_id)
            if contact is not None and (transfer or not contact.owner):
                contact.owner = rep_id
