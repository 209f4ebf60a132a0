"""Reporting a task's outcome, for the API (`POST /api/v1/runs/{run_id}/outcomes`) and the rep
inbox's form alike: who may report (sopflow/identity/access.py), the report's dates checked as
intake's, then the run's `report_outcome` update. The actor is the authenticated user's, never
a field of the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from sopflow.enrolment import check_report_dates
from sopflow.identity.access import Refused, check_task, held_task
from sopflow.principals import Principal
from sopflow.store.repository import Store
from workflows.contracts import OutcomeAnswer, OutcomeRequest


def check_actor(given: str | None, principal: Principal, what: str = "reported") -> None:
    """A body's `actor`, kept for old clients, must be the signed-in user's own (422 else)."""
    if given is not None and given != principal.actor:
        raise HTTPException(
            422,
            f"actor {given!r} is not you: it is {what} as {principal.actor!r}, the user of "
            "your token or session; leave `actor` out",
        )


def update_refusal(exc: WorkflowUpdateFailedError) -> str:
    """Why the run refused an update, in the validator's words. str() of the Temporal failure
    would start with the exception's class ("ValueError: step …"): internals, not a reason."""
    cause = exc.cause
    if isinstance(cause, FailureError) and cause.message:
        return cause.message
    return "the run refused the report"


async def authorise_task(store: Store, principal: Principal, run_id: str, step: str) -> None:
    """404 for an unknown run, 403 naming why when the task is not the user's to report on."""
    if principal.sees_everything:
        return  # an unknown run is the run's 404 below, as before roles
    if await asyncio.to_thread(store.run, run_id) is None:
        raise HTTPException(404, f"unknown run {run_id!r}")
    task = await asyncio.to_thread(held_task, store.engine, run_id, step)
    try:
        check_task(principal, task, run_id, step)
    except Refused as exc:
        raise HTTPException(403, str(exc)) from None


async def report_outcome(
    store: Store,
    temporal: Callable[[], Awaitable[Client]],
    principal: Principal,
    run_id: str,
    step: str,
    outcome: str,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> OutcomeAnswer:
    """The outcome delivered to the run, or an HTTPException saying why not (403 not yours,
    404 no run, 409 finished or beaten by another report, 422 refused by the run)."""
    data = data or {}
    await authorise_task(store, principal, run_id, step)
    # The run merges the data into its contact: its dates are checked as intake's are.
    await asyncio.to_thread(check_report_dates, store, run_id, data)
    request = OutcomeRequest(
        step=step, outcome=outcome, actor=principal.actor, note=note, data=data
    )
    handle = (await temporal()).get_workflow_handle(run_id)
    try:
        answer: OutcomeAnswer = await handle.execute_update(
            "report_outcome", request, result_type=OutcomeAnswer
        )
    except WorkflowUpdateFailedError as exc:
        raise HTTPException(422, update_refusal(exc)) from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        # Not found: no such run, or one that ended while this report waited to be
        # delivered (Temporal aborts it: "workflow update was aborted by closing workflow").
        if await asyncio.to_thread(store.run, run_id) is None:
            raise HTTPException(404, f"unknown run {run_id!r}") from None
        raise HTTPException(409, "the run has finished: it takes no more reports") from None
    if not answer.accepted:  # another report for this step won a moment earlier
        raise HTTPException(409, answer.message)
    return answer
