"""One Temporal Schedule per cohort rule, following what is deployed, however it was deployed:
created, updated (a pause in Temporal's UI kept), deleted when the rule goes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cohort_helpers import SOP_ID, plan, write_segment
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from sopflow.cohorts.contracts import CohortRunInput
from sopflow.cohorts.schedules import CohortSchedules, schedule_id
from sopflow.sop import clock
from sopflow.store.repository import Store, connect
from sopflow.upkeep import Upkeep

ROOT = Path(__file__).resolve().parents[2]
WEEKLY = {"cron": "0 10 * * MON", "timezone": "Europe/Paris", "segment": "vips"}


async def held_input(env: WorkflowEnvironment, sid: str) -> CohortRunInput:
    action = (await env.client.get_schedule_handle(sid).describe()).schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [held] = await env.client.data_converter.decode(list(action.args), [CohortRunInput])  # type: ignore[arg-type]
    assert isinstance(held, CohortRunInput)
    return held


async def gone(env: WorkflowEnvironment, sid: str) -> bool:
    try:
        await env.client.get_schedule_handle(sid).describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


async def test_the_schedule_follows_the_deployed_rule(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    write_segment(tmp_path / "segments")
    schedules = CohortSchedules(live_env.client, store, task_queue, tmp_path / "segments")
    sid = schedule_id(task_queue, SOP_ID)
    assert (await schedules.sync()).created == []  # nothing deployed: no schedule
    store.deploy(plan(WEEKLY))
    assert (await schedules.sync()).created == [sid]
    handle = live_env.client.get_schedule_handle(sid)
    try:
        described = await handle.describe()
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
        assert described.schedule.policy.catchup_window == timedelta(days=1)
        assert described.schedule.spec.time_zone_name == "Europe/Paris"
        assert not described.schedule.state.paused
        fires = described.info.next_action_times
        assert all(
            clock.to_local(t, "Europe/Paris").strftime("%a %H:%M") == "Mon 10:00" for t in fires
        )
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.id, action.task_queue) == ("CohortRun", sid, task_queue)
        held = await held_input(live_env, sid)
        assert held.sop_id == SOP_ID and held.segment is not None and held.segment.id == "vips"
        assert (await schedules.sync()).unchanged == [sid]  # the same rule: not touched

        # Paused by ops in Temporal's UI, then the rule changes: updated, still paused.
        await handle.pause(note="ops: holiday freeze")
        tuesday = {**WEEKLY, "cron": "30 11 * * TUE"}
        store.deploy(plan(tuesday, version=2))
        assert (await schedules.sync()).updated == [sid]
        described = await handle.describe()
        assert described.schedule.state.paused
        assert described.schedule.state.note == "ops: holiday freeze"
        assert (await held_input(live_env, sid)).rule.model_dump()["cron"] == "30 11 * * TUE"

        # An edited segment file is a changed schedule too.
        write_segment(tmp_path / "segments", tag="gold")
        assert (await schedules.sync()).updated == [sid]
        held = await held_input(live_env, sid)
        assert held.segment is not None and held.segment.rules.tags is not None
        assert held.segment.rules.tags.all == ["gold"]

        # The next version enrols on an event only: its schedule goes.
        store.deploy(plan(None, version=3, events=["winback.asked"]))
        assert (await schedules.sync()).deleted == [sid]
        assert await gone(live_env, sid)
    finally:
        if not await gone(live_env, sid):
            await handle.delete()


async def test_a_contact_date_rule_fires_every_quarter_hour_in_utc(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    store.deploy(plan({"contact_date": "member_since", "annual": True, "at": "10:00"}))
    schedules = CohortSchedules(live_env.client, store, task_queue, tmp_path)
    sid = schedule_id(task_queue, SOP_ID)
    assert (await schedules.sync()).created == [sid]
    try:
        spec = (await live_env.client.get_schedule_handle(sid).describe()).schedule.spec
        assert spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=15))]
        assert spec.calendars == []
    finally:
        await live_env.client.get_schedule_handle(sid).delete()


async def test_a_missing_segment_leaves_the_schedule_as_it_was(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    segment_file = write_segment(tmp_path / "segments")
    schedules = CohortSchedules(live_env.client, store, task_queue, tmp_path / "segments")
    sid = schedule_id(task_queue, SOP_ID)
    store.deploy(plan(WEEKLY))
    assert (await schedules.sync()).created == [sid]
    try:
        segment_file.unlink()
        report = await schedules.sync()
        assert report.deleted == [] and report.updated == []
        assert report.problems == [
            f"{SOP_ID}: segment 'vips' is not a valid file in {tmp_path / 'segments'}: its "
            "schedule is left as it was"
        ]
        assert not await gone(live_env, sid)
    finally:
        await live_env.client.get_schedule_handle(sid).delete()


async def test_schedules_of_another_task_queue_are_left_alone(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    """Another deployment in the namespace, even one whose queue name starts like ours."""
    store.deploy(plan({"cron": "0 10 * * MON", "timezone": "UTC"}))
    ours_queue = f"{task_queue}:eu"
    ours = CohortSchedules(live_env.client, store, ours_queue, tmp_path)
    sid = schedule_id(ours_queue, SOP_ID)
    assert (await ours.sync()).created == [sid]
    try:
        store.deploy(plan(None, version=2, events=["winback.asked"]))
        for queue in (task_queue, f"{task_queue}-other"):  # "cohort:Q:" is a prefix of ours
            theirs = CohortSchedules(live_env.client, store, queue, tmp_path)
            assert (await theirs.sync()).deleted == []
        assert not await gone(live_env, sid)
        assert (await ours.sync()).deleted == [sid]
    finally:
        if not await gone(live_env, sid):
            await live_env.client.get_schedule_handle(sid).delete()


async def test_a_schedule_holding_something_else_is_rewritten(
    live_env: WorkflowEnvironment, store: Store, task_queue: str, tmp_path: Path
) -> None:
    """Made by hand under our id, or by an older sopflow: the sync puts the rule back."""
    sid = schedule_id(task_queue, SOP_ID)
    await live_env.client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow(
                "CohortRun", "by hand", id=sid, task_queue=task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(days=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        store.deploy(plan({"cron": "0 10 * * MON", "timezone": "UTC"}))
        assert (
            await CohortSchedules(live_env.client, store, task_queue, tmp_path).sync()
        ).updated == [sid]
        assert (await held_input(live_env, sid)).sop_id == SOP_ID
    finally:
        await live_env.client.get_schedule_handle(sid).delete()


@pytest.mark.timeout(180)
async def test_every_way_of_deploying_ends_in_the_same_schedules(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """`sopflow sop deploy` (another process), then the upkeep's redeploy of an edited file:
    the worker's upkeep job (sync_cohorts) makes the schedule follow each."""
    sops = tmp_path / "sops"
    sops.mkdir()
    source = (ROOT / "sop_definitions" / "vip_six_touches.yaml").read_text()
    (sops / "vip_six_touches.yaml").write_text(source)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "SOPFLOW_DATABASE_URL": url, "SOPFLOW_DATA_DIR": str(tmp_path / "d")}
    deployed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from sopflow.cli import main; main()", "sop", "deploy", str(sops)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr
    store = Store(connect(url))
    sid = schedule_id(task_queue, "vip_six_touches")
    upkeep = Upkeep(store, None, sops, CohortSchedules(live_env.client, store, task_queue))
    try:
        await upkeep.sync_cohorts()
        held = await held_input(live_env, sid)
        assert held.sop_id == "vip_six_touches" and held.rule.model_dump()["at"] == "10:00"
        # The file edited while `sopflow up` runs: the upkeep deploys it, then syncs.
        edited = source.replace('at: "10:00"', 'at: "11:00"').replace("version: 4", "version: 5")
        (sops / "vip_six_touches.yaml").write_text(edited)
        assert upkeep.redeploy() == ["vip_six_touches v5"]
        await upkeep.sync_cohorts()
        assert (await held_input(live_env, sid)).rule.model_dump()["at"] == "11:00"
    finally:
        if not await gone(live_env, sid):
            await live_env.client.get_schedule_handle(sid).delete()
        store.engine.dispose()


def test_the_upkeep_syncs_at_once_then_every_ten_seconds(tmp_path: Path) -> None:
    from sopflow.upkeep import UpkeepJobs

    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    jobs = UpkeepJobs()
    Upkeep(store, None, None, object()).schedule(jobs)  # type: ignore[arg-type]
    [job] = jobs.scheduler.get_jobs()  # no provider: no outbox reconciliation
    assert job.id == "sync_cohorts" and job.trigger.interval == timedelta(seconds=10)
    assert job.next_run_time is not None  # runs when the worker starts, not 10 s later
    store.engine.dispose()
