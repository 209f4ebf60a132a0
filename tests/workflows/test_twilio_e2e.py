"""End to end through Twilio-shaped traffic: a run on a real Temporal server sends its text through
the real `twilio` SDK to the sandbox network; the carrier's signed receipts and the person's
reply come back through the gateway's webhooks to the run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port, start_server
from sopflow.compliance.rules import load_rules
from sopflow.gateway.app import create_app
from sopflow.gateway.twilio_hooks import TwilioHooks
from sopflow.providers.twilio import TwilioConfig, TwilioProvider
from sopflow.runtime import build_worker
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Chaos, NumberRule, Sandbox
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from sopflow.upkeep import Upkeep

TWILIO_TOKEN, API_TOKEN = "sandbox-secret", "api-secret"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ANN, REP = "+12125550123", "+12125550101"
SOP = {
    "id": "ask_for_a_time", "version": 1, "name": "Ask", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "interrupts": {"opted_out": "stopped"},
    "steps": [
        {"id": "ask", "kind": "sms", "body": "Hi {{ contact.first_name }}, when can we call?"},
        {"id": "wait_reply", "kind": "wait_for", "events": ["reply"], "timeout": "1d",
         "on_event": {"reply": "replied"}, "on_timeout": "silent"},
        {"id": "replied", "kind": "end", "result": "replied"},
        {"id": "silent", "kind": "end", "result": "no_contact"},
        {"id": "stopped", "kind": "end", "result": "opted_out"},
    ],
}  # fmt: skip


@dataclass
class Stack:
    api: httpx.AsyncClient
    store: Store
    sandbox: Sandbox
    env: WorkflowEnvironment
    sandbox_url: str

    async def enrol(self, key: str, phone: str = ANN) -> str:
        event = {"type": "lead.created", "idempotency_key": key,
                 "contact": {"id": "c-1", "first_name": "Ann", "phone": phone}}  # fmt: skip
        answer = await self.api.post("/api/v1/events", json=event, headers=AUTH)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["enrolled"][0]["run_id"])


@contextlib.asynccontextmanager
async def twilio_stack(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, sop: dict[str, Any]
) -> AsyncIterator[Stack]:
    """Store, worker (TwilioProvider → sandbox), gateway with webhooks and click-to-call."""
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(sop)))
    RepDirectory(store.engine).import_teams(
        [{"id": "t", "name": "T", "reps": [{"id": "ana", "name": "Ana", "phone": REP}]}]
    )
    gateway_port, sandbox_port = free_port(), free_port()
    public = f"http://127.0.0.1:{gateway_port}"
    sandbox = Sandbox({SANDBOX_ACCOUNT: TWILIO_TOKEN}, inbound_url=f"{public}/twilio/inbound")
    provider = TwilioProvider(
        TwilioConfig(
            SANDBOX_ACCOUNT,
            TWILIO_TOKEN,
            SANDBOX_FROM,
            public,
            base_url=f"http://127.0.0.1:{sandbox_port}",
        )
    )

    async def temporal() -> Any:
        return live_env.client

    app = create_app(
        store, temporal, Secret(API_TOKEN), task_queue, TwilioHooks(TWILIO_TOKEN, public),
        provider, load_rules(),
    )  # fmt: skip
    servers = [
        await start_server(app, gateway_port),
        await start_server(sandbox.app(), sandbox_port),
    ]
    try:
        async with (
            build_worker(live_env.client, store, task_queue, (), provider),
            httpx.AsyncClient(base_url=public) as api,
        ):
            yield Stack(api, store, sandbox, live_env, f"http://127.0.0.1:{sandbox_port}")
    finally:
        await provider.close()
        for server, task in servers:
            server.should_exit = True
            await task


async def run_through_twilio(
    live_env: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
    reply: str,
    chaos: Chaos | None = None,
) -> tuple[dict[str, Any], Store, Sandbox, str]:
    async with twilio_stack(live_env, task_queue, tmp_path, SOP) as stack:
        await sandbox_rule(stack.sandbox, reply)
        stack.sandbox.chaos = chaos or stack.sandbox.chaos
        run_id = await stack.enrol(task_queue)
        result = await asyncio.wait_for(live_env.client.get_workflow_handle(run_id).result(), 30)
        await asyncio.sleep(0.3)  # late receipts still land in the record
        return result, stack.store, stack.sandbox, run_id


async def sandbox_rule(sandbox: Sandbox, reply: str) -> None:
    sandbox.rules[ANN] = NumberRule(reply=reply, reply_after=0.5)


async def test_a_text_its_receipts_and_the_reply_reach_the_run(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    result, store, sandbox, run_id = await run_through_twilio(
        live_env, task_queue, tmp_path, "Tomorrow at 5"
    )
    assert result["result"] == "replied"
    (sent,) = [r for r in sandbox.resources.values() if r.direction == "outbound-api"]
    assert sent.body == "Hi Ann, when can we call?" and sent.to == ANN
    events = store.step_events(run_id)
    send = next(e for e in events if e.kind == "send")
    assert send.provider_id == sent.sid
    receipts = [e.detail["status"] for e in events if e.action == "provider_status"]
    assert receipts[:2] == ["sent", "delivered"]  # signed callbacks, in rank order
    reply = next(e for e in events if e.action == "event")
    assert reply.detail["data"]["text"] == "Tomorrow at 5", reply.detail


async def test_a_stop_reply_opts_out_and_ends_the_run(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    result, store, _, _ = await run_through_twilio(live_env, task_queue, tmp_path, "STOP")
    assert result["result"] == "opted_out"
    assert store.opted_out_at("c-1") is not None


async def test_duplicated_and_reordered_receipts_are_recorded_once_in_rank_order(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    chaos = Chaos(duplicate=1.0, shuffle=True, step_seconds=0.01)
    result, store, sandbox, run_id = await run_through_twilio(
        live_env, task_queue, tmp_path, "ok", chaos
    )
    assert result["result"] == "replied"
    sent_to_us = [
        p["MessageStatus"] for url, p in sandbox.callbacks_sent if "/twilio/status" in url
    ]
    assert len(sent_to_us) == 4  # sent and delivered, each twice, in some order
    receipts = [
        e.detail["status"] for e in store.step_events(run_id) if e.action == "provider_status"
    ]
    assert receipts in (["sent", "delivered"], ["delivered"])  # never back to "sent", never twice


CALL_SOP = {
    "id": "rep_calls", "version": 1, "purpose": "service",  # calls at any hour: the test must not depend on the clock
    "name": "Rep calls", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [
        {"id": "call_lead", "kind": "task", "title": "Call", "channel": "call",
         "due_within": "30m", "assign": {"strategy": "rep", "rep": "ana"},
         "outcomes": ["connected", "booked", "no_answer", "busy"],
         "outcome_fields": {"booked": ["appointment_at"]},
         "on_outcome": {"no_answer": "missed", "busy": "missed", "booked": "won"}},
        {"id": "lost", "kind": "end", "result": "lost"},
        {"id": "missed", "kind": "end", "result": "no_contact"},
        {"id": "won", "kind": "end", "result": "converted"},
    ],
}  # fmt: skip


async def wait_for_task(stack: Stack, run_id: str) -> None:
    for _ in range(100):
        steps = (await stack.api.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()["steps"]
        if any(s["action"] == "assign" for s in steps):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the task was never assigned")


async def test_click_to_call_no_answer_is_reported_by_the_carrier(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with twilio_stack(live_env, task_queue, tmp_path, CALL_SOP) as stack:
        stack.sandbox.rules[ANN] = NumberRule(call="no_answer")
        run_id = await stack.enrol(task_queue)
        await wait_for_task(stack, run_id)
        url = f"/api/v1/runs/{run_id}/tasks/call_lead/call"
        answer = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert answer.status_code == 202, answer.text
        again = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert again.json() == {**answer.json(), "already": True}  # one call per task attempt
        result = await asyncio.wait_for(live_env.client.get_workflow_handle(run_id).result(), 30)
        assert result["result"] == "no_contact"
        outcome = next(e for e in stack.store.step_events(run_id) if e.action == "outcome")
        assert (outcome.outcome, outcome.actor) == ("no_answer", "carrier")
        rep_leg = stack.sandbox.resources[answer.json()["call_sid"]]
        assert rep_leg.to == REP and f"{ANN}</Dial>" in rep_leg.body


async def test_click_to_call_connected_then_the_rep_adds_the_booking(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with twilio_stack(live_env, task_queue, tmp_path, CALL_SOP) as stack:
        run_id = await stack.enrol(task_queue)
        await wait_for_task(stack, run_id)
        answer = await stack.api.post(
            f"/api/v1/runs/{run_id}/tasks/call_lead/call", json={"rep": "ana"}, headers=AUTH
        )
        assert answer.status_code == 202, answer.text
        for _ in range(100):
            events = stack.store.step_events(run_id)
            statuses = [e.detail.get("status") for e in events if e.action == "provider_status"]
            if "connected" in statuses:
                break
            await asyncio.sleep(0.1)
        connected = next(e for e in events if e.detail.get("status") == "connected")
        assert connected.detail["provider"]["duration"] == 42
        booked = {"step": "call_lead", "outcome": "booked",
                  "data": {"appointment_at": "2026-12-05T11:00:00+00:00"}}  # fmt: skip
        report = await stack.api.post(f"/api/v1/runs/{run_id}/outcomes", json=booked, headers=AUTH)
        assert report.status_code == 200, report.text
        result = await asyncio.wait_for(live_env.client.get_workflow_handle(run_id).result(), 30)
        assert result["result"] == "converted"


async def test_click_to_call_is_gated_and_checked(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with twilio_stack(live_env, task_queue, tmp_path, CALL_SOP) as stack:
        run_id = await stack.enrol(task_queue)
        await wait_for_task(stack, run_id)
        url = f"/api/v1/runs/{run_id}/tasks/call_lead/call"
        ConsentBook(stack.store.engine).record(
            "c-1", "revoke", channels=["call"], method="rep_call"
        )
        blocked = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert blocked.status_code == 409 and "opted out of call" in blocked.text
        assert not [r for r in stack.sandbox.resources.values() if r.kind == "call"]  # no call
        nobody = await stack.api.post(url, json={"rep": "ghost"}, headers=AUTH)
        assert nobody.status_code == 422
        wrong_step = await stack.api.post(
            f"/api/v1/runs/{run_id}/tasks/lost/call", json={"rep": "ana"}, headers=AUTH
        )
        assert wrong_step.status_code == 409 and "not waiting" in wrong_step.text
        unknown = await stack.api.post(
            "/api/v1/runs/nope/tasks/x/call", json={"rep": "ana"}, headers=AUTH
        )
        assert unknown.status_code == 404


async def test_a_rep_clicks_to_call_their_own_tasks_from_their_own_phone(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The rep of a token rings from their own phone, on the tasks they hold only."""
    from sopflow.identity.users import UserBook
    from sopflow.principals import Role

    async with twilio_stack(live_env, task_queue, tmp_path, CALL_SOP) as stack:
        other = {
            "id": "u",
            "name": "U",
            "reps": [{"id": "ben", "name": "Ben", "phone": "+12125550102"}],
        }
        RepDirectory(stack.store.engine).import_teams([other])
        users = UserBook(stack.store.engine)
        tokens = {}
        for rep in ("ana", "ben"):
            users.add(rep, Role.rep, rep)
            tokens[rep] = {"Authorization": f"Bearer {users.issue_token(rep)[1]}"}
        run_id = await stack.enrol(task_queue)
        await wait_for_task(stack, run_id)
        url = f"/api/v1/runs/{run_id}/tasks/call_lead/call"
        theirs = await stack.api.post(url, json={}, headers=tokens["ben"])
        assert theirs.status_code == 403, theirs.text
        assert (
            theirs.json()["detail"]
            == "the task of step 'call_lead' is held by 'ana', not by you ('ben')"
        )
        posing = await stack.api.post(url, json={"rep": "ben"}, headers=tokens["ana"])
        assert posing.status_code == 403 and "from their own phone, not 'ben''s" in posing.text
        assert not [r for r in stack.sandbox.resources.values() if r.kind == "call"]  # no call
        mine = await stack.api.post(url, json={}, headers=tokens["ana"])
        assert mine.status_code == 202 and mine.json()["rep"] == "ana", mine.text
        assert stack.sandbox.resources[mine.json()["call_sid"]].to == REP  # her phone rang


async def test_a_click_to_call_in_doubt_never_rings_the_rep_twice(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with twilio_stack(live_env, task_queue, tmp_path, CALL_SOP) as stack:
        run_id = await stack.enrol(task_queue)
        await wait_for_task(stack, run_id)
        stack.sandbox.faults.append("lost")  # the call is placed, the answer lost
        url = f"/api/v1/runs/{run_id}/tasks/call_lead/call"
        first = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert first.status_code == 502 and "may have been placed" in first.text
        second = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert second.status_code == 409 and "being placed" in second.text
        calls = [r for r in stack.sandbox.resources.values() if r.kind == "call" and r.to == REP]
        assert len(calls) == 1  # the rep's phone rang once
        provider = TwilioProvider(
            TwilioConfig(
                SANDBOX_ACCOUNT, TWILIO_TOKEN, SANDBOX_FROM, "http://x", base_url=stack.sandbox_url
            )
        )
        try:  # upkeep finds the call at the provider; the next click gets it
            found = await Upkeep(stack.store, provider).reconcile_outbox(
                datetime.now(UTC) + timedelta(minutes=10)
            )
        finally:
            await provider.close()
        assert found["found"] == 1
        third = await stack.api.post(url, json={"rep": "ana"}, headers=AUTH)
        assert third.json() == {"call_sid": calls[0].sid, "rep": "ana", "already": True}
