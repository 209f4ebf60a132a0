"""GET /api/v1/runs and /api/v1/tasks: runs and rep tasks newest first, filtered, a page at a
time (sopflow/store/listing.py does the work). Unknown query parameters are refused (a typo'd
filter would otherwise list everything); bad values are a 422 naming the parameter. A rep sees
their own tasks (and the runs they were given tasks in), a supervisor their teams': the
filters are narrowed to that here, and a parameter asking for more is a 403."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, assert_never

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from sopflow.compliance.adherence import Status
from sopflow.gateway.inputs import clean
from sopflow.gateway.who import principal
from sopflow.principals import Principal, Role
from sopflow.store.listing import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Listing,
    RunFilters,
    RunStatus,
    TaskFilters,
    TaskStatus,
    WaitingFor,
)
from sopflow.store.reports import parse_since

# The length is checked before `clean`, so a 422 says "String should have at most 64 characters".
Name = Annotated[str, StringConstraints(max_length=64), AfterValidator(clean)]  # the store's ids
Moment = Annotated[str, StringConstraints(max_length=40), AfterValidator(clean)]
Cursor = Annotated[str, StringConstraints(max_length=500), AfterValidator(clean)]
MOMENT = "an ISO date (2026-11-01) or date-time (naive: UTC), or a span back from now like 7d"


class ListingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop: Name | None = Field(None, description="SOP id")
    version: int | None = Field(None, ge=1, description="SOP version (with `sop`)")
    rep: Name | None = Field(None, description="a task assigned to this rep")
    team: Name | None = Field(None, description="a task assigned to a rep of this team")
    waiting_for: WaitingFor | None = Field(
        None,
        description="what the run waits for now: rep (an open task's outcome), resume (paused), "
        "window (a deferred touch), unknown (a timer, an event or a carrier's answer)",
    )
    late: bool | None = Field(
        None,
        description="true: past its due time — a task reported late, expired unreported, or "
        "open after its due time (overdue); a run with such a task. false: the others",
    )
    since: Moment | None = Field(None, description=f"from: {MOMENT}")
    until: Moment | None = Field(None, description=f"before: {MOMENT}")
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="rows per page")
    cursor: Cursor | None = Field(None, description="`next_cursor` of the previous page")


class RunQuery(ListingQuery):
    status: RunStatus | None = None


class TaskQuery(ListingQuery):
    status: TaskStatus | None = Field(None, description="the scorer's status; pending: open")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a key the store adds fails loudly, not silently


class RunRow(_Row):
    run_id: str
    sop: str
    version: int
    digest: str
    contact: str
    status: RunStatus
    result: str | None
    enrolled_at: str
    finished_at: str | None
    waiting_for: WaitingFor | None = Field(description="None once finished")
    score: float | None = Field(description="adherence score so far, 0-100 (None: nothing judged)")
    sla_met: bool | None
    tasks: int = Field(description="rep tasks assigned in the run")
    late_tasks: int = Field(description="of them, past their due time")
    reps: list[str] = Field(description="reps given its tasks")


class TaskRow(_Row):
    run_id: str
    key: str = Field(description="the task's step event key (one per attempt)")
    step: str
    title: str | None
    sop: str
    version: int
    contact: str
    rep: str | None = Field(description="the rep it was assigned to (None: nobody was found)")
    team: str | None
    assigned_at: str
    due_at: str | None
    status: Status
    late: bool = Field(description="past its due time: late, missed, or overdue")
    overdue: bool = Field(description="still open after its due time")
    done_at: str | None
    late_by_seconds: float | None
    reason: str | None = Field(description="why it lost points or was excused")
    run_status: RunStatus
    waiting_for: WaitingFor | None


class RunPage(BaseModel):
    items: list[RunRow]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; None: last")


class TaskPage(BaseModel):
    items: list[TaskRow]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; None: last")


def parse_moments(query: ListingQuery, now: datetime) -> tuple[datetime | None, datetime | None]:
    return parse_since(query.since, now), parse_since(query.until, now, "until")


def _scope(query: ListingQuery, who: Principal) -> dict[str, Any]:
    """The rep and team filters `who` may use: theirs only, whatever the query asks."""
    match who.role:
        case Role.ops:
            return {"rep": query.rep, "team": query.team}
        case Role.rep:
            if query.rep is not None and query.rep != who.rep_id:
                raise HTTPException(403, f"a rep lists their own tasks only, not {query.rep!r}'s")
            return {"rep": who.rep_id, "team": query.team}
        case Role.supervisor:
            if query.team is not None and query.team not in who.teams:
                raise HTTPException(403, f"team {query.team!r} is not one of your teams")
            return {"rep": query.rep, "team": query.team, "teams": who.teams}
        case _:
            assert_never(who.role)


Who = Annotated[Principal, Depends(principal)]  # module level: FastAPI resolves it here


def listing_router(listing: Listing) -> APIRouter:
    """Under /api/: the gateway's authentication checks the token."""
    router = APIRouter(prefix="/api/v1")

    @router.get("/runs")
    async def list_runs(query: Annotated[RunQuery, Query()], who: Who) -> RunPage:
        """Runs, newest enrolment first, each with its score, late tasks and what it waits for.
        Keyset pages: pass `next_cursor` back as `cursor`; a page can be short with a
        `next_cursor` when `late` or `waiting_for` matched few of the runs it looked at."""
        now = datetime.now(UTC)
        since, until = parse_moments(query, now)
        filters = RunFilters(
            sop=query.sop, version=query.version, **_scope(query, who),
            waiting_for=query.waiting_for, late=query.late, since=since, until=until,
            status=query.status,
        )  # fmt: skip
        page = await asyncio.to_thread(listing.runs, filters, query.limit, query.cursor, now)
        return RunPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})

    @router.get("/tasks")
    async def list_tasks(query: Annotated[TaskQuery, Query()], who: Who) -> TaskPage:
        """Rep tasks, newest assignment first, with the scorer's status, due and done times.
        Pages as /api/v1/runs; `status`, `late` and `waiting_for` may give short pages."""
        now = datetime.now(UTC)
        since, until = parse_moments(query, now)
        filters = TaskFilters(
            sop=query.sop, version=query.version, **_scope(query, who),
            waiting_for=query.waiting_for, late=query.late, since=since, until=until,
            status=query.status,
        )  # fmt: skip
        page = await asyncio.to_thread(listing.tasks, filters, query.limit, query.cursor, now)
        return TaskPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})

    return router
