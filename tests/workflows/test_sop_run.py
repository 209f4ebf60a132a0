"""SopRun on a real Temporal dev server: production does what the simulator previews."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import MemoryEffects, SopActivities
from activities.store_effects import StoreEffects
from sopflow.providers.base import Template
from sopflow.providers.loopback import LoopbackProvider
from sopflow.runtime import BUILD_ID
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import EnrollContact, Escalate, Record, RunState
from sopflow.sop.schema import Sop
from sopflow.sop.simulator import simulate
from sopflow.sop.validate import load_plan
from sopflow.store.repository import Store, connect
from workflows.contracts import (
    ContactEventSignal,
    ControlSignal,
    OutcomeAnswer,
    OutcomeRequest,
    ProviderEventSignal,
    SopRunInput,
    SopRunResult,
)
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "tests" / "replay"
CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}


def save_history(name: str, text: str) -> None:
    (REPLAY / f"{name}.json").write_text(text)


def worker(env: WorkflowEnvironment, task_queue: str, effects: MemoryEffects) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(effects).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
        workflow_failure_exception_types=[
            Exception
        ],  # a bug fails the test now, not at its timeout
    )


SOP = {
    "id": "book_me",
    "version": 1,
    "name": "Book me",
    "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {"appointment_at": {"type": "datetime"}},
    "steps": [
        {
            "id": "call_lead",
            "kind": "task",
            "title": "Call",
            "due_within": "30m",
            "outcomes": ["connected", "booked"],
            "outcome_fields": {"booked": ["appointment_at"]},
            "on_outcome": {"booked": "remind"},
        },
        {"id": "lost", "kind": "end", "result": "lost"},
        {
            "id": "remind",
            "kind": "enroll",
            "sop": "book_me",
            "data": {"at": "{{ contact.appointment_at }}"},
        },
        {"id": "won", "kind": "end", "result": "converted"},
    ],
}


async def waiting_for_outcome(handle: Any) -> RunState:
    for _ in range(100):
        state = await handle.query("state", result_type=RunState)
        if state is not None and state.phase == "awaiting_outcome":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError("the run never waited for an outcome")


@pytest.fixture
def book_plan() -> Plan:
    return compile_plan(Sop.model_validate(SOP))


async def test_outcome_update_is_validated_and_only_one_concurrent_report_wins(
    live_env: WorkflowEnvironment, task_queue: str, book_plan: Plan
) -> None:
    effects = MemoryEffects()
    async with worker(live_env, task_queue, effects):
        handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=book_plan, contact={"id": "c-9"}, zones=["UTC"]),
            id=f"sop:book_me:c-9:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        await waiting_for_outcome(handle)
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(
                "report_outcome",
                OutcomeRequest(step="call_lead", outcome="voicemail", actor="rep-1"),
            )
        assert "not allowed for step 'call_lead'" in str(rejected.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as incomplete:
            await handle.execute_update(
                "report_outcome", OutcomeRequest(step="call_lead", outcome="booked", actor="rep-1")
            )
        assert "needs appointment_at" in str(incomplete.value.cause)

        booked = OutcomeRequest(
            step="call_lead",
            outcome="booked",
            actor="rep-1",
            data={"appointment_at": "2026-12-05T11:00:00+00:00"},
        )
        connected = OutcomeRequest(step="call_lead", outcome="connected", actor="rep-2")
        answers = await asyncio.gather(
            handle.execute_update("report_outcome", booked, result_type=OutcomeAnswer),
            handle.execute_update("report_outcome", connected, result_type=OutcomeAnswer),
            return_exceptions=True,
        )
        result = await handle.result()
    accepted = [a for a in answers if not isinstance(a, BaseException) and a.accepted]
    assert len(accepted) == 1, answers
    loser = next(a for a in answers if a not in accepted)
    message = str(loser.cause) if isinstance(loser, WorkflowUpdateFailedError) else loser.message
    # The loser's report reached the run after the winner's (refused by the run), or while the
    # run was closing (Temporal aborts it; the gateway answers 409 "the run has finished").
    assert any(
        reason in message
        for reason in (
            "not waiting for an outcome",
            "the run has finished",
            "aborted by closing workflow",
        )
    ), message
    assert result.result in ("converted", "lost")
    if result.result == "converted":
        enrol = next(
            p for p, _, _ in effects.performed.values() if isinstance(p.command, EnrollContact)
        )
        assert enrol.command.sop == "book_me"


async def test_opt_out_signal_ends_the_run_whatever_it_waits_for(
    live_env: WorkflowEnvironment, task_queue: str, book_plan: Plan
) -> None:
    effects = MemoryEffects()
    async with worker(live_env, task_queue, effects):
        handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=book_plan, contact={"id": "c-7"}, zones=["UTC"]),
            id=f"sop:book_me:c-7:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        state = await waiting_for_outcome(handle)
        await handle.signal(  # a late status for the task's key: recorded, nothing else changes
            "provider_event",
            ProviderEventSignal(key=state.pending or "call_lead:1:1", status="failed"),
        )
        await handle.signal(
            "contact_event", ContactEventSignal(name="opted_out", data={"channel": "sms"})
        )
        result = await handle.result()
    assert result.result == "opted_out"
    records = [p.command for p in effects.records.values() if isinstance(p.command, Record)]
    assert [r.action for r in records][-2:] == ["provider_status", "event"]
    assert records[-2].step == "call_lead" and records[-2].detail["status"] == "failed"


async def test_continue_as_new_carries_the_state_and_never_repeats_a_touch(
    live_env: WorkflowEnvironment, task_queue: str
) -> None:
    """On the plain dev server: with time skipping (experimental), the first timer of a continued
    run fires hours late, so this runs real 2-second waits instead."""
    steps: list[dict[str, Any]] = []
    for n in range(3):
        steps += [
            {"id": f"pause_{n}", "kind": "wait", "duration": "2s"},
            {"id": f"touch_{n}", "kind": "sms", "body": f"Touch {n}"},
        ]
    plan = compile_plan(Sop.model_validate({**SOP, "id": "drip", "steps": steps}))
    effects = MemoryEffects()
    async with worker(live_env, task_queue, effects):
        result = await live_env.client.execute_workflow(
            SopRun.run,
            SopRunInput(
                plan=plan,
                contact={"id": "c-3", "phone": "+12125550123"},
                zones=["UTC"],
                continue_every=2,
            ),
            id=f"sop:drip:c-3:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
    assert result.result == "completed" and result.generation >= 2
    texts = [r["text"] for _, r, _ in effects.performed.values() if "text" in r]
    assert texts == ["Touch 0", "Touch 1", "Touch 2"]  # each once, in order, across runs
    assert all(n == 1 for n in effects.attempts.values())
    preview = simulate(
        plan, {"id": "c-3", "phone": "+12125550123"}, result.state.enrolled_at, zones=["UTC"]
    )
    produced = {key.split("/", 1)[1] for key in [*effects.performed, *effects.records]}
    assert produced == {
        e.key for e in preview.timeline
    }  # keys come from the state, not activity ids


class LosesFirstResponse(LoopbackProvider):
    """Delivers, then loses the response once: the case the outbox exists for."""

    async def send_message(
        self, channel: str, to: str, text: str, key: str, template: Template | None = None
    ) -> str:
        provider_id = await super().send_message(channel, to, text, key, template)
        if len(self.sent) == 1:
            raise ConnectionError("response lost after the message was accepted")
        return provider_id


async def test_the_store_records_every_step_and_a_lost_response_never_sends_twice(
    skipping_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    provider = LosesFirstResponse()
    workflow_id = f"sop:new_lead_callback:c-4:{task_queue}"
    async with Worker(
        skipping_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(StoreEffects(store, provider)).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    ):
        result = await skipping_env.client.execute_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact=CONTACT, zones=["America/New_York"]),
            id=workflow_id,
            task_queue=task_queue,
            result_type=SopRunResult,
            execution_timeout=timedelta(days=30),
        )
    assert result.result == "no_contact"
    assert len(provider.sent) == 1  # the follow-up SMS, sent once although the activity retried
    run = store.run(workflow_id)
    assert run is not None and run.status == "finished" and run.result == "no_contact"
    events = store.step_events(workflow_id)
    preview = simulate(plan, CONTACT, result.state.enrolled_at, zones=["America/New_York"])
    assert [e.key for e in events] == [e.key for e in preview.timeline]
    sms = next(e for e in events if e.kind == "send")
    # In doubt after the lost response; the retry found it at the provider instead of resending.
    assert sms.channel == "sms" and sms.provider_id == provider.sent[0][0]
    assign = next(e for e in events if e.kind == "assign")
    assert assign.due_at is not None and assign.planned_at is not None


async def test_a_paused_run_waits_past_its_timer_until_resumed(
    live_env: WorkflowEnvironment, task_queue: str
) -> None:
    steps = [
        {"id": "pause_0", "kind": "wait", "duration": "2s"},
        {"id": "touch_0", "kind": "sms", "body": "Hi"},
    ]
    plan = compile_plan(Sop.model_validate({**SOP, "id": "drip", "steps": steps}))
    effects = MemoryEffects()
    async with worker(live_env, task_queue, effects):
        handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact={"id": "c-6", "phone": "+12125550123"}, zones=["UTC"]),
            id=f"sop:drip:c-6:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        await handle.signal(
            "control", ControlSignal(action="pause", actor="sup-1", reason="customer complaint")
        )
        await asyncio.sleep(4)
        state = await handle.query("state", result_type=RunState)
        assert (
            state is not None and state.paused and state.step == "pause_0" and not effects.performed
        )
        await handle.signal("control", ControlSignal(action="resume", actor="sup-1"))
        result = await handle.result()
    assert result.result == "completed"
    texts = [r["text"] for _, r, _ in effects.performed.values() if "text" in r]
    assert texts == ["Hi"]
    actions = [
        (p.command.action, p.command.detail.get("actor"))
        for p in effects.records.values()
        if isinstance(p.command, Record)
    ]
    assert ("paused", "sup-1") in actions and ("resumed", "sup-1") in actions


class BrokenNotices(MemoryEffects):
    """The rep's phone network and the enrolment both fail every time they are tried."""

    async def perform(self, key: str, params: Any, rendered: Any) -> Any:
        if isinstance(params.command, Escalate | EnrollContact):
            raise RuntimeError(f"{params.command.kind} is down")
        return await super().perform(key, params, rendered)


async def test_a_reminder_or_enrolment_out_of_retries_is_recorded_and_the_run_goes_on(
    skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    sop = {
        "id": "notices", "version": 1, "name": "Notices", "owner": "qa",
        "entry": {"events": ["lead.created"]},
        "steps": [
            {"id": "enrol", "kind": "enroll", "sop": "elsewhere"},
            {"id": "call", "kind": "task", "title": "Call", "due_within": "10m",
             "outcomes": ["done"], "escalation": [{"after": "0m", "action": "remind"}],
             "expires_after": "10m", "on_outcome": {"expired": "text"}},
            {"id": "text", "kind": "sms", "body": "Sorry we missed you"},
            {"id": "end", "kind": "end", "result": "followed_up"},
        ],
    }  # fmt: skip
    plan = compile_plan(Sop.model_validate(sop))
    effects = BrokenNotices()
    contact = {"id": "c-9", "phone": "+12125550123"}
    async with worker(skipping_env, task_queue, effects):
        result = await skipping_env.client.execute_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact=contact, zones=["UTC"], trigger="lead.created"),
            id=f"notices-{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
    assert result.result == "followed_up"  # the run did not fail with its reminder
    failed = [p.command for p in effects.records.values() if isinstance(p.command, Record)]
    failed = [c for c in failed if c.action == "effect_failed"]
    assert sorted(c.detail["key"] for c in failed) == ["call:1:0:e1", "enrol:1:0"]
    assert all("is down" in c.detail["reason"] for c in failed)
    preview = simulate(plan, contact, result.state.enrolled_at, zones=["UTC"])
    assert preview.result == "followed_up"
