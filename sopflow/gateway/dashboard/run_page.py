"""One run's page: every step planned against done, what held touches back and by which rule,
the carrier's receipts, outcomes and who reported them, the score with every point lost, the
contact's consent changes, a link to the workflow's history in Temporal's UI, and the
supervisor's controls (pause, resume, cancel with a reason: the run's own control signal, sent
as POST /api/v1/runs/{id}/control sends it, under the signed-in user's name)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client

from sopflow.gateway.auth import CSRF_FIELD
from sopflow.gateway.dashboard.access import PREFIX
from sopflow.gateway.dashboard.pages import Viewer
from sopflow.gateway.dashboard.render import problems, render, run_href
from sopflow.gateway.dashboard.report_tables import rep_href
from sopflow.gateway.dashboard.tables import Column, Table
from sopflow.gateway.dashboard.temporal_ui import TemporalUi
from sopflow.gateway.inputs import Clean
from sopflow.gateway.signals import signal_run
from sopflow.gateway.who import csrf_token
from sopflow.identity.access import HeldTask, Refused, check_control, may_see_run, run_tasks
from sopflow.principals import Principal
from sopflow.store.consent import ConsentBook
from sopflow.store.models import StepEvent
from sopflow.store.overview import Overview
from sopflow.store.reports import Scores
from sopflow.store.repository import Store
from workflows.contracts import ControlSignal

ClientFactory = Callable[[], Awaitable[Client]]
Action = Literal["pause", "resume", "cancel"]
SENT = {"pause": "Pause", "resume": "Resume", "cancel": "Cancel"}


class ControlForm(BaseModel):
    """The control form; the actor is the signed-in user, never a field."""

    model_config = ConfigDict(extra="ignore")  # the form's token and button
    action: Action
    reason: Clean = Field(min_length=1, max_length=500)  # the store's step_events.reason


def _note(event: StepEvent) -> str:
    """What else a step event says, in a few words."""
    detail = event.detail or {}
    match event.action:
        case "provider_status":
            return f"{detail.get('status')} for {detail.get('key')}"
        case "deferred":
            return f"until {detail['until']}" if detail.get("until") else ""
        case "assign":
            return str(detail.get("title", ""))
        case _:
            return ""


def timeline_tables(
    events: list[tuple[StepEvent, str | None]], scores: Any, consent: list[Any]
) -> list[Table]:
    steps = Table(
        "steps", "Every step: planned and done",
        [Column("executed_at", "Done (UTC)"), Column("step", "Step"), Column("action", "Action"),
         Column("channel", "Channel"), Column("planned_at", "Planned (UTC)"),
         Column("due_at", "Due (UTC)"), Column("off_plan", "Done − planned"),
         Column("outcome", "Outcome"), Column("actor", "Who"), Column("rule", "Rule"),
         Column("reason", "Reason"), Column("note", "Note")],
        [{"executed_at": e.executed_at, "step": e.step, "action": e.action, "channel": e.channel,
          "planned_at": e.planned_at, "due_at": e.due_at,
          "off_plan": e.executed_at - e.planned_at if e.planned_at else None,
          "outcome": e.outcome, "actor": e.actor, "rule": rule, "reason": e.reason,
          "note": _note(e)}
         for e, rule in events],
        empty="No step recorded yet.",
    )  # fmt: skip
    held = Table(
        "held", "Deferrals, blocks and skips",
        [Column("executed_at", "At (UTC)"), Column("step", "Step"), Column("action", "What"),
         Column("rule", "Rule"), Column("until", "Until (UTC)"), Column("reason", "Reason")],
        [{"executed_at": e.executed_at, "step": e.step, "action": e.action, "rule": rule,
          "until": (e.detail or {}).get("until"), "reason": e.reason}
         for e, rule in events if rule is not None],
        empty="No touch was held back.",
    )  # fmt: skip
    receipts = Table(
        "receipts", "Carrier receipts",
        [Column("executed_at", "At (UTC)"), Column("touch", "Touch"), Column("status", "Status"),
         Column("provider", "Carrier says")],
        [{"executed_at": e.executed_at, "touch": e.detail.get("key"),
          "status": e.detail.get("status"),
          "provider": ", ".join(f"{k}={v}" for k, v in (e.detail.get("provider") or {}).items())}
         for e, _ in events if e.action == "provider_status"],
        empty="No receipt from the carrier.",
    )  # fmt: skip
    outcomes = Table(
        "outcomes", "Outcomes and who reported them",
        [Column("executed_at", "At (UTC)"), Column("step", "Step"), Column("outcome", "Outcome"),
         Column("actor", "Reported by")],
        [{"executed_at": e.executed_at, "step": e.step, "outcome": e.outcome, "actor": e.actor}
         for e, _ in events if e.action == "outcome"],
        empty="No outcome reported yet.",
    )  # fmt: skip
    items = Table(
        "score", "Score: each required step",
        [Column("step", "Step"), Column("kind", "Kind"),
         Column("actor", "Who", href=lambda r: rep_href(r["actor"])
                if r["kind"] == "task" and r["actor"] else None),
         Column("status", "Status"), Column("due_at", "Due (UTC)"), Column("done_at", "Done (UTC)"),
         Column("late_by", "Late by"), Column("weight", "Weight", numeric=True),
         Column("reason", "Why")],
        [{"step": i.step, "kind": i.kind, "actor": i.actor, "status": i.status,
          "due_at": i.due_at, "done_at": i.done_at, "late_by": i.late_by, "weight": i.weight,
          "reason": i.reason} for i in scores.items],
        empty="Nothing to score yet.",
    )  # fmt: skip
    losses = Table(
        "losses", "Every point lost",
        [Column("step", "Step"), Column("actor", "Who"), Column("status", "Why"),
         Column("points", "Points", numeric=True), Column("reason", "Reason")],
        scores.losses(),
        empty="No point lost.",
    )  # fmt: skip
    consent_changes = Table(
        "consent", "The contact's consent changes",
        [Column("at", "Given (UTC)"), Column("action", "Action"), Column("channels", "Channels"),
         Column("method", "How"), Column("actor", "By"), Column("version", "Disclosure"),
         Column("received_at", "Received (UTC)")],
        [{"at": c.at, "action": c.action, "channels": ", ".join(c.channels), "method": c.method,
          "actor": c.actor, "version": c.disclosure_version, "received_at": c.received_at}
         for c in consent],
        empty="No consent change recorded.",
    )  # fmt: skip
    return [steps, held, receipts, outcomes, items, losses, consent_changes]


def run_router(
    store: Store, overview: Overview, scores: Scores, temporal: ClientFactory, ui: TemporalUi
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    consent = ConsentBook(store.engine)

    async def in_sight(run_id: str, who: Principal) -> list[HeldTask]:
        """The run's tasks; 404 for a run that does not exist or that the viewer may not see
        (the API's rule, identity/access.py): nothing about other teams' runs, not even that
        they exist."""
        tasks = await asyncio.to_thread(run_tasks, store.engine, run_id)
        run = await asyncio.to_thread(store.run, run_id)
        if run is None or not may_see_run(who, tasks):
            raise HTTPException(404, f"unknown run {run_id!r}")
        return tasks

    async def page(
        request: Request, who: Principal, run_id: str, status: int = 200, errors: Sequence[str] = ()
    ) -> Response:
        run = await asyncio.to_thread(store.run, run_id)
        assert run is not None  # in_sight() said so
        events = await asyncio.to_thread(overview.timeline, run_id)
        score = await asyncio.to_thread(scores.run, run_id)
        changes = await asyncio.to_thread(consent.history, run.contact_id)
        sent = request.query_params.get("sent")
        return render(
            request, who, "run.html", timeline_tables(events, score, changes), status,
            run=run, score=score, errors=list(errors), sent=SENT.get(sent or ""),
            history=ui.history(run.workflow_id, run.first_run_id), all_runs=ui.runs(run_id),
            csrf_field=CSRF_FIELD, csrf=csrf_token(request),
            control_href=f"{run_href(run_id)}/control",
        )  # fmt: skip

    @router.get("/runs/{run_id}")
    async def run_page(run_id: str, request: Request, who: Viewer) -> Response:
        await in_sight(run_id, who)
        return await page(request, who, run_id)

    @router.post("/runs/{run_id}/control")
    async def control(run_id: str, request: Request, who: Viewer) -> Response:
        """The form's CSRF token was checked by sign-in (gateway/auth.py) before this runs."""
        tasks = await in_sight(run_id, who)
        try:
            check_control(who, tasks, run_id)
        except Refused as exc:
            return await page(request, who, run_id, 403, [str(exc)])
        form = await request.form()
        try:
            given = ControlForm.model_validate(
                {k: v for k, v in form.items() if isinstance(v, str)}
            )
        except ValidationError as exc:
            return await page(request, who, run_id, 422, problems(exc))
        signal = ControlSignal(action=given.action, actor=who.actor, reason=given.reason)
        if not await signal_run(await temporal(), run_id, "control", signal):
            return await page(
                request, who, run_id, 409, ["the run has finished: nothing to control"]
            )
        return RedirectResponse(f"{run_href(run_id)}?sent={given.action}", status_code=303)

    return router
