"""What the dashboard's reports share: counts traced to the runs behind them, the reporting
window, who may see which reps, and the scorer run over a set of runs in one streamed pass.

Every count of a report carries the query of `GET /api/v1/runs` or `/api/v1/tasks` that lists
the rows behind it (`exact`), or, where those listings have no filter for what was counted (a
step, a result), the narrowest query whose rows contain them (`exact: false`).

Scope: ops see every rep; a supervisor the reps of their teams; a rep themselves. It is applied
in SQL, to the rep a task was assigned to (a run is a team's when a rep of the team had one of
its tasks, as the listings' `team` filter has it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, assert_never, cast

from sqlalchemy import ColumnElement, Engine, Select, exists, false, literal_column, select, true
from sqlalchemy.orm import aliased

from sopflow.compliance.adherence import RunScore
from sopflow.principals import Principal, Role
from sopflow.sop.plan import Plan
from sopflow.store.models import Rep, Run, StepEvent
from sopflow.store.reports import Scores
from sopflow.store.repository import Store

Listing = Literal["runs", "tasks"]
# 'assign' as a literal, as in the partial index's WHERE (see store.listing.tasks).
ASSIGN: ColumnElement[str] = literal_column("'assign'")


@dataclass(frozen=True)
class Window:
    """Reported period: [since, until), either end open."""

    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> dict[str, Any]:
        """As the listings' `since` and `until` parameters."""
        found: dict[str, Any] = {}
        if self.since is not None:
            found["since"] = self.since.isoformat()
        if self.until is not None:
            found["until"] = self.until.isoformat()
        return found

    def sql(self, column: Any) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(column >= self.since)
        if self.until is not None:
            where.append(column < self.until)
        return where


@dataclass
class Count:
    """A number, and the listing query that shows the rows behind it."""

    listing: Listing
    filter: dict[str, Any]
    exact: bool = True
    value: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "listing": self.listing,
            "filter": self.filter,
            "exact": self.exact,
        }


def ratio(part: int, whole: int) -> float | None:
    """A percentage to one decimal; None when there is nothing to divide by."""
    return round(100 * part / whole, 1) if whole else None


@dataclass(frozen=True)
class RepScope:
    """The reps a principal may see, as SQL over the rep a task was assigned to."""

    role: Role
    rep_id: str | None = None
    teams: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, principal: Principal) -> RepScope:
        return cls(principal.role, principal.rep_id, principal.teams)

    def actor(self, column: Any) -> ColumnElement[bool]:
        """The task's rep is one this principal may see."""
        match self.role:
            case Role.ops:
                return true()
            case Role.supervisor:
                if not self.teams:
                    return false()
                theirs: ColumnElement[bool] = column.in_(
                    select(Rep.id).where(Rep.team_id.in_(self.teams))
                )
                return theirs
            case Role.rep:
                mine: ColumnElement[bool] = column == self.rep_id
                return mine if self.rep_id else false()
            case _:
                assert_never(self.role)

    def run(self) -> ColumnElement[bool]:
        """A run with a task assigned to a rep this principal may see (everything for ops)."""
        if self.role is Role.ops:
            return true()
        task = aliased(StepEvent)  # not correlated with a query that reads step events itself
        return exists(
            select(task.id).where(
                task.workflow_id == Run.workflow_id, task.kind == ASSIGN, self.actor(task.actor)
            )
        )


def of_team(column: Any, team: str) -> ColumnElement[bool]:
    """`column` (a task's rep) is a rep of `team`, as the listings' `team` filter has it."""
    found: ColumnElement[bool] = column.in_(select(Rep.id).where(Rep.team_id == team))
    return found


class Plans:
    """Plans by digest, each read once per report."""

    def __init__(self, engine: Engine) -> None:
        self.store = Store(engine)
        self.found: dict[str, Plan] = {}

    def __call__(self, digest: str) -> Plan:
        if digest not in self.found:
            self.found[digest] = self.store.plan(digest)
        return self.found[digest]


def scored(scores: Scores, runs: Select[Any]) -> Iterator[RunScore]:
    """The scorer's verdict on the runs whose workflow ids `runs` selects, in workflow-id order
    (the database's), in one streamed pass: memory stays flat however many runs it covers."""
    # Scores.runs narrows its two streams with `workflow_id IN (...)`; given this subquery
    # instead of a list, the database reads the events once (a list in chunks of 1,000 made
    # PostgreSQL scan the events table once per chunk: ~1 ms per run, 3x the scoring).
    return scores.runs(workflow_ids=cast("Collection[str]", runs))
