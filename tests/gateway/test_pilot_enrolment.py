"""A pilot lead enrolled through the gateway (or by another SOP's enroll step) runs in the arm the
store assigned it, on a real Temporal dev server: the balanced arm, not the hash's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.testing import WorkflowEnvironment

from sopflow.sop import splits
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import RunState
from sopflow.sop.schema import Sop, SplitStep
from sopflow.store.repository import Store
from sopflow.store.splits import SplitAssignments

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PILOT: dict[str, Any] = yaml.safe_load((ROOT / "sop_definitions" / "script_pilot.yaml").read_text())
ROUTER: dict[str, Any] = {
    "id": "route_to_pilot",
    "version": 1,
    "name": "Route qualified leads to the pilot",
    "owner": "qa",
    "entry": {"events": ["lead.qualified"]},
    "steps": [
        {"id": "to_pilot", "kind": "enroll", "sop": "script_pilot"},
        {"id": "done", "kind": "end", "result": "routed"},
    ],
}
LEAD = {"id": "lead-1", "first_name": "Gus", "phone": "+12125550123", "tags": ["pilot"]}


def pick_script(plan: Plan) -> SplitStep:
    step = plan.step("pick_script")
    assert isinstance(step, SplitStep)
    return step


def steer_away_from_the_hash(store: Store, contact_id: str) -> str:
    """Enrol other leads first until the split's next balanced arm is not the one the contact's
    hash gives, so only a run that took the assignment can end up in it. That arm."""
    plan = store.latest_plan("script_pilot")
    step = pick_script(plan)
    hashed = splits.split_variant(plan, step, contact_id)
    book = SplitAssignments(store.engine)
    for seq in range(10):
        if splits.balanced_variant(plan, step, seq) != hashed:
            return splits.balanced_variant(plan, step, seq)
        book.assign(plan, f"earlier-{seq}")
    raise AssertionError("a block has every arm")


async def split_taken(env: WorkflowEnvironment, store: Store, run_id: str) -> tuple[RunState, Any]:
    """The run's state once it has passed the split, and the split's recorded step event."""
    handle = env.client.get_workflow_handle(run_id)
    for _ in range(200):
        state = await handle.query("state", result_type=RunState)
        events = [e for e in store.step_events(run_id) if e.action == "variant"]
        if state is not None and "pick_script" in state.variants and events:
            return state, events[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never passed its split")


async def post(http: httpx.AsyncClient, type_: str, key: str, contact: dict[str, Any]) -> str:
    body = {"type": type_, "contact": contact, "idempotency_key": key}
    answer = await http.post("/api/v1/events", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    (enrolled,) = answer.json()["enrolled"]
    return str(enrolled["run_id"])


async def test_a_pilot_lead_runs_in_its_assigned_arm_in_every_enrolment(
    gateway: Any, live_env: WorkflowEnvironment
) -> None:
    async with gateway(PILOT, TOKEN) as (http, store):
        expected = steer_away_from_the_hash(store, "lead-1")
        run_id = await post(http, "lead.created", "evt-1", LEAD)
        state, event = await split_taken(live_env, store, run_id)
        assert state.assigned_variants == state.variants == {"pick_script": expected}
        assert state.step == f"call_{expected[-1]}"
        assert event.detail == {"variant": expected, "method": "balanced"}

        before = SplitAssignments(store.engine).counts("script_pilot", "pick_script")
        again = await post(http, "lead.created", "evt-2", LEAD)  # enrolled a second time
        assert again != run_id
        state, _ = await split_taken(live_env, store, again)
        assert state.variants == {"pick_script": expected}
        assert SplitAssignments(store.engine).counts("script_pilot", "pick_script") == before


async def test_a_lead_another_sop_enrols_runs_in_its_assigned_arm(
    gateway: Any, live_env: WorkflowEnvironment
) -> None:
    async with gateway(ROUTER, TOKEN) as (http, store):
        store.deploy(compile_plan(Sop.model_validate(PILOT)))
        expected = steer_away_from_the_hash(store, "lead-2")
        router = await post(http, "lead.qualified", "evt-q", LEAD | {"id": "lead-2", "tags": []})
        pilot_run = None
        for _ in range(200):
            enrolled = [e for e in store.step_events(router) if e.outcome == "enrolled"]
            if enrolled:
                pilot_run = str(enrolled[0].detail["run_id"])
                break
            await asyncio.sleep(0.05)
        assert pilot_run is not None, "the router never enrolled the lead"
        state, event = await split_taken(live_env, store, pilot_run)
        assert state.variants == {"pick_script": expected}
        assert event.detail == {"variant": expected, "method": "balanced"}
        found = SplitAssignments(store.engine).get("script_pilot", "pick_script", "lead-2")
        assert found is not None and found.variant == expected
