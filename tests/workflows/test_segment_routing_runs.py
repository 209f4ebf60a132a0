"""Layering on the real Temporal dev server (time skipping) with a real store, SQLite and
PostgreSQL: lead_triage's branch asks the store whether the lead is high intent (a visit in the
last 14 days, a lead, tagged), routes on the answer and records it, exactly as the simulator
previews it when told the same membership. A segment deleted after deployment fails the check
with its reason, and the run goes on without it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import MemoryEffects, SopActivities
from activities.store_effects import StoreEffects
from sopflow.compliance.rules import load_rules
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.providers.loopback import LoopbackProvider
from sopflow.runtime import BUILD_ID
from sopflow.sop.protocol import Record
from sopflow.sop.rep_view import SAMPLE_REP
from sopflow.sop.simulator import PREVIEW_LINKS, simulate
from sopflow.sop.validate import load_plan
from sopflow.store.models import ContactActivity
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from workflows.contracts import SopRunInput, SopRunResult
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = load_plan(ROOT / "sop_definitions" / "lead_triage.yaml")
NURTURE = load_plan(ROOT / "sop_definitions" / "lead_nurture.yaml")
RULES = load_rules()
POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEAMS = [
    {
        "id": "inside_sales",
        "reps": [
            {"id": SAMPLE_REP["id"], "name": SAMPLE_REP["name"], "phone": SAMPLE_REP["phone"]}
        ],
    }
]
LATE = timedelta(seconds=90)  # a dev-server timer plus activity latency, generously


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store with both SOPs deployed and the team the task goes to."""
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'store.db'}")
        schema = None
    else:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin(f'CREATE SCHEMA "{schema}"')
        engine = create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    instance = Store(engine)
    instance.migrate()
    instance.deploy(TRIAGE)
    instance.deploy(NURTURE)
    RepDirectory(engine).import_teams(TEAMS)
    try:
        yield instance
    finally:
        engine.dispose()
        if schema is not None:
            admin(f'DROP SCHEMA "{schema}" CASCADE')


def admin(statement: str) -> None:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def lead(store: Store, contact_id: str, visited_days_ago: int | None) -> dict[str, Any]:
    """A tagged lead in the store; high intent when it visited a store in the last 14 days."""
    contact = {"id": contact_id, "first_name": "Ann", "phone": "+12125550123"}
    store.upsert_contact({**contact, "lifecycle_stage": "lead", "tags": ["demo_booked"]})
    if visited_days_ago is not None:
        at = datetime.now(UTC) - timedelta(days=visited_days_ago)
        row = {"contact_id": contact_id, "kind": "visit", "key": at.isoformat(), "at": at}
        with store.engine.begin() as connection:
            connection.execute(insert(ContactActivity), [row])
    return contact


async def run_triage(
    env: WorkflowEnvironment, store: Store, contact: dict[str, Any], segments: Path
) -> tuple[str, SopRunResult]:
    effects = StoreEffects(store, LoopbackProvider(), segments=segments)
    task_queue = f"layers-{uuid.uuid4()}"
    enrolment = enrolment_for(TRIAGE, contact, uuid.uuid4().hex[:8])
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(effects, RULES, PREVIEW_LINKS).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    ):
        await start_enrolment(env.client, enrolment, "lead.scored", {}, task_queue)
        handle: WorkflowHandle[Any, SopRunResult] = env.client.get_workflow_handle(
            enrolment.workflow_id, result_type=SopRunResult
        )
        return enrolment.workflow_id, await handle.result()


def branch_detail(store: Store, workflow_id: str) -> dict[str, Any]:
    (branch,) = [e for e in store.step_events(workflow_id) if e.action == "branch"]
    return dict(branch.detail)


@pytest.mark.parametrize(
    ("visited", "member", "route"), [(2, True, "sales_call"), (30, False, "nurture")]
)
async def test_the_run_routes_by_the_store_s_answer_as_the_preview_does(
    skipping_env: WorkflowEnvironment,
    store: Store,
    visited: int,
    member: bool,
    route: str,
) -> None:
    contact = lead(store, f"lead-{uuid.uuid4().hex[:8]}", visited)
    workflow_id, result = await run_triage(skipping_env, store, contact, ROOT / "segments")
    recorded = branch_detail(store, workflow_id)
    assert recorded["segments"] == {"high_intent": member}
    assert recorded["goto"] == route
    assert recorded["segments_as_of"] == result.state.enrolled_at.isoformat()

    preview = simulate(
        TRIAGE,
        contact,
        result.state.enrolled_at,
        zones=result.state.zones,
        rules=RULES,
        segments=["high_intent"] if member else [],
    )
    assert result.result == preview.result == "nurtured"  # a silent rep: the task expires
    (shown,) = [e for e in preview.timeline if e.action == "branch"]
    assert shown.detail == recorded  # the same membership, instant and route
    stored = {e.key: (e.action, e.executed_at) for e in store.step_events(workflow_id)}
    assert {k: a for k, (a, _) in stored.items()} == {e.key: e.action for e in preview.timeline}
    for entry in preview.timeline:  # the same times, never early
        at = stored[entry.key][1].replace(tzinfo=stored[entry.key][1].tzinfo or UTC)
        assert timedelta(0) <= at - entry.at <= LATE, entry


async def test_a_segment_gone_since_deployment_fails_the_check_and_the_run_goes_on(
    skipping_env: WorkflowEnvironment, store: Store, tmp_path: Path
) -> None:
    contact = lead(store, f"lead-{uuid.uuid4().hex[:8]}", 2)  # high intent, if anyone asked
    empty = tmp_path / "segments"
    empty.mkdir()
    workflow_id, result = await run_triage(skipping_env, store, contact, empty)
    recorded = branch_detail(store, workflow_id)
    assert recorded["goto"] == "nurture" and recorded["segments"] == {}
    assert recorded["segments_error"] == (
        f"unknown segment 'high_intent' in {empty} (it has no valid segment files)"
    )
    assert result.result == "nurtured"


async def test_any_effects_backend_answers_and_the_history_replays_later(
    skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The in-memory backend answers from the memberships it holds; this run's history is what
    tests/replay/lead_triage.json keeps (SOPFLOW_SAVE_HISTORY=1 refreshes it), so a change to
    how the workflow carries a segment check out fails the replay test before it ships."""
    effects = MemoryEffects()
    effects.segments = {"c-hot": {"high_intent"}}
    contact = {"id": "c-hot", "first_name": "Ann", "phone": "+12125550123"}
    async with Worker(
        skipping_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(effects, links=PREVIEW_LINKS).all(),
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    ):
        handle = await skipping_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=TRIAGE, contact=contact, zones=["America/New_York"]),
            id=f"sop:lead_triage:c-hot:{task_queue}",
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        result = await handle.result()
    if os.environ.get("SOPFLOW_SAVE_HISTORY"):
        history = await handle.fetch_history()
        (ROOT / "tests" / "replay" / "lead_triage.json").write_text(history.to_json())
    branches = [
        p.command.detail
        for p in effects.records.values()
        if isinstance(p.command, Record) and p.command.action == "branch"
    ]
    assert [(b["goto"], b["segments"]) for b in branches] == [("sales_call", {"high_intent": True})]
    assert result.result == "nurtured"  # nobody called: the task expired, the lead is nurtured
