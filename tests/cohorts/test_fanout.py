"""A triggered cohort schedule enrols exactly its cohort through the event path's steps: the
segment's members whose conditions hold, opted-out contacts skipped, once per occurrence
however many times it runs; contact dates in each contact's zone; big cohorts in pages."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cohort_helpers import SOP_ID, add_contacts, enrolled, opt_out, plan, triggered, write_segment
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from sopflow.cohorts.contracts import CohortRunInput, CohortRunResult, CohortTotals
from sopflow.cohorts.cron import parse_cron
from sopflow.cohorts.occurrences import cron_key, latest_fire
from sopflow.cohorts.schedules import CohortSchedules
from sopflow.sop import clock
from sopflow.sop.schema import CronSchedule
from sopflow.store.repository import Store

pytestmark = pytest.mark.usefixtures("worker")
HISTORIES = Path(__file__).parent / "histories"
WEEKLY = {"cron": "0 10 * * MON", "timezone": "Europe/Paris", "segment": "vips"}
HAS_PHONE = [{"field": "contact.phone", "exists": True}]


async def scheduled(
    env: WorkflowEnvironment, store: Store, task_queue: str, segments: Path
) -> tuple[CohortSchedules, str]:
    schedules = CohortSchedules(env.client, store, task_queue, segments)
    report = await schedules.sync()
    [sid] = report.created
    return schedules, sid


def phone(n: int) -> str:
    return f"+1212555{n:04d}"


async def test_a_trigger_enrols_the_segment_once_per_occurrence(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    write_segment(tmp_path / "segments")
    vips = [f"vip-{n}" for n in range(5)]
    add_contacts(
        store,
        *({"id": v, "tags": ["vip"], "phone": phone(n)} for n, v in enumerate(vips)),
        {"id": "vip-no-phone", "tags": ["vip"]},  # the entry's condition fails
        {"id": "lead-1", "tags": ["lead"], "phone": phone(90)},
        {"id": "lead-2", "phone": phone(91)},
    )
    opt_out(store, "vip-3")
    store.deploy(plan(WEEKLY, conditions=HAS_PHONE))
    _, sid = await scheduled(live_env, store, task_queue, tmp_path / "segments")
    handle = live_env.client.get_schedule_handle(sid)
    try:
        first = await triggered(live_env.client, handle)
        if os.environ.get("SOPFLOW_SAVE_HISTORY"):  # refresh the replayed history on purpose
            fan_out = (await handle.describe()).info.recent_actions[-1].action
            history = await live_env.client.get_workflow_handle(fan_out.workflow_id).fetch_history()  # type: ignore[attr-defined]
            (HISTORIES / "cohort_run.json").write_text(history.to_json())
        expected = ["vip-0", "vip-1", "vip-2", "vip-4"]
        # The occurrence of a trigger on any day is the last Monday 10:00 in Paris.
        monday = latest_fire(parse_cron("0 10 * * MON"), "Europe/Paris", datetime.now(UTC))
        assert monday is not None and first.occurrence == monday
        assert first.totals == CohortTotals(scanned=6, enrolled=4, opted_out=1, not_matching=1)
        runs = enrolled(store)
        assert sorted(runs) == expected
        assert runs == {v: f"sop:{SOP_ID}:{v}:{cron_key(monday)}" for v in expected}
        for workflow_id in runs.values():
            described = await live_env.client.get_workflow_handle(workflow_id).describe()
            assert described.status == WorkflowExecutionStatus.RUNNING

        # The same occurrence again (a second trigger, a catch-up): nobody twice.
        second = await triggered(live_env.client, handle)
        assert second.occurrence == monday
        assert second.totals == CohortTotals(scanned=6, already=4, opted_out=1, not_matching=1)
        assert enrolled(store) == runs

        # A member who joined since is all a re-run enrols.
        add_contacts(store, {"id": "vip-5", "tags": ["vip"], "phone": phone(5)})
        third = await triggered(live_env.client, handle)
        assert third.totals.enrolled == 1 and third.totals.already == 4
        assert sorted(enrolled(store)) == sorted([*expected, "vip-5"])
    finally:
        await handle.delete()


async def test_a_contact_still_running_the_sop_is_not_enrolled_again(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    """A run of the SOP from another occurrence (or the event) is still going: left alone."""
    add_contacts(store, {"id": "c-1"}, {"id": "c-2"})
    store.deploy(plan({"cron": "0 10 * * MON", "timezone": "UTC"}))
    store.start_run(
        f"sop:{SOP_ID}:c-1:by-event", "r", SOP_ID, 1, "sha256:x", "c-1", datetime.now(UTC)
    )
    _, sid = await scheduled(live_env, store, task_queue, tmp_path)
    handle = live_env.client.get_schedule_handle(sid)
    try:
        result = await triggered(live_env.client, handle)
        assert result.totals == CohortTotals(scanned=2, enrolled=1, running=1)
        assert sorted(enrolled(store)) == ["c-1", "c-2"]
        assert enrolled(store)["c-1"] == f"sop:{SOP_ID}:c-1:by-event"
    finally:
        await handle.delete()


async def test_anniversaries_are_enrolled_at_each_contacts_local_time(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    """The rule's `at` is an hour ago in Tokyo: the Tokyo member's anniversary is due, the New
    York member's (the same date, 13 or 14 hours later) is not yet."""
    tokyo_then = clock.to_local(datetime.now(UTC) - timedelta(hours=1), "Asia/Tokyo")
    at = f"{tokyo_then:%H:%M}"
    since = tokyo_then.date().replace(year=2020).isoformat()
    add_contacts(
        store,
        {"id": "tokyo", "timezone": "Asia/Tokyo", "member_since": since},
        {"id": "new_york", "timezone": "America/New_York", "member_since": since},
        {"id": "no_date", "timezone": "Asia/Tokyo"},
    )
    store.deploy(plan({"contact_date": "member_since", "annual": True, "at": at}))
    _, sid = await scheduled(live_env, store, task_queue, tmp_path)
    handle = live_env.client.get_schedule_handle(sid)
    try:
        first = await triggered(live_env.client, handle)
        key = f"member_since-{tokyo_then.date().isoformat()}"
        assert enrolled(store) == {"tokyo": f"sop:{SOP_ID}:tokyo:{key}"}
        assert first.totals == CohortTotals(scanned=2, enrolled=1, not_due=1)
        second = await triggered(live_env.client, handle)
        assert second.totals == CohortTotals(scanned=2, already=1, not_due=1)
        assert list(enrolled(store)) == ["tokyo"]
    finally:
        await handle.delete()


async def test_a_rule_redeployed_away_enrols_nobody(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    """A fire between a deploy and the next sync: the fan-out reads the newest version."""
    add_contacts(store, {"id": "c-1"})
    store.deploy(plan({"cron": "0 10 * * MON", "timezone": "UTC"}))
    _, sid = await scheduled(live_env, store, task_queue, tmp_path)
    handle = live_env.client.get_schedule_handle(sid)
    try:
        store.deploy(plan({"cron": "0 12 * * MON", "timezone": "UTC"}, version=2))
        result = await triggered(live_env.client, handle)
        assert result.skipped_reason == f"{SOP_ID} v2 no longer has this schedule"
        assert enrolled(store) == {}
    finally:
        await handle.delete()


async def test_a_big_cohort_is_paged_and_continues_as_new(
    live_env: WorkflowEnvironment, store: Store, task_queue: str
) -> None:
    """45 contacts in pages of 2: 23 pages, past CONTINUE_EVERY (20), so the run continues as
    new with its cursor and totals; every contact enrolled once."""
    ids = [f"c-{n:02d}" for n in range(45)]
    add_contacts(store, *({"id": i} for i in ids))
    rule: dict[str, Any] = {"cron": "*/5 * * * *", "timezone": "UTC", "max_per_second": 1000}
    store.deploy(plan(rule))
    handle = await live_env.client.start_workflow(
        "CohortRun",
        CohortRunInput(
            sop_id=SOP_ID,
            rule=CronSchedule.model_validate(rule),
            page_size=2,
            scheduled_at=datetime(2026, 12, 7, 9, 2, tzinfo=UTC),
        ),
        id=f"cohort-test-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=CohortRunResult,
    )
    result = await handle.result()
    assert result.occurrence == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert result.totals == CohortTotals(scanned=45, enrolled=45)
    assert sorted(enrolled(store)) == ids
    described = await handle.describe()
    assert described.run_id != handle.first_execution_run_id  # it continued as new
