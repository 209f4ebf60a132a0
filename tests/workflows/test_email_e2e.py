"""Email end to end: a run on a real Temporal server sends through the SMTP mailer to the sandbox
mail server; the mail client's one-click unsubscribe reaches the gateway, and the next email is
blocked by the same opt-out records a STOP writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port, start_server
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.gateway.app import create_app
from sopflow.providers.smtp import SmtpConfig, SmtpMailer, message_id
from sopflow.runtime import build_worker
from sopflow.sandbox.mail import MailSandbox
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

AUTH = {"Authorization": "Bearer api-secret"}
SOP = {
    "id": "welcome_mail", "version": 1, "name": "Welcome mail", "owner": "qa",
    "purpose": "service",  # any hour: the test must not depend on the clock
    "entry": {"events": ["lead.created"]},
    "steps": [
        {"id": "hello", "kind": "email", "subject": "Welcome, {{ contact.first_name }}",
         "body": "Hi {{ contact.first_name }},\nthanks for signing up.", "on_failed": "bounced"},
        {"id": "wait_go", "kind": "wait_for", "events": ["go"], "timeout": "1d",
         "on_event": {"go": "again"}, "on_timeout": "done"},
        {"id": "again", "kind": "email", "subject": "Still there?", "body": "Just checking.",
         "on_failed": "unsubscribed"},
        {"id": "done", "kind": "end", "result": "done"},
        {"id": "unsubscribed", "kind": "end", "result": "unsubscribed"},
        {"id": "bounced", "kind": "end", "result": "bounced"},
    ],
}  # fmt: skip


@dataclass
class Stack:
    api: httpx.AsyncClient
    store: Store
    mail: MailSandbox
    env: WorkflowEnvironment
    task_queue: str  # unique per test: part of every key, as runs share one Temporal server

    async def enrol(self, key: str, contact: dict[str, Any]) -> str:
        key = f"{self.task_queue}-{key}"
        event = {"type": "lead.created", "idempotency_key": key, "contact": contact}
        answer = await self.api.post("/api/v1/events", json=event, headers=AUTH)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["enrolled"][0]["run_id"])

    async def result(self, run_id: str) -> dict[str, Any]:
        handle = self.env.client.get_workflow_handle(run_id)
        return await asyncio.wait_for(handle.result(), 30)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def mail_stack(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    gateway_port, smtp_port = free_port(), free_port()
    links = UnsubscribeLinks(f"http://127.0.0.1:{gateway_port}", b"e2e-key")
    mail = MailSandbox()
    smtp = await mail.serve("127.0.0.1", smtp_port)
    mailer = SmtpMailer(SmtpConfig("127.0.0.1", smtp_port, "hello@acme.example", starttls=False))

    async def temporal() -> Any:
        return live_env.client

    app = create_app(store, temporal, Secret("api-secret"), task_queue, links=links)
    server, task = await start_server(app, gateway_port)
    try:
        async with (
            build_worker(live_env.client, store, task_queue, (), None, mailer, links),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}") as api,
        ):
            yield Stack(api, store, mail, live_env, task_queue)
    finally:
        server.should_exit = True
        await task
        smtp.close()


async def test_an_email_goes_out_and_one_click_unsubscribe_blocks_the_next(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with mail_stack(live_env, task_queue, tmp_path) as stack:
        contact = {
            "id": "c-1",
            "first_name": "Ann",
            "email": "Ann@Example.COM",
            "phone": "+12125550123",
        }
        run_id = await stack.enrol("k1", contact)
        for _ in range(100):
            if stack.mail.mailbox("ann@example.com"):
                break
            await asyncio.sleep(0.1)
        (first,) = stack.mail.mailbox("ann@example.com")
        view = first.view()
        assert view["to"] == ["Ann@example.com"] and view["subject"] == "Welcome, Ann"
        assert view["text"].startswith("Hi Ann,\nthanks for signing up.\n\nUnsubscribe: http://")
        assert view["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
        await stack.mail.one_click(first.id)  # the mail client's button: a POST to the gateway
        assert first.unsubscribed is not None and first.unsubscribed.startswith("200")
        go = {"type": "go", "idempotency_key": f"{task_queue}-go", "contact": {"id": "c-1"}}
        assert (await stack.api.post("/api/v1/events", json=go, headers=AUTH)).status_code == 202
        result = await stack.result(run_id)
        assert result["result"] == "unsubscribed"  # the email failed over; the run went on
        assert len(stack.mail.mailbox("ann@example.com")) == 1  # nothing after the unsubscribe
        events = {
            e.step: e for e in stack.store.step_events(run_id) if e.kind in ("send", "record")
        }
        assert events["hello"].provider_id == message_id(f"{run_id}/hello:1:0", "acme.example")
        assert events["hello"].channel == "email"
        blocked = [e for e in stack.store.step_events(run_id) if e.action == "blocked"]
        assert [(e.step, e.detail.get("rule")) for e in blocked] == [("again", "opt_out_channel")]


async def test_a_bounced_or_missing_address_takes_the_failure_path(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    async with mail_stack(live_env, task_queue, tmp_path) as stack:
        bounced = await stack.enrol(
            "k1", {"id": "c-1", "first_name": "Bo", "email": "bounce@example.com"}
        )
        assert (await stack.result(bounced))["result"] == "bounced"
        (failed,) = [e for e in stack.store.step_events(bounced) if e.action == "failed"]
        assert failed.reason.startswith("SMTP 550"), failed.reason
        missing = await stack.enrol("k2", {"id": "c-2", "first_name": "Cy"})
        assert (await stack.result(missing))["result"] == "bounced"
        (failed,) = [e for e in stack.store.step_events(missing) if e.action == "failed"]
        assert failed.reason == "the contact has no email (email needs an email address)"
        assert stack.mail.inbox == []
        invalid = {"type": "lead.created", "idempotency_key": "k3",
                   "contact": {"id": "c-3", "email": "not an address"}}  # fmt: skip
        answer = await stack.api.post("/api/v1/events", json=invalid, headers=AUTH)
        assert answer.status_code == 422 and "invalid email 'not an address'" in answer.text
