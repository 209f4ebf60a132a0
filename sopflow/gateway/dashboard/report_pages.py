"""The report pages: reps and teams, an SOP's funnel, its pilots, the referral funnel. Each asks
the class the reports API asks (compliance/teams_report.py, funnel.py, pilots.py; the referral
book and sopflow.referrals.funnel_view), with the API's query models and the API's role rules:
ops see everything, a supervisor their teams (and the runs those worked on), a rep their own
row of the reps report and a 403 page for the rest; the referral funnel is ops'. Each page is
computed and rendered in a worker thread: a report reads many runs, the event loop goes on.
report_tables.py turns the answers into tables."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, assert_never

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sopflow.compliance.funnel import Funnel
from sopflow.compliance.pilots import Pilots
from sopflow.compliance.teams_report import TeamsReport
from sopflow.errors import SopflowError
from sopflow.gateway.dashboard.access import PREFIX, ops_only, reader
from sopflow.gateway.dashboard.render import form_values, parse, problems, render
from sopflow.gateway.dashboard.report_tables import (
    funnel_tables,
    pilots_tables,
    referral_tables,
    reps_tables,
)
from sopflow.gateway.listing import Moment, Name
from sopflow.gateway.reports_api import RepsQuery, SopQuery, refuse_reps
from sopflow.principals import Principal, Role
from sopflow.referrals import Period, funnel_view
from sopflow.store.models import Team
from sopflow.store.referrals import ReferralBook
from sopflow.store.reports import Scores, parse_since
from sopflow.store.repository import Store

Reader = Annotated[Principal, Depends(reader)]
SopReport = Literal["funnel", "pilots"]


class SopPageQuery(SopQuery):
    """The API's, with the SOP still to choose: the page then shows the picker."""

    sop: Name | None = None  # type: ignore[assignment]


class ReferralQuery(BaseModel):
    """GET /api/v1/reports/referrals' parameters."""

    model_config = ConfigDict(extra="forbid")
    period: Period = "month"
    since: Moment | None = Field(None, description="cohorts enrolled from")


@dataclass(frozen=True)
class SopChoice:
    id: str
    name: str
    splits: bool  # has a split step: a pilot to compare


def all_teams(engine: Engine) -> dict[str, str]:
    """Team id → name (a few dozen rows: the teams file's)."""
    with Session(engine) as session:
        rows = session.execute(select(Team.id, Team.name).order_by(Team.id))
        return {team: name for team, name in rows}


def check_team(team: str, known: Collection[str], who: Principal) -> None:
    """The reports API's rule (a supervisor asking for another team: 403, whether or not it
    exists), and an unknown team a 404 page rather than an empty report."""
    if who.role is Role.supervisor and not who.may_see_team(team):
        raise HTTPException(403, f"team {team!r} is not one of your teams")
    if team not in known:
        named = ", ".join(known) if who.sees_everything and known else ""
        raise HTTPException(404, f"unknown team {team!r}" + (f" (teams: {named})" if named else ""))


def report_router(store: Store, scores: Scores) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    engine = store.engine
    teams, funnel, pilots = TeamsReport(engine, scores), Funnel(engine, scores), Pilots(engine)
    referrals = ReferralBook(engine)

    def sop_choices() -> list[SopChoice]:
        return [
            SopChoice(p.sop.id, p.sop.name, any(s.kind == "split" for s in p.sop.steps))
            for p in store.latest_plans()
        ]

    def reps_page(request: Request, who: Principal) -> Response:
        values, now = form_values(request), datetime.now(UTC)
        known = all_teams(engine)
        in_sight = {team: name for team, name in known.items() if who.may_see_team(team)}
        context: dict[str, Any] = {"values": values, "teams": in_sight, "report": None}
        try:
            query = parse(RepsQuery, values)
            window = query.window(now)
        except (ValidationError, SopflowError) as exc:
            return render(request, who, "reps.html", status=422, errors=problems(exc), **context)
        if query.team is not None:
            check_team(query.team, known, who)
        report = teams.report(who, window, now, query.team)
        tables = reps_tables(report, linked=who.role is not Role.rep)
        return render(request, who, "reps.html", tables, **context | {"report": report})

    def sop_page(request: Request, who: Principal, kind: SopReport) -> Response:
        refuse_reps(who, "an SOP's funnel" if kind == "funnel" else "a pilot")
        values, now = form_values(request), datetime.now(UTC)
        choices = [c for c in sop_choices() if kind == "funnel" or c.splits]
        context: dict[str, Any] = {"values": values, "sops": choices, "report": None}
        template = f"{kind}.html"
        try:
            query = parse(SopPageQuery, values)
            window = query.window(now)
            if query.sop is None:
                return render(request, who, template, **context)
            match kind:
                case "funnel":
                    report = funnel.report(who, query.sop, window, now)
                    tables = funnel_tables(report)
                case "pilots":
                    report = pilots.report(who, query.sop, window, now)
                    tables = pilots_tables(report)
                case _:
                    assert_never(kind)
        except ValidationError as exc:
            return render(request, who, template, status=422, errors=problems(exc), **context)
        except SopflowError as exc:  # an unknown SOP (404), a bad date, no split step (422)
            return render(
                request, who, template, status=exc.http_status, errors=problems(exc), **context
            )
        return render(request, who, template, tables, **context | {"report": report})

    def referrals_page(request: Request, who: Principal) -> Response:
        ops_only(who, "the referral funnel")
        values, now = form_values(request), datetime.now(UTC)
        context: dict[str, Any] = {"values": values, "report": None}
        try:
            query = parse(ReferralQuery, values)
            start = parse_since(query.since, now)
        except (ValidationError, SopflowError) as exc:
            return render(
                request, who, "referrals.html", status=422, errors=problems(exc), **context
            )
        report = funnel_view(referrals.funnel(query.period, start), query.period, start)
        tables = referral_tables(report)
        return render(request, who, "referrals.html", tables, **context | {"report": report})

    @router.get("/reps")
    async def get_reps(request: Request, who: Reader) -> Response:
        return await asyncio.to_thread(reps_page, request, who)

    @router.get("/funnel")
    async def get_funnel(request: Request, who: Reader) -> Response:
        return await asyncio.to_thread(sop_page, request, who, "funnel")

    @router.get("/pilots")
    async def get_pilots(request: Request, who: Reader) -> Response:
        return await asyncio.to_thread(sop_page, request, who, "pilots")

    @router.get("/referrals")
    async def get_referrals(request: Request, who: Reader) -> Response:
        return await asyncio.to_thread(referrals_page, request, who)

    return router
