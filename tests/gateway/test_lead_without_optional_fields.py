"""The README's `sopflow events send` lead has only an id and a phone. Through the API, on a
real Temporal dev server and store, the seed callback SOP must still assign its first call to a
rep: its templates read first_name and lead_source with defaults (required-by-use, fields.py).
Before, the API answered 202 and the first-call task then failed to render, unassigned."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.history.v1 import HistoryEvent
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from sopflow.sop.protocol import AssignTask
from sopflow.sop.rendering import render_command
from sopflow.sop.schema import WEEKDAYS
from sopflow.store.reps import RepDirectory
from sopflow.teams import load_teams
from workflows.contracts import CommandInput, CommandResult

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-lead"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEED = yaml.safe_load((ROOT / "sop_definitions" / "new_lead_callback.yaml").read_text())
# Any hour and day, so the test does not depend on the wall clock (windows have their own tests).
ANY_HOUR = {**SEED, "policy": {"business_days": list(WEEKDAYS)}}
# `sopflow events send lead.created --key crm-evt-2 --contact id=c-2 --contact phone=+12125550199`
README_LEAD = {
    "type": "lead.created",
    "idempotency_key": "crm-evt-2",
    "contact": {"id": "c-2", "phone": "+12125550199"},
}


def _perform_inputs(events: list[HistoryEvent]) -> list[tuple[CommandInput, CommandResult]]:
    """The commands the run's worker performed, with their results, from the history."""
    results = {
        e.activity_task_completed_event_attributes.scheduled_event_id: e
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
    }
    convert = pydantic_data_converter.payload_converter
    out = []
    for event in events:
        scheduled = event.activity_task_scheduled_event_attributes
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        if scheduled.activity_type.name != "sopflow.perform" or event.event_id not in results:
            continue
        (params,) = convert.from_payloads(scheduled.input.payloads, [CommandInput])
        done = results[event.event_id].activity_task_completed_event_attributes
        (result,) = convert.from_payloads(done.result.payloads, [CommandResult])
        out.append((params, result))
    return out


async def test_the_readme_lead_gets_its_first_call_assigned(
    gateway: Any, live_env: WorkflowEnvironment
) -> None:
    async with gateway(ANY_HOUR, TOKEN) as (http, store):
        RepDirectory(store.engine).import_teams(load_teams(ROOT / "examples" / "teams.yaml"))
        answer = await http.post("/api/v1/events", json=README_LEAD, headers=AUTH)
        assert answer.status_code == 202, answer.text
        (enrolled,) = answer.json()["enrolled"]
        run_id = enrolled["run_id"]
        assert enrolled["version"] == SEED["version"]
        for _ in range(150):
            run = (await http.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()
            first_call = [s for s in run["steps"] if s["step"] == "first_call"]
            if any(s["action"] == "assign" for s in first_call):
                break
            await asyncio.sleep(0.1)
        actions = [s["action"] for s in first_call]
        assert "assign" in actions and "failed" not in actions, run["steps"]
        (assign,) = [s for s in first_call if s["action"] == "assign"]
        assert assign["actor"] in {"ana", "ben", "cho"}  # round robin in inside_sales

        handle = live_env.client.get_workflow_handle(run_id)
        history = await handle.fetch_history()
        performed = _perform_inputs(list(history.events))
        (task, result) = next(
            (p, r)
            for p, r in performed
            if isinstance(p.command, AssignTask) and p.command.step == "first_call"
        )
        assert result.status == "done", result.reason
        rep = {"first_name": "Ana", "name": "Ana Lima"}
        text = render_command(task.command, rep, run_id)["instructions"]
        assert text.startswith("Call the lead on +12125550199 (from an unknown source).")

        cancel = {"action": "cancel", "reason": "test over"}
        await http.post(f"/api/v1/runs/{run_id}/control", json=cancel, headers=AUTH)
        await handle.result()
