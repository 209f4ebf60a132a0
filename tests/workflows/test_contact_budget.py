"""A run's contact stays within its budget (64 KiB of JSON) however much data events bring: a
signal cannot be refused, so the run keeps the data that fits and goes on (and continues as
new); an outcome report that would not fit is refused with the reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import MemoryEffects, SopActivities
from sopflow.limits import CONTACT_BUDGET, EVENT_DATA_BUDGET, json_size
from sopflow.runtime import BUILD_ID
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import Record, RunState
from sopflow.sop.schema import Sop
from workflows.contracts import (
    ContactEventSignal,
    OutcomeAnswer,
    OutcomeRequest,
    SopRunInput,
    SopRunResult,
)
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

SOP = {
    "id": "nurture", "version": 1, "name": "Nurture", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [
        {"id": "call", "kind": "task", "title": "Call", "due_within": "30d",
         "outcomes": ["connected"], "on_outcome": {"connected": "done"}},
        {"id": "done", "kind": "end", "result": "converted"},
    ],
}  # fmt: skip
TEXT = 2000  # the gateway's longest text value


def event_data(n: int) -> dict[str, str]:
    """Data as large as the gateway lets an event be: 8 texts of 2000 characters."""
    data = {f"e{n:02}_{k}": "x" * TEXT for k in range(8)}
    assert json_size(data) <= EVENT_DATA_BUDGET
    return data


async def settled(handle: WorkflowHandle[Any, Any], transitions: int) -> RunState:
    """The run's state once it made `transitions` and waits for the rep's outcome."""
    for _ in range(200):
        state = await handle.query("state", result_type=RunState)
        if state and state.transitions >= transitions and state.phase == "awaiting_outcome":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run did not get to {transitions} transitions")


async def test_max_size_events_keep_the_contact_within_budget_and_the_run_going(
    live_env: WorkflowEnvironment, task_queue: str
) -> None:
    effects = MemoryEffects()
    plan = compile_plan(Sop.model_validate(SOP))
    async with Worker(
        live_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(effects).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
        workflow_failure_exception_types=[Exception],  # a bug fails the run (and this test)
    ):
        handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact={"id": "c-1"}, zones=["UTC"], continue_every=3),
            id=f"sop:nurture:c-1:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        first_run = (await handle.describe()).run_id
        start = await settled(handle, 1)
        events = 12  # 12 x 16 KiB: three times the budget
        for n in range(events):
            await handle.signal(
                "contact_event", ContactEventSignal(name="crm.sync", data=event_data(n))
            )
        await handle.signal(  # the same fields again, changed: a replacement fits
            "contact_event", ContactEventSignal(name="crm.sync", data={"e00_0": "y" * TEXT})
        )
        state = await settled(handle, start.transitions + events + 1)
        assert json_size(state.contact) <= CONTACT_BUDGET
        kept = {key.split("_")[0] for key in state.contact if key.startswith("e")}
        assert kept == {"e00", "e01", "e02", "e03"}  # the first four fit; the rest left out
        assert state.contact["e00_0"] == "y" * TEXT
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "report_outcome",
                OutcomeRequest(step="call", outcome="connected", actor="ana", data=event_data(99)),
            )
        assert "the contact would be over its 64 KiB with e99_" in str(refused.value.cause)
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert described.run_id != first_run  # it continued as new, carrying the bounded state
        await handle.signal(  # an event over budget still counts: the opt-out ends the run
            "contact_event", ContactEventSignal(name="opted_out", data=event_data(50))
        )
        result = await handle.result()
    assert result.result == "opted_out"
    records = [p.command for p in effects.records.values() if isinstance(p.command, Record)]
    synced = [r for r in records if r.action == "event" and r.detail.get("event") == "crm.sync"]
    assert len(synced) == events + 1  # every event is in the record, with the data kept
    assert [len(r.detail["data"]) for r in synced] == [8] * 4 + [0] * (events - 4) + [1]


async def test_a_report_in_a_continued_runs_first_task_is_judged_on_the_state_it_carries(
    live_env: WorkflowEnvironment, task_queue: str
) -> None:
    """A continued run validates an update that arrives with its first task (before run() has
    started) against the state it was given, not as a run that has "not started yet"."""
    plan = compile_plan(Sop.model_validate(SOP))
    async with Worker(
        live_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(MemoryEffects()).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
        workflow_failure_exception_types=[Exception],
    ):
        first = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact={"id": "c-2"}, zones=["UTC"]),
            id=f"sop:nurture:c-2:{task_queue}",
            task_queue=task_queue,
        )
        state = await settled(first, 1)
        await first.terminate("replaced by its continuation below")
        continued = WithStartWorkflowOperation(
            SopRun.run,
            SopRunInput(plan=plan, contact={"id": "c-2"}, zones=["UTC"], state=state),
            id=f"sop:nurture:c-2:{task_queue}:continued",
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        answer = await live_env.client.execute_update_with_start_workflow(
            "report_outcome",
            OutcomeRequest(step="call", outcome="connected", actor="ana"),
            start_workflow_operation=continued,
            result_type=OutcomeAnswer,
        )
        assert answer.accepted, answer.message
        result = await (await continued.workflow_handle()).result()
    assert result.result == "converted"
