"""The dashboard's reports as JSON: reps and teams, an SOP's funnel, its pilots
(sopflow/compliance/teams_report.py, funnel.py, pilots.py define every number). Each count comes
with the GET /api/v1/runs or /tasks query that lists the rows behind it.

Who sees what: ops everything; a supervisor the reps of their teams and the runs they worked on;
a rep their own row of the reps report, and neither funnels nor pilots (they count colleagues'
runs). Unknown query parameters are refused; bad values are a 422 naming the parameter; an
unknown SOP is a 404 naming it. The referral funnel is `GET /api/v1/reports/referrals`
(gateway/referral_pages.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from sopflow.compliance.funnel import Funnel
from sopflow.compliance.pilots import Pilots
from sopflow.compliance.teams_report import TeamsReport
from sopflow.compliance.traced import Window
from sopflow.errors import SopflowError
from sopflow.gateway import answers
from sopflow.gateway.listing import MOMENT, Moment, Name
from sopflow.gateway.who import principal
from sopflow.principals import Principal, Role
from sopflow.store.reports import Scores, parse_since

Viewer = Annotated[Principal, Depends(principal)]


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Moment | None = Field(None, description=f"from: {MOMENT}")
    until: Moment | None = Field(None, description=f"before: {MOMENT}")

    def window(self, now: datetime) -> Window:
        since, until = parse_since(self.since, now), parse_since(self.until, now, "until")
        if since is not None and until is not None and since >= until:
            raise SopflowError(f"since {since.isoformat()} is not before until {until.isoformat()}")
        return Window(since, until)


class RepsQuery(ReportQuery):
    """`since`/`until`: tasks assigned then (as /api/v1/tasks)."""

    team: Name | None = Field(None, description="reps of this team only")


class SopQuery(ReportQuery):
    """`since`/`until`: runs enrolled then (as /api/v1/runs)."""

    sop: Name = Field(description="SOP id")


def refuse_reps(who: Principal, what: str) -> None:
    """A report of other reps' runs: a rep gets a 403 (the dashboard's pages show it as one)."""
    if who.role is Role.rep:
        raise HTTPException(403, f"{what} counts other reps' runs: supervisors and ops see it")


def reports_router(engine: Engine, scores: Scores | None = None) -> APIRouter:
    """Under /api/: the gateway's authentication puts the principal in each request."""
    router = APIRouter(prefix="/api/v1/reports")
    scores = scores or Scores(engine)
    teams, funnel, pilots = TeamsReport(engine, scores), Funnel(engine, scores), Pilots(engine)

    @router.get("/reps", response_model=answers.RepsReport)
    async def get_reps(query: Annotated[RepsQuery, Query()], who: Viewer) -> dict[str, Any]:
        """Per rep and per team: adherence score, on-time, overdue and skipped %, SLA met %,
        touches per success, open tasks, over the tasks assigned in the window. A supervisor
        sees their teams' reps, a rep their own row."""
        now = datetime.now(UTC)
        window = query.window(now)
        if who.role is Role.supervisor and query.team and not who.may_see_team(query.team):
            raise HTTPException(403, f"team {query.team!r} is not one of your teams")
        return await asyncio.to_thread(teams.report, who, window, now, query.team)

    @router.get("/funnel", response_model=answers.FunnelReport)
    async def get_funnel(query: Annotated[SopQuery, Query()], who: Viewer) -> dict[str, Any]:
        """Per step of the SOP, in plan order, one column per version: entries, on time,
        overdue, skipped and open attempts, exits by result."""
        refuse_reps(who, "an SOP's funnel")
        now = datetime.now(UTC)
        window = query.window(now)
        return await asyncio.to_thread(funnel.report, who, query.sop, window, now)

    @router.get("/pilots", response_model=answers.PilotReport)
    async def get_pilots(query: Annotated[SopQuery, Query()], who: Viewer) -> dict[str, Any]:
        """Per split step and arm: runs, successes (the SOP's `success_results`), conversion,
        and whether the arms differ: the test used, its p-value, and "too few runs to tell",
        "not significant" or "significant at 5%"."""
        refuse_reps(who, "a pilot")
        now = datetime.now(UTC)
        window = query.window(now)
        return await asyncio.to_thread(pilots.report, who, query.sop, window, now)

    return router
