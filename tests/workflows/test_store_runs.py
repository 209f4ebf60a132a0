"""Runs against the store, with the real SOP durations under controlled time skipping:
rep assignment and escalation from the reps table, the touch gate, and enrolment of a follow-up SOP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import TimeSkipper, TimeSkippingConfig, WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.providers.loopback import LoopbackProvider
from sopflow.runtime import BUILD_ID
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import RunState
from sopflow.sop.schema import WEEKDAYS, ContactPolicy, Sop
from sopflow.sop.validate import load_plan
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from workflows.contracts import OutcomeAnswer, OutcomeRequest, SopRunResult
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]
CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}
TEAMS = [
    {
        "id": "inside_sales",
        "supervisor": "sam",
        "reps": [
            {"id": "ana", "name": "Ana Lima", "phone": "+12125550101"},
            {"id": "ben", "name": "Ben Ortiz", "phone": "+12125550102"},
        ],
    },
    {"id": "leads", "reps": [{"id": "sam", "name": "Sam Lee", "phone": "+12125550103"}]},
]
Handle = WorkflowHandle[Any, SopRunResult]


def any_hour(plan: Plan) -> Plan:
    """The same SOP without contact windows or holidays, so the test does not depend on the
    wall-clock day it runs on; the gate and windows have their own tests."""
    policy = ContactPolicy(business_days=list(WEEKDAYS))
    return compile_plan(plan.sop.model_copy(update={"policy": policy}))


@pytest.fixture
async def stepped(skipping_env: WorkflowEnvironment) -> AsyncIterator[TimeSkipper]:
    """A client whose runs do not skip time on their own: the test moves their clock."""
    config = skipping_env.client.config()
    base = Client(**{**config, "interceptors": []})
    yield TimeSkipper(base, config=TimeSkippingConfig(enabled=False))


async def advance_until(
    skipper: TimeSkipper, handle: Handle, done: Callable[[RunState], bool]
) -> RunState:
    """Fast-forward the run's clock to each wake-up until `done` holds."""
    for _ in range(300):
        state = await handle.query("state", result_type=RunState)
        if state is not None and done(state):
            return state
        if state is None or state.wake_at is None:  # an activity is out: real time, briefly
            await asyncio.sleep(0.05)
            continue
        step = max(state.wake_at - state.now, timedelta(seconds=1)) + timedelta(seconds=1)
        await skipper.fast_forward(handle, step)
    raise AssertionError("the run never reached the expected state")


def store_worker(
    env: WorkflowEnvironment, task_queue: str, store: Store, provider: LoopbackProvider
) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(StoreEffects(store, provider)).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    )


def store_for(tmp_path: Path, *plans: Plan) -> Store:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    for plan in plans:
        store.deploy(plan)
    RepDirectory(store.engine).import_teams(TEAMS)
    return store


async def test_escalation_reassignment_ladder_and_booking_enrol_the_reminder(
    skipping_env: WorkflowEnvironment, stepped: TimeSkipper, task_queue: str, tmp_path: Path
) -> None:
    callback = any_hour(load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml"))
    reminder = any_hour(load_plan(ROOT / "sop_definitions" / "store_visit_reminder.yaml"))
    store = store_for(tmp_path, callback, reminder)
    provider = LoopbackProvider()
    enrolment = enrolment_for(callback, CONTACT, task_queue)
    store.upsert_contact(enrolment.contact)
    async with store_worker(skipping_env, task_queue, store, provider):
        await start_enrolment(stepped.client, enrolment, "lead.created", {}, task_queue)
        handle: Handle = stepped.client.get_workflow_handle(
            enrolment.workflow_id, result_type=SopRunResult
        )
        # The rep misses the 30-minute SLA: reminder, supervisor, reassignment, then expiry.
        await advance_until(
            stepped, handle, lambda s: s.step == "retry_calls" and s.phase == "awaiting_outcome"
        )
        events = store.step_events(enrolment.workflow_id)
        actions = [(e.action, e.actor) for e in events if e.kind in ("assign", "escalate")]
        assert actions[:4] == [
            ("assign", "ana"),  # round robin: the first of the team
            ("remind", None),
            ("notify_supervisor", None),
            ("reassign", "ben"),
        ]
        assert actions[4] == ("assign", "ben")  # the ladder's owner rule: the lead moved to ben
        texts = {(to, text.split(":")[0]) for _, _, to, text in provider.sent}
        assert texts >= {
            ("+12125550101", "sopflow task"),
            ("+12125550101", "sopflow reminder"),
            ("+12125550103", "sopflow"),  # the supervisor
            ("+12125550102", "sopflow"),  # "... is now yours"
        }
        contact = store.contact("c-1")
        assert contact is not None and contact.owner == "ben"
        # Booked on the first ladder attempt: the store visit reminder is enrolled.
        answer = await handle.execute_update(
            "report_outcome",
            OutcomeRequest(
                step="retry_calls",
                outcome="booked",
                actor="ben",
                data={
                    "appointment_at": "2027-01-12T15:00:00",
                    "store_name": "Example Home Downtown",
                    "store_address": "12 Market St",
                },
            ),
            result_type=OutcomeAnswer,
        )
        assert answer.accepted
        result = await handle.result()
        assert result.result == "converted"
        enrolled = next(e for e in store.step_events(enrolment.workflow_id) if e.kind == "enroll")
        assert enrolled.outcome == "enrolled"
        child: Handle = skipping_env.client.get_workflow_handle(
            enrolled.detail["run_id"], result_type=SopRunResult
        )
        child_result = await child.result()
    assert child_result.result == "no_show"  # nobody reported the visit
    reminders = [text for _, _, to, text in provider.sent if to == CONTACT["phone"]]
    assert any("12 Market St" in text and "15:00" in text for text in reminders), reminders
    run = store.run(enrolled.detail["run_id"])
    assert run is not None and run.sop_id == "store_visit_reminder" and run.status == "finished"


async def test_an_opt_out_recorded_in_the_store_stops_the_next_touch(
    skipping_env: WorkflowEnvironment, stepped: TimeSkipper, task_queue: str, tmp_path: Path
) -> None:
    sop = Sop.model_validate(
        {
            "id": "drip",
            "version": 1,
            "name": "Drip",
            "owner": "qa",
            "entry": {"events": ["lead.created"]},
            "steps": [
                {"id": "hello", "kind": "sms", "body": "Hello"},
                {"id": "pause", "kind": "wait", "duration": "1d"},
                {"id": "again", "kind": "sms", "body": "Still there?"},
                {"id": "done", "kind": "end", "result": "done"},
            ],
        }
    )
    plan = compile_plan(sop)
    store = store_for(tmp_path, plan)
    provider = LoopbackProvider()
    enrolment = enrolment_for(plan, CONTACT, task_queue)
    async with store_worker(skipping_env, task_queue, store, provider):
        await start_enrolment(stepped.client, enrolment, "lead.created", {}, task_queue)
        handle: Handle = stepped.client.get_workflow_handle(
            enrolment.workflow_id, result_type=SopRunResult
        )
        await advance_until(stepped, handle, lambda s: s.step == "pause")
        # e.g. a STOP reply handled by the gateway
        ConsentBook(store.engine).record("c-1", "revoke", method="sms_stop")
        await stepped.fast_forward(handle, None)
        result = await handle.result()
    assert result.result == "opted_out"
    assert [text for _, _, _, text in provider.sent] == ["Hello"]
    blocked = next(e for e in store.step_events(enrolment.workflow_id) if e.action == "blocked")
    assert blocked.step == "again" and "opted out" in (blocked.reason or "")
