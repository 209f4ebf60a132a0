"""The overview, the runs and tasks listings, and the step events behind an overview figure.
Filters are checked by the API's query models (gateway/listing.py); every listing is the store's
(store/listing.py, store/overview.py) with the viewer's scope added to its query."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sopflow.errors import SopflowError
from sopflow.gateway.dashboard.access import PREFIX, scope_of, viewer
from sopflow.gateway.dashboard.charts import stacked_bars
from sopflow.gateway.dashboard.render import (
    form_values,
    href,
    parse,
    problems,
    render,
    run_href,
)
from sopflow.gateway.dashboard.tables import Column, Row, Table, csv_response
from sopflow.gateway.listing import (
    Cursor,
    ListingQuery,
    Moment,
    Name,
    RunQuery,
    TaskQuery,
    parse_moments,
)
from sopflow.principals import Principal
from sopflow.store.listing import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Filters,
    Listing,
    Page,
    RunFilters,
    TaskFilters,
)
from sopflow.store.overview import EventKind, Figures, Overview, Period, Scope
from sopflow.store.reports import parse_since

Viewer = Annotated[Principal, Depends(viewer)]
F = TypeVar("F", bound=Filters)
DEFAULT_DAYS = 7  # the overview's period: the last 7 days (today included)
EXPORT_ROWS = 5_000  # rows a listing's CSV export gathers (page after page); more: a Link header
RUNS = f"{PREFIX}/runs"
TASKS = f"{PREFIX}/tasks"
EVENTS = f"{PREFIX}/events"


class PeriodQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: Moment | None = Field(None, description="from (default: 6 days before today, 00:00)")
    until: Moment | None = Field(None, description="before (default: now)")


class EventQuery(PeriodQuery):
    kind: EventKind
    channel: Name | None = None
    rule: Name | None = None
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: Cursor | None = None


def period_of(query: PeriodQuery, now: datetime) -> Period:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = parse_since(query.since, now) or start - timedelta(days=DEFAULT_DAYS - 1)
    until = parse_since(query.until, now, "until") or now
    if since >= until:
        raise SopflowError(f"since {since.isoformat()} is not before until {until.isoformat()}")
    return Period(since, until)


def filters_of(query: ListingQuery, kind: type[F], now: datetime, teams: Scope) -> F:
    """The store's filters from the API's query model, with the viewer's scope."""
    since, until = parse_moments(query, now)
    chosen = query.model_dump(exclude={"since", "until", "limit", "cursor"})
    return kind(**chosen, since=since, until=until, teams=teams)


def _run_link(row: Row) -> str:
    return run_href(row["run_id"])


def run_columns() -> list[Column]:
    return [
        Column("run_id", "Run", href=_run_link),
        Column("sop", "SOP", href=lambda r: href(RUNS, sop=r["sop"])),
        Column("version", "Version", numeric=True),
        Column("contact", "Contact"),
        Column("status", "Status"),
        Column("result", "Result"),
        Column("waiting_for", "Waiting for"),
        Column("enrolled_at", "Enrolled (UTC)"),
        Column("finished_at", "Finished (UTC)"),
        Column("score", "Score", numeric=True),
        Column("sla_met", "SLA met"),
        Column("tasks", "Tasks", numeric=True),
        Column("late_tasks", "Late tasks", numeric=True, href=lambda r: _run_link(r) + "#score"),
        Column("reps", "Reps"),
    ]


def task_columns() -> list[Column]:
    return [
        Column("run_id", "Run", href=lambda r: run_href(r["run_id"])),
        Column("step", "Step"),
        Column("title", "Title"),
        Column("sop", "SOP"),
        Column("contact", "Contact"),
        Column("rep", "Rep", href=lambda r: href(TASKS, rep=r["rep"]) if r["rep"] else None),
        Column("team", "Team"),
        Column("assigned_at", "Assigned (UTC)"),
        Column("due_at", "Due (UTC)"),
        Column("status", "Status"),
        Column("late", "Late"),
        Column("overdue", "Overdue"),
        Column("done_at", "Done (UTC)"),
        Column("reason", "Why"),
    ]


def _times(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The listings' ISO strings back to times, so pages and CSVs format them one way."""
    return row | {k: datetime.fromisoformat(row[k]) for k in keys if row.get(k)}


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    return _times(row, "enrolled_at", "finished_at") | {"reps": " ".join(row["reps"])}


def _task_row(row: dict[str, Any]) -> dict[str, Any]:
    return _times(row, "assigned_at", "due_at", "done_at")


async def gathered(first: Page, more: Callable[[str], Page]) -> tuple[list[Any], str | None]:
    """Rows of this page and the next ones, up to EXPORT_ROWS; the cursor left, if any."""
    rows, page = list(first.items), first
    while page.next_cursor is not None and len(rows) < EXPORT_ROWS:
        page = await asyncio.to_thread(more, page.next_cursor)
        rows += page.items
    return rows, page.next_cursor


def pages_router(listing: Listing, overview: Overview) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("")
    async def overview_page(request: Request, who: Viewer) -> Response:
        now, values = datetime.now(UTC), form_values(request)
        try:
            period = period_of(parse(PeriodQuery, values), now)
        except (ValidationError, SopflowError) as exc:
            return render(request, who, "overview.html", errors=problems(exc), status=422,
                          values=values, figures=None, period=None, cards=[], chart=None)  # fmt: skip
        figures = await asyncio.to_thread(overview.figures, period, scope_of(who), now)
        tables = overview_tables(figures)
        return render(
            request, who, "overview.html", tables, values=values, figures=figures, period=period,
            cards=cards(figures), chart=touch_chart(figures),
        )  # fmt: skip

    @router.get("/runs")
    async def runs_page(request: Request, who: Viewer) -> Response:
        return await listing_page(request, who, RunQuery, RunFilters, "runs")

    @router.get("/tasks")
    async def tasks_page(request: Request, who: Viewer) -> Response:
        return await listing_page(request, who, TaskQuery, TaskFilters, "tasks")

    async def listing_page(
        request: Request,
        who: Viewer,
        model: type[RunQuery] | type[TaskQuery],
        kind: type[RunFilters] | type[TaskFilters],
        name: str,
    ) -> Response:
        values = form_values(request)
        columns, shape = (
            (run_columns(), _run_row) if name == "runs" else (task_columns(), _task_row)
        )
        context: dict[str, Any] = {"values": values, "name": name, "next_href": None}
        now = datetime.now(UTC)
        try:
            query = parse(model, values)
            filters = filters_of(query, kind, now, scope_of(who))

            def fetch(cursor: str | None, limit: int = query.limit) -> Page:
                if isinstance(filters, RunFilters):
                    return listing.runs(filters, limit, cursor, now)
                return listing.tasks(filters, limit, cursor, now)

            page = await asyncio.to_thread(fetch, query.cursor)
        except (ValidationError, SopflowError) as exc:
            empty = Table(name, name.capitalize(), columns, [])
            return render(request, who, "listing.html", [empty], status=422,
                          errors=problems(exc), **context)  # fmt: skip
        if request.query_params.get("format") == "csv":
            rows, left = await gathered(page, lambda cursor: fetch(cursor, MAX_PAGE))
            table = Table(name, name.capitalize(), columns, [shape(r) for r in rows])
            more = {"Link": f'<{href(request.url.path, **values, cursor=left)}>; rel="next"'}
            return csv_response(table, more if left else None)
        table = Table(name, name.capitalize(), columns, [shape(r) for r in page.items])
        if page.next_cursor:
            context["next_href"] = href(request.url.path, **(values | {"cursor": page.next_cursor}))
        return render(request, who, "listing.html", [table], **context)

    @router.get("/events")
    async def events_page(request: Request, who: Viewer) -> Response:
        values = form_values(request)
        context: dict[str, Any] = {"values": values, "next_href": None, "query": None}
        columns = [
            Column("executed_at", "At (UTC)"),
            Column("run_id", "Run", href=lambda r: run_href(r["run_id"])),
            Column("sop", "SOP"),
            Column("contact", "Contact"),
            Column("step", "Step"),
            Column("action", "Action"),
            Column("channel", "Channel"),
            Column("planned_at", "Planned (UTC)"),
            Column("rule", "Rule"),
            Column("reason", "Reason"),
        ]
        now = datetime.now(UTC)
        try:
            query = parse(EventQuery, values)
            period = period_of(query, now)
            page = await asyncio.to_thread(
                overview.events, query.kind, period, scope_of(who), query.limit, query.cursor,
                query.channel, query.rule,
            )  # fmt: skip
        except (ValidationError, SopflowError) as exc:
            empty = Table("events", "Step events", columns, [])
            return render(request, who, "events.html", [empty], status=422,
                          errors=problems(exc), **context)  # fmt: skip
        context["query"] = query
        if page.next_cursor:
            context["next_href"] = href(request.url.path, **(values | {"cursor": page.next_cursor}))
        table = Table("events", "Step events", columns, page.items)
        return render(request, who, "events.html", [table], **context)

    return router


# ---------------------------------------------------------------- the overview's parts
def _period(figures: Figures) -> dict[str, datetime]:
    return {"since": figures.period.since, "until": figures.period.until}


def cards(figures: Figures) -> list[dict[str, Any]]:
    """The headline numbers, each with the link to what is behind it."""
    period, judged = _period(figures), figures.judged
    touches = sum(n for _, _, n in figures.touches)
    held = sum(n for _, _, n in figures.held)
    sla = judged.sla_percent
    return [
        {"label": "Enrolments", "value": figures.enrolled, "href": href(RUNS, **period),
         "note": "runs enrolled in the period"},
        {"label": "Touches", "value": touches, "href": href(EVENTS, kind="touch", **period),
         "note": "texts, emails and calls sent"},
        {"label": "Overdue now", "value": judged.overdue_now,
         "href": href(TASKS, status="pending", late=True), "note": "open tasks past due"},
        {"label": "Late tasks", "value": judged.late_tasks,
         "href": href(RUNS, late=True, **period),
         "note": f"past due, in {judged.late_runs} of the period's runs"},
        {"label": "SLA met", "value": "–" if sla is None else f"{sla:g}%",
         "href": href(RUNS, **period),
         "note": f"{judged.sla_met} of {judged.sla_judged} first tasks on time"},
        {"label": "Violations", "value": len(judged.violations), "href": "#violations",
         "note": "touches outside a window or after an opt-out"},
        {"label": "Held back", "value": held, "href": "#held",
         "note": "touches deferred, blocked or skipped"},
    ]  # fmt: skip


def touch_chart(figures: Figures) -> Any:
    period = figures.period
    days = [d.isoformat() for d in period.days()]
    channels = sorted({channel for _, channel, _ in figures.touches})
    values = {(day, channel): n for day, channel, n in figures.touches}

    def link(day: str, channel: str) -> str:
        start = max(datetime.fromisoformat(day).replace(tzinfo=UTC), period.since)
        end = min(datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1), period.until)
        return href(EVENTS, kind="touch", channel=channel, since=start, until=end)

    return stacked_bars(days, channels, values, link)


def overview_tables(figures: Figures) -> list[Table]:
    period = _period(figures)
    enrolments = Table(
        "enrolments", "Enrolments by SOP",
        [Column("sop", "SOP"),
         Column("runs", "Runs", numeric=True, href=lambda r: href(RUNS, sop=r["sop"], **period))],
        [{"sop": sop, "runs": n} for sop, n in figures.enrolments],
    )  # fmt: skip

    def day_link(row: Any) -> str:
        day = datetime.fromisoformat(row["day"]).replace(tzinfo=UTC)
        start, end = (
            max(day, figures.period.since),
            min(day + timedelta(days=1), figures.period.until),
        )
        return href(EVENTS, kind="touch", channel=row["channel"], since=start, until=end)

    touches = Table(
        "touches", "Touches by channel and day",
        [Column("day", "Day (UTC)"), Column("channel", "Channel"),
         Column("touches", "Touches", numeric=True, href=day_link)],
        [{"day": d, "channel": c, "touches": n} for d, c, n in figures.touches],
    )  # fmt: skip
    held = Table(
        "held", "Touches held back, by rule",
        [Column("action", "What"), Column("rule", "Rule"),
         Column("count", "Touches", numeric=True,
                href=lambda r: href(EVENTS, kind=r["action"], rule=r["rule"], **period))],
        [{"action": a, "rule": r, "count": n} for a, r, n in figures.held],
    )  # fmt: skip
    violations = Table(
        "violations", "Violations",
        [Column("at", "At (UTC)"), Column("run_id", "Run", href=lambda r: run_href(r["run_id"])),
         Column("sop", "SOP"), Column("step", "Step"), Column("actor", "Who"),
         Column("rule", "Rule"), Column("reason", "Reason")],
        [{"at": v.at, "run_id": s.facts.workflow_id, "sop": s.facts.sop, "step": v.step,
          "actor": v.actor, "rule": v.rule, "reason": v.reason}
         for s, v in figures.judged.violations],
    )  # fmt: skip
    return [enrolments, touches, held, violations]
