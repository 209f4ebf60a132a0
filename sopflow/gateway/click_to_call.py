"""Rep click-to-call: `POST /api/v1/runs/{run_id}/tasks/{step}/call` calls the rep's phone and,
when they answer, dials the lead. The lead leg's result comes back from Twilio (/twilio/voice):
a call that did not connect reports the task's outcome itself (no_answer, busy) with the carrier
as the actor; a connected call is recorded with its duration and the rep adds what only they
know (booked, not interested…). Calling the lead is a touch: the compliance gate judges it first.
One call per task attempt: a second click answers with the first call. Who may click: the rep
who holds the task (from their own phone), their supervisor, ops (sopflow/identity/access.py);
the rep inbox's button calls the same `ClickToCall.call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError

from sopflow.compliance.gate import TouchRequest, applicable, check_touch, lookback
from sopflow.compliance.rules import Rule, contact_regions
from sopflow.errors import InvalidContactError
from sopflow.gateway.inputs import Clean
from sopflow.gateway.outcomes import authorise_task
from sopflow.gateway.signals import signal_run
from sopflow.gateway.who import principal
from sopflow.principals import Principal, Role
from sopflow.providers.base import Provider, ProviderError
from sopflow.sop import clock
from sopflow.sop.protocol import RunState
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory
from workflows.contracts import ProviderEventSignal


class CallIn(BaseModel):
    rep: Clean | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="the rep whose phone rings first (default: the user's own rep; a rep "
        "calls from their own phone only)",
    )


class ClickToCall:
    def __init__(
        self,
        store: Store,
        temporal: Callable[[], Awaitable[Client]],
        provider: Provider,
        rules: Sequence[Rule],
    ) -> None:
        self.store, self.temporal, self.provider, self.rules = store, temporal, provider, rules
        self.reps, self.consent = RepDirectory(store.engine), ConsentBook(store.engine)

    async def call(
        self, who: Principal, run_id: str, step: str, rep_id: str | None = None
    ) -> dict[str, Any]:
        """Ring `rep_id`'s phone (default: the user's rep), then the lead: an HTTPException
        says why not (403 not theirs, 409 not waiting for a call or not allowed now…)."""
        rep_id = rep_id or who.rep_id
        if rep_id is None:
            raise HTTPException(422, "rep: give the rep whose phone rings first")
        if who.role is Role.rep and rep_id != who.rep_id:
            raise HTTPException(403, f"a rep calls from their own phone, not {rep_id!r}'s")
        await authorise_task(self.store, who, run_id, step)
        store, temporal, provider, rules = self.store, self.temporal, self.provider, self.rules
        reps, consent = self.reps, self.consent
        run = await asyncio.to_thread(store.run, run_id)
        if run is None:
            raise HTTPException(404, f"unknown run {run_id!r}")
        client = await temporal()
        try:
            state = await client.get_workflow_handle(run_id).query("state", result_type=RunState)
        except RPCError:
            raise HTTPException(409, f"run {run_id!r} is not running") from None
        if state is None or state.step != step or state.phase != "awaiting_outcome":
            where = f"{state.step!r}, {state.phase}" if state else "not started"
            raise HTTPException(
                409, f"step {step!r} is not waiting for a call (the run is at {where})"
            )
        events = await asyncio.to_thread(store.step_events, run_id)
        task = next((e for e in reversed(events) if e.kind == "assign" and e.step == step), None)
        if task is None or task.channel != "call":
            raise HTTPException(409, f"step {step!r} is not a call task")
        rep = await asyncio.to_thread(reps.rep, rep_id)
        if rep is None or not rep.phone:
            raise HTTPException(422, f"rep {rep_id!r} is unknown, inactive or has no phone")
        contact = await asyncio.to_thread(store.contact, run.contact_id)
        if contact is None or not contact.phone:
            raise HTTPException(422, f"contact {run.contact_id!r} has no phone number")
        person = {**contact.fields, "phone": contact.phone, "timezone": contact.timezone}
        plan = await asyncio.to_thread(store.plan, run.digest)
        now = datetime.now(UTC)
        try:
            zones, _ = clock.contact_zones(person, plan.sop.policy.timezone)
        except InvalidContactError as exc:
            raise HTTPException(422, str(exc)) from None
        request = TouchRequest(
            channel="call", at=now, zones=zones, regions=contact_regions(person),
            sop=plan.sop.id, purpose=plan.sop.purpose, priority=plan.sop.priority,
            policy=plan.sop.policy,
        )  # fmt: skip
        matching = applicable(rules, request)
        facts = await asyncio.to_thread(
            consent.facts, run.contact_id, contact.phone, now, lookback(matching)
        )
        verdict = check_touch(request, facts, matching)
        if not verdict.allowed:
            retry = (
                f"; allowed again from {verdict.retry_at.isoformat()}" if verdict.retry_at else ""
            )
            raise HTTPException(409, f"not now: {verdict.reason} (rule {verdict.rule}){retry}")
        key = f"{run_id}/{task.key}"
        claim = await asyncio.to_thread(
            store.outbox_begin,
            f"{key}/dial",
            run_id,
            "call",
            {"channel": "call", "to": rep.phone, "text": None},
        )
        if claim.status == "done":
            return {"call_sid": claim.provider_id, "rep": rep.id, "already": True}
        if claim.status == "pending" and claim.attempts > 1:
            raise HTTPException(409, "a call for this task is being placed: retry in a moment")
        try:
            sid = await provider.click_to_call(rep.phone, contact.phone, key)
        except ProviderError as exc:
            if exc.kind == "in_doubt":  # maybe ringing: stays claimed until upkeep finds out
                raise HTTPException(
                    502, f"the call may have been placed ({exc}); it is being checked"
                ) from None
            await asyncio.to_thread(
                store.outbox_finish, f"{key}/dial", "failed", None, {"reason": str(exc)}
            )
            raise HTTPException(502, f"the call could not be placed: {exc}") from None
        await asyncio.to_thread(store.outbox_finish, f"{key}/dial", "done", sid)
        await signal_run(
            client, run_id, "provider_event",
            ProviderEventSignal(key=task.key, status="dialing", detail={"rep": rep.id, "sid": sid}),
        )  # fmt: skip
        return {"call_sid": sid, "rep": rep.id, "already": False}


def click_to_call_router(calls: ClickToCall) -> APIRouter:
    """Its routes are under /api/: the gateway's authentication checks the token."""
    router = APIRouter(prefix="/api/v1")

    @router.post("/runs/{run_id}/tasks/{step}/call", status_code=202)
    async def call(
        run_id: Clean, step: Clean, body: CallIn, who: Annotated[Principal, Depends(principal)]
    ) -> dict[str, Any]:
        return await calls.call(who, run_id, step, body.rep)

    return router
