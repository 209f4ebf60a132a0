"""Every seed SOP runs on the time-skipping server exactly as the simulator previews it, with its
real durations (a VIP year included); the histories are what tests/replay keeps."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import MemoryEffects, SopActivities
from sopflow.runtime import BUILD_ID
from sopflow.sop.simulator import PREVIEW_LINKS, sample_contact, simulate
from sopflow.sop.validate import load_plan
from workflows.contracts import SopRunInput, SopRunResult
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]
IN_THREE_DAYS = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT15:00:00")
SEEDS: dict[str, dict[str, Any]] = {
    "new_lead_callback": {"lead_source": "web"},  # nobody answers: the 3-day cadence in full
    "store_visit_reminder": {"appointment_at": IN_THREE_DAYS},
    "vip_six_touches": {"tags": ["vip"], "birthday": "1985-05-20"},
    "referral_ask": {},
    "script_pilot": {"tags": ["pilot"]},
}


@pytest.mark.parametrize("sop", sorted(SEEDS))
async def test_seed_sop_runs_as_previewed(
    sop: str, skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    plan = load_plan(ROOT / "sop_definitions" / f"{sop}.yaml")
    contact = sample_contact(plan, {"id": f"c-{sop}", **SEEDS[sop]})
    zones = ["America/New_York"]
    effects = MemoryEffects()
    async with Worker(
        skipping_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(effects, links=PREVIEW_LINKS).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
        workflow_failure_exception_types=[Exception],
    ):
        handle = await skipping_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact=contact, zones=zones, trigger=plan.sop.entry.events[0]),
            id=f"sop:{sop}:{contact['id']}:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
            execution_timeout=timedelta(days=800),
        )
        result = await handle.result()
    if os.environ.get("SOPFLOW_SAVE_HISTORY"):  # refresh tests/replay after a deliberate change
        history = await handle.fetch_history()
        # A new file per SOP; keep old ones: they prove runs started by older code still replay.
        (ROOT / "tests" / "replay" / f"{sop}.json").write_text(history.to_json())
    preview = simulate(plan, contact, result.state.enrolled_at, zones=zones)
    assert result.result == preview.result
    produced = {key.split("/", 1)[1]: p.command.at for key, (p, _, _) in effects.performed.items()}
    produced |= {key.split("/", 1)[1]: p.command.at for key, p in effects.records.items()}
    expected = {e.key: e.at for e in preview.timeline}
    assert set(produced) == set(expected)
    late = {k: (produced[k] - expected[k]).total_seconds() for k in expected}
    assert all(0 <= seconds < 120 for seconds in late.values()), late  # never early
    assert all(n == 1 for n in effects.attempts.values())
    if sop == "new_lead_callback":
        texts = [r["text"] for _, r, _ in effects.performed.values() if "text" in r]
        assert len(texts) == 1 and "Reply with a good time" in texts[0]  # the one follow-up SMS
