"""End to end through Twilio-shaped traffic: a run on a real Temporal server sends its text through
the real `twilio` SDK to the sandbox network; the carrier's signed receipts and the person's
reply come back through the gateway's webhooks to the run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.asgi import free_port, start_server
from sopflow.gateway.app import create_app
from sopflow.gateway.twilio_hooks import TwilioHooks
from sopflow.providers.twilio import TwilioConfig, TwilioProvider
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Chaos, Sandbox
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

TWILIO_TOKEN, API_TOKEN = "sandbox-secret", "api-secret"
ANN = "+12125550123"
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


async def run_through_twilio(
    live_env: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
    reply: str,
    chaos: Chaos | None = None,
) -> tuple[dict[str, Any], Store, Sandbox, str]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    gateway_port, sandbox_port = free_port(), free_port()
    public = f"http://127.0.0.1:{gateway_port}"
    sandbox = Sandbox({SANDBOX_ACCOUNT: TWILIO_TOKEN}, inbound_url=f"{public}/twilio/inbound")
    await sandbox_rule(sandbox, reply)
    sandbox.chaos = chaos or sandbox.chaos
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
        store, temporal, Secret(API_TOKEN), task_queue, TwilioHooks(TWILIO_TOKEN, public)
    )
    servers = [
        await start_server(app, gateway_port),
        await start_server(sandbox.app(), sandbox_port),
    ]
    try:
        async with Worker(
            live_env.client,
            task_queue=task_queue,
            workflows=[SopRun],
            activities=SopActivities(StoreEffects(store, provider)).all(),
            workflow_runner=workflow_runner(),
        ):
            event = {"type": "lead.created", "idempotency_key": task_queue,
                     "contact": {"id": "c-1", "first_name": "Ann", "phone": ANN}}  # fmt: skip
            async with httpx.AsyncClient(base_url=public) as api:
                answer = await api.post(
                    "/api/v1/events", json=event, headers={"Authorization": f"Bearer {API_TOKEN}"}
                )
            run_id = answer.json()["enrolled"][0]["run_id"]
            handle = live_env.client.get_workflow_handle(run_id)
            result = await asyncio.wait_for(handle.result(), timeout=30)
            await asyncio.sleep(0.3)  # late receipts still land in the record
            return result, store, sandbox, run_id
    finally:
        await provider.close()
        for server, task in servers:
            server.should_exit = True
            await task


async def sandbox_rule(sandbox: Sandbox, reply: str) -> None:
    from sopflow.sandbox.server import NumberRule

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
