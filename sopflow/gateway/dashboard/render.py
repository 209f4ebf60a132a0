"""Rendering a dashboard page: the templates, the nav, links with filters, a filter form's values
checked by the API's own query models, and the page or one of its tables as CSV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ValidationError

from sopflow.errors import SopflowError
from sopflow.gateway.dashboard.access import PREFIX, REP_HOME
from sopflow.gateway.dashboard.tables import CSV_PARAMS, Table, csv_response, wanted_export
from sopflow.principals import Principal, Role

TEMPLATES = Path(__file__).parents[1] / "templates" / "dashboard"
STATIC = Path(__file__).parents[1] / "static" / "dashboard"
STATIC_URL = f"{PREFIX}/static"
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class NavItem:
    title: str
    href: str


NAV = [
    NavItem("Overview", PREFIX),
    NavItem("Runs", f"{PREFIX}/runs"),
    NavItem("Tasks", f"{PREFIX}/tasks"),
]
# The analytics pages (report_pages.py): reps and teams, SOP funnel, pilots, referral funnel.
REPORTS = [
    NavItem("Reps", f"{PREFIX}/reps"),
    NavItem("Funnel", f"{PREFIX}/funnel"),
    NavItem("Pilots", f"{PREFIX}/pilots"),
    NavItem("Referrals", f"{PREFIX}/referrals"),
]
# A rep opens one page here, their own row of the reps report; the rest of their day is the inbox.
REP_NAV = [NavItem("Inbox", REP_HOME)]
REP_REPORTS = [REPORTS[0]]

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)


def href(path: str, **params: Any) -> str:
    """`path` with the given filters (None left out; times ISO; booleans true/false)."""

    def text(value: Any) -> str:
        match value:
            case bool():
                return "true" if value else "false"
            case datetime() if value == datetime.combine(value.date(), time(), UTC):
                return value.date().isoformat()  # a UTC midnight: the date reads better
            case datetime():
                return value.isoformat()
            case _:
                return str(value)

    given = {k: text(v) for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(given)}" if given else path


def run_href(run_id: str) -> str:
    return f"{PREFIX}/runs/{quote(run_id, safe=':@')}"


def form_values(request: Request) -> dict[str, str]:
    """A GET form's filters: blank fields are "any" (a form sends them empty)."""
    return {k: v for k, v in request.query_params.items() if v != "" and k not in CSV_PARAMS}


def problems(exc: ValidationError | SopflowError | ValueError) -> list[str]:
    """What to fix, one line per problem, naming the parameter (as the API's 422 does)."""
    if isinstance(exc, ValidationError):
        out = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "query"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "not a filter of this page"
            out.append(f"{where}: {message}")
        return out
    return [str(exc)]


def parse(model: type[Model], values: Mapping[str, str]) -> Model:
    return model.model_validate(dict(values))


def render(
    request: Request,
    who: Principal | None,  # None: an error page of a request no sign-in reached
    template: str,
    tables: Sequence[Table] = (),
    status: int = 200,
    **context: Any,
) -> Response:
    """The page, or with `?format=csv[&table=NAME]` one of its tables as a CSV file. A bad
    export request is shown on the page as a 422."""
    errors: list[str] = list(context.pop("errors", []))
    if tables and not errors:
        try:
            export = wanted_export(request.query_params, tables)
        except ValueError as exc:
            errors, status = problems(exc), 422
        else:
            if export is not None:
                return csv_response(export)

    def csv_href(name: str) -> str:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k not in CSV_PARAMS]
        return f"{request.url.path}?{urlencode([*kept, ('format', 'csv'), ('table', name)])}"

    html = _env.get_template(template).render(
        who=who,
        nav=REP_NAV if who is not None and who.role is Role.rep else NAV,
        reports=REP_REPORTS if who is not None and who.role is Role.rep else REPORTS,
        here=request.url.path,
        static=STATIC_URL,
        tables={t.name: t for t in tables},
        csv_href=csv_href,
        errors=errors,
        **context,
    )
    return HTMLResponse(html, status_code=status)
