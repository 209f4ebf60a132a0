"""The rep inbox: a signed-in rep's open tasks (the ones they hold now, soonest due first), each
with its due time in the rep's zone (the teams file's `timezone` of the rep, else of their team,
else the browser's, set by inbox.js), an SLA countdown, the contact, the task's instructions as
rendered when it was assigned, a click-to-call button for call tasks, and an outcome form that
asks for the data the chosen outcome needs (the step's `outcome_fields`, typed by the SOP's
`contact_fields`).

- `GET /inbox`, `GET /inbox/task?run=…&step=…` (the link in the rep's task notice: 403 for a
  task someone else holds, 404 for one that is done);
- `POST /inbox/outcome` reports through the API's own path (gateway/outcomes.py) as the
  signed-in user; `POST /inbox/call` rings the rep, then the lead (gateway/click_to_call.py).
Every page and form is under /inbox: the session and the CSRF token are checked by auth.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, assert_never
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import FormData
from temporalio.client import Client

from sopflow.gateway.auth import CSRF_FIELD
from sopflow.gateway.click_to_call import ClickToCall
from sopflow.gateway.outcomes import report_outcome
from sopflow.gateway.who import csrf_token, principal
from sopflow.identity.access import HeldTask, Refused, check_task, held_task, open_tasks
from sopflow.principals import Principal
from sopflow.sop.plan import Plan
from sopflow.sop.schema import ContactField, TaskSpec, step_action
from sopflow.store.reports import Scores
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

INBOX = "/inbox"
SCRIPT = Path(__file__).with_name("static") / "inbox.js"
# The HTML input for each contact field type (sopflow.sop.schema.ContactField).
INPUTS = {
    "string": "text",
    "number": "number",
    "boolean": "checkbox",
    "date": "date",
    "datetime": "datetime-local",
    "url": "url",
}
NOTICES = {"reported": "Outcome recorded.", "called": "Calling: your phone rings first."}

Who = Annotated[Principal, Depends(principal)]  # module level: FastAPI resolves it here

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=StrictUndefined,
)


@dataclass(frozen=True)
class Field:
    name: str
    input: str  # the <input type>
    label: str


@dataclass(frozen=True)
class Outcome:
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class TaskView:
    run_id: str
    step: str
    title: str
    contact: str
    phone: str
    instructions: str
    due_at: str | None  # ISO, for the script
    due_local: str  # in the rep's zone, or UTC until the browser's zone replaces it
    countdown: str
    overdue: bool
    outcomes: tuple[Outcome, ...]
    can_call: bool


def span(delta: timedelta) -> str:
    """A countdown as a rep reads it: 2 d 3 h, 1 h 5 min, 12 min, under a minute."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min" if mins else "under a minute"


def countdown(due_at: datetime | None, now: datetime) -> tuple[str, bool]:
    if due_at is None:
        return "no due time", False
    if due_at >= now:
        return f"due in {span(due_at - now)}", False
    return f"overdue by {span(now - due_at)}", True


def local_time(at: datetime | None, zone: str | None) -> str:
    if at is None:
        return "-"
    shown = at.astimezone(ZoneInfo(zone or "UTC"))
    return f"{shown:%Y-%m-%d %H:%M} {shown:%Z}"


def _outcomes(spec: TaskSpec, fields: Mapping[str, ContactField]) -> tuple[Outcome, ...]:
    def field(name: str) -> Field:
        declared = fields.get(name)
        kind = declared.type if declared is not None else "string"
        label = declared.description if declared is not None and declared.description else name
        return Field(name, INPUTS[kind], label)

    return tuple(
        Outcome(name, tuple(field(f) for f in spec.outcome_fields.get(name, [])))
        for name in spec.outcomes
    )


def task_spec(plan: Plan, step: str) -> TaskSpec | None:
    action = step_action(plan.step(step)) if plan.has_step(step) else None
    return action if isinstance(action, TaskSpec) else None


def form_data(
    spec: TaskSpec, fields: Mapping[str, ContactField], outcome: str, form: FormData, zone: str
) -> dict[str, Any]:
    """The chosen outcome's fields from the form, typed as the SOP declares them; a local
    date-time is read in `zone`. A field left empty is left out: the run names what is missing."""
    data: dict[str, Any] = {}
    for name in spec.outcome_fields.get(outcome, []):
        raw = form.get(f"field.{name}")
        declared = fields.get(name)
        kind = declared.type if declared is not None else "string"
        if kind != "boolean" and (not isinstance(raw, str) or not raw.strip()):
            continue
        value = raw.strip() if isinstance(raw, str) else ""
        match kind:
            case "boolean":  # a checkbox: sent when ticked
                data[name] = raw == "on"
            case "datetime":
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    raise HTTPException(422, f"{name}: {value!r} is not a date and time") from None
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=ZoneInfo(zone))
                data[name] = moment.isoformat()
            case "number":
                try:
                    number = float(value)
                except ValueError:
                    raise HTTPException(422, f"{name}: {value!r} is not a number") from None
                data[name] = int(number) if number.is_integer() else number
            case "string" | "date" | "url":
                data[name] = value
            case _:
                assert_never(kind)
    return data


def _zone(name: str | None) -> str | None:
    """`name` if it is an IANA zone name this machine knows, else None."""
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def inbox_router(
    store: Store,
    temporal: Callable[[], Awaitable[Client]],
    scores: Scores,
    calls: ClickToCall | None,
) -> APIRouter:
    """`calls`: offer click-to-call on call tasks (None: no phone provider)."""
    router = APIRouter(prefix=INBOX, include_in_schema=False)
    reps = RepDirectory(store.engine)
    script = SCRIPT.read_text()

    def view(tasks: list[HeldTask], zone: str | None, now: datetime) -> list[TaskView]:
        plans: dict[str, Plan] = {}
        views = []
        for task in tasks:
            run = store.run(task.run_id)
            if run is None:
                continue
            if run.digest not in plans:
                plans[run.digest] = store.plan(run.digest)
            plan = plans[run.digest]
            spec = task_spec(plan, task.step)
            contact = store.contact(run.contact_id)
            fields = contact.fields if contact is not None else {}
            name = " ".join(str(fields[k]) for k in ("first_name", "last_name") if fields.get(k))
            left, overdue = countdown(task.due_at, now)
            views.append(
                TaskView(
                    run_id=task.run_id,
                    step=task.step,
                    title=str(task.detail.get("title") or (spec.title if spec else task.step)),
                    contact=name or run.contact_id,
                    phone=(contact.phone if contact is not None else None) or "",
                    instructions=str(task.detail.get("instructions") or ""),
                    due_at=task.due_at.isoformat() if task.due_at else None,
                    due_local=local_time(task.due_at, zone),
                    countdown=left,
                    overdue=overdue,
                    outcomes=_outcomes(spec, plan.sop.contact_fields) if spec else (),
                    can_call=calls is not None and task.channel == "call",
                )
            )
        return views

    async def page(
        request: Request, who: Principal, only: HeldTask | None = None,
        message: str = "", status: int = 200,
    ) -> HTMLResponse:  # fmt: skip
        now = datetime.now(UTC)
        rep = await asyncio.to_thread(reps.rep, who.rep_id)
        zone = rep.timezone if rep is not None else None
        if only is not None:
            tasks = [only]
        elif who.rep_id is not None:
            tasks = await asyncio.to_thread(open_tasks, store.engine, scores, who.rep_id)
        else:
            tasks = []
        views = await asyncio.to_thread(view, tasks, zone, now)
        notice = next((text for key, text in NOTICES.items() if key in request.query_params), "")
        html = _pages.get_template("inbox.html").render(
            who=who, rep=rep, zone=zone or "", tasks=views, single=only is not None,
            message=message, notice=notice, csrf=csrf_token(request), csrf_field=CSRF_FIELD,
        )  # fmt: skip
        return HTMLResponse(html, status_code=status)

    async def open_task(who: Principal, run_id: str, step: str) -> HeldTask:
        """The open task of `step` the user may act on; 403 / 404 saying why not."""
        task = await asyncio.to_thread(held_task, store.engine, run_id, step)
        try:
            check_task(who, task, run_id, step)
        except Refused as exc:
            raise HTTPException(403, str(exc)) from None
        if task is None:  # ops may ask about any step: this one gave no task
            raise HTTPException(404, f"step {step!r} of run {run_id!r} has given nobody a task")
        pending = {
            item.key
            for score in await asyncio.to_thread(lambda: list(scores.runs(workflow_id=run_id)))
            for item in score.items
            if item.kind == "task" and item.status == "pending"
        }
        if task.key not in pending:
            raise HTTPException(404, f"the task of step {step!r} is done or no longer open")
        return task

    async def refusal(request: Request, who: Principal, exc: HTTPException) -> HTMLResponse:
        return await page(request, who, message=str(exc.detail), status=exc.status_code)

    @router.get("")
    async def inbox(request: Request, who: Who) -> HTMLResponse:
        return await page(request, who)

    @router.get("/task")
    async def one_task(request: Request, who: Who, run: str = "", step: str = "") -> Response:
        try:
            task = await open_task(who, run, step)
        except HTTPException as exc:
            return await refusal(request, who, exc)
        return await page(request, who, only=task)

    @router.post("/outcome")
    async def outcome(request: Request, who: Who) -> Response:
        form = await request.form()
        run_id, step, chosen = _text(form, "run"), _text(form, "step"), _text(form, "outcome")
        try:
            if not chosen:
                raise HTTPException(422, "choose an outcome")
            task = await open_task(who, run_id, step)
            run = await asyncio.to_thread(store.run, run_id)
            assert run is not None  # it gave a task
            plan = await asyncio.to_thread(store.plan, run.digest)
            spec = task_spec(plan, task.step)
            if spec is None:
                raise HTTPException(409, f"step {step!r} takes no outcome from a rep")
            rep = await asyncio.to_thread(reps.rep, who.rep_id)
            zone = (rep.timezone if rep else None) or _zone(_text(form, "tz")) or "UTC"
            data = form_data(spec, plan.sop.contact_fields, chosen, form, zone)
            note = _text(form, "note")[:2000]
            await report_outcome(store, temporal, who, run_id, step, chosen, note, data)
        except HTTPException as exc:
            return await refusal(request, who, exc)
        return RedirectResponse(f"{INBOX}?reported=1", status_code=303)

    @router.post("/call")
    async def call(request: Request, who: Who) -> Response:
        form = await request.form()
        try:
            if calls is None:
                raise HTTPException(409, "click-to-call needs a phone provider")
            await calls.call(who, _text(form, "run"), _text(form, "step"))
        except HTTPException as exc:
            return await refusal(request, who, exc)
        return RedirectResponse(f"{INBOX}?called=1", status_code=303)

    @router.get("/inbox.js")
    async def inbox_js() -> Response:
        return Response(script, media_type="text/javascript")

    return router
