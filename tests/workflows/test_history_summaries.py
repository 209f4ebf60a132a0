"""A run's history reads in words: activity and timer summaries (workflows/summaries.py), as
pure functions and in a real history on the dev server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import TimeSkipper, TimeSkippingConfig, WorkflowEnvironment
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.providers.loopback import LoopbackProvider
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import (
    AssignTask,
    EnrollContact,
    Escalate,
    Finish,
    PlaceCall,
    Record,
    RunState,
    SendMessage,
)
from sopflow.sop.schema import WEEKDAYS, AssignRule, ContactPolicy, Sop
from sopflow.sop.validate import load_plan
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from workflows.contracts import SopRunResult
from workflows.sandbox import workflow_runner
from workflows.search_attributes import waiting_for
from workflows.sop_run import SopRun
from workflows.summaries import MAX_SUMMARY, activity_summary, timer_summary

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 in New York (EDT since March 8)
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


def seed(name: str) -> Plan:
    return load_plan(ROOT / "sop_definitions" / f"{name}.yaml")


def state(plan: Plan, **changes: Any) -> RunState:
    base = RunState(
        sop=plan.sop.id,
        version=plan.sop.version,
        digest=plan.digest,
        contact={"id": "c-1"},
        zones=["America/New_York"],
        enrolled_at=AT,
        now=AT,
    )
    return base.model_copy(update=changes)


def task(step: str, title: str, rule: AssignRule, attempt: int = 1) -> AssignTask:
    return AssignTask(
        at=AT, step=step, key=f"{step}:{attempt}", title=title, instructions="", assign=rule,
        due_at=AT, planned_at=AT, attempt=attempt, context={},
    )  # fmt: skip


# ------------------------------------------------------------------ pure texts
def test_a_task_names_its_rep_or_how_the_team_picks_one() -> None:
    plan = seed("new_lead_callback")
    fixed = task("first_call", "Call the new lead", AssignRule(strategy="rep", rep="ana"))
    assert activity_summary(plan, fixed) == "Call the new lead → ana"
    robin = task(
        "first_call", "Call the new lead", AssignRule(strategy="round_robin", team="inside_sales")
    )
    assert (
        activity_summary(plan, robin, rep="ben") == "Call the new lead → inside_sales (round robin)"
    )
    again = task("retry_calls", "Call the lead again", AssignRule(strategy="owner"), attempt=2)
    assert activity_summary(plan, again, rep="ana") == "Call the lead again (attempt 2) → ana"
    assert activity_summary(plan, again) == "Call the lead again (attempt 2) → the contact's owner"


def test_messages_escalations_and_bookkeeping_read_as_what_they_do() -> None:
    plan = seed("store_visit_reminder")
    sms = SendMessage(
        at=AT, step="day_before_sms", key="k", channel="sms", body="", planned_at=AT, context={}
    )
    assert activity_summary(plan, sms) == "Text day_before_sms"  # no name: the step's id
    vip = seed("vip_six_touches")
    named = sms.model_copy(update={"step": "birthday_gift"})
    assert activity_summary(vip, named) == "Text “Birthday gift, no strings attached”"
    callback = seed("new_lead_callback")
    followup = sms.model_copy(update={"step": "retry_calls"})
    assert activity_summary(callback, followup) == "Text the follow-up of retry_calls"
    remind = Escalate(
        at=AT, step="first_call", key="e", action="remind", level=1, to=None, due_at=AT
    )
    assert (
        activity_summary(callback, remind, "ana") == "Remind ana: first_call is overdue (level 1)"
    )
    move = remind.model_copy(
        update={"action": "reassign", "level": 3, "to": AssignRule(strategy="rep", rep="ben")}
    )
    assert activity_summary(callback, move, "ana") == "Reassign first_call from ana → ben (level 3)"
    enrol = EnrollContact(
        at=AT, step="book_visit", key="n", sop="store_visit_reminder", data={}, context={}
    )
    assert activity_summary(callback, enrol) == "Enrol in store_visit_reminder (book_visit)"
    record = Record(at=AT, step="first_call", key="r", action="deferred")
    assert activity_summary(callback, record) == "Record deferred (first_call)"
    assert (
        activity_summary(callback, Finish(at=AT, step="", key="f", result="lost")) == "Finish: lost"
    )


def test_a_long_title_is_cut_to_one_line() -> None:
    plan = seed("new_lead_callback")
    long = task("first_call", "x" * 500, AssignRule(strategy="rep", rep="ana"))
    text = activity_summary(plan, long)
    assert len(text) == MAX_SUMMARY and text.endswith("…")


def test_timers_say_what_they_wait_for_in_the_contacts_time_and_run_day() -> None:
    plan = seed("new_lead_callback")
    slot = state(plan, step="retry_calls", phase="waiting", wake_at=AT + timedelta(days=1, hours=8))
    assert timer_summary(plan, slot) == "Wait until day 2 18:00 EDT (retry_calls)"
    outcome = state(
        plan, step="first_call", phase="awaiting_outcome", wake_at=AT + timedelta(minutes=30)
    )
    assert (
        timer_summary(plan, outcome, "ana")
        == "Wait for ana's outcome until day 1 10:30 EDT (first_call)"
    )
    assert (
        timer_summary(plan, outcome)
        == "Wait for the rep's outcome until day 1 10:30 EDT (first_call)"
    )
    window = state(plan, step="first_call", phase="deferred", wake_at=AT + timedelta(hours=23))
    assert timer_summary(plan, window) == "Wait for the window until day 2 09:00 EDT (first_call)"
    event = state(
        plan, step="follow_up", phase="awaiting_event", awaiting_events=["booked"],
        wake_at=AT + timedelta(days=7),
    )  # fmt: skip
    assert timer_summary(plan, event) == "Wait for booked until day 8 10:00 EDT (follow_up)"


def test_a_timer_needs_a_wake_up_time() -> None:
    plan = seed("new_lead_callback")
    with pytest.raises(AssertionError, match="a timer needs the state's wake_at"):
        timer_summary(plan, state(plan, step="first_call"))


# ------------------------------------------------------------------ a real history
def any_hour(plan: Plan) -> Plan:
    """No contact windows or holidays: the test does not depend on the wall-clock day."""
    return compile_plan(
        plan.sop.model_copy(update={"policy": ContactPolicy(business_days=list(WEEKDAYS))})
    )


@pytest.fixture
async def stepped(skipping_env: WorkflowEnvironment) -> AsyncIterator[TimeSkipper]:
    """A client whose runs do not skip time on their own: the test moves their clock."""
    config = skipping_env.client.config()
    yield TimeSkipper(
        Client(**{**config, "interceptors": []}), config=TimeSkippingConfig(enabled=False)
    )


async def advance_until(
    skipper: TimeSkipper, handle: Handle, done: Callable[[RunState], bool]
) -> None:
    for _ in range(300):
        now = await handle.query("state", result_type=RunState)
        if now is not None and done(now):
            return
        if now is None or now.wake_at is None:  # an activity is out: real time, briefly
            await asyncio.sleep(0.05)
            continue
        step = max(now.wake_at - now.now, timedelta(seconds=1)) + timedelta(seconds=1)
        await skipper.fast_forward(handle, step)
    raise AssertionError("the run never reached the expected state")


def summary(event: HistoryEvent) -> str | None:
    if not event.user_metadata.HasField("summary"):
        return None
    text = pydantic_data_converter.payload_converter.from_payload(event.user_metadata.summary, str)
    assert isinstance(text, str)
    return text


async def test_a_history_reads_who_does_what_and_until_when(
    skipping_env: WorkflowEnvironment, stepped: TimeSkipper, task_queue: str, tmp_path: Path
) -> None:
    plan = any_hour(seed("new_lead_callback"))
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(plan)
    RepDirectory(store.engine).import_teams(TEAMS)
    contact = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123"}
    enrolment = enrolment_for(plan, contact, task_queue)
    store.upsert_contact(enrolment.contact)
    async with Worker(
        skipping_env.client,
        task_queue=task_queue,
        workflows=[SopRun],
        activities=SopActivities(StoreEffects(store, LoopbackProvider())).all(),
        workflow_runner=workflow_runner(),
        build_id="test-history-summaries",  # the default hashes every loaded module (~50 s)
    ):
        await start_enrolment(stepped.client, enrolment, "lead.created", {}, task_queue)
        handle: Handle = stepped.client.get_workflow_handle(
            enrolment.workflow_id, result_type=SopRunResult
        )
        # Ana misses the SLA: reminded, her supervisor told, the lead moved to ben; then the
        # ladder's first slot.
        await advance_until(
            stepped, handle, lambda s: s.step == "retry_calls" and s.phase == "awaiting_outcome"
        )
        history = await handle.fetch_history()
        await handle.terminate("done with the test")
    scheduled = [
        summary(e)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[:4] == [
        "Call the new lead → inside_sales (round robin)",  # the activity picks: ana
        "Remind ana: first_call is overdue (level 1)",
        "Notify ana's supervisor: first_call is overdue (level 2)",
        "Reassign first_call from ana → inside_sales (round robin) (level 3)",
    ]
    assert "Call the lead again (attempt 1) → ben" in scheduled  # the owner rule: ben now
    assert all(s and "sopflow." not in s for s in scheduled), scheduled
    timers = [
        summary(e) or ""
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert re.fullmatch(
        r"Wait for ana's outcome until day 1 \d\d:\d\d E[SD]T \(first_call\)", timers[0]
    )
    assert any(
        re.fullmatch(r"Wait until day \d 12:00 E[SD]T \(retry_calls\)", t) for t in timers
    ), timers
    # Records are local activities: their markers carry the words too.
    markers = [
        summary(e)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and summary(e)
    ]
    assert "Record enrolled (first_call)" in markers, markers


def test_an_automated_calls_outcome_comes_from_the_carrier_not_a_rep() -> None:
    sop = Sop.model_validate(
        {
            "id": "robo", "version": 1, "name": "Robo", "owner": "qa",
            "entry": {"events": ["x"]},
            "steps": [
                {"id": "ring", "kind": "call", "name": "Ring the lead", "script": "Hello"},
                {"id": "done", "kind": "end", "result": "done"},
            ],
        }
    )  # fmt: skip
    plan = compile_plan(sop)
    call = PlaceCall(
        at=AT, step="ring", key="c", script="Hello", machine_detection=True, planned_at=AT,
        context={},
    )  # fmt: skip
    assert activity_summary(plan, call) == "Automated call: “Ring the lead”"
    waiting = state(plan, step="ring", phase="awaiting_outcome", wake_at=AT + timedelta(minutes=10))
    assert timer_summary(plan, waiting, "ana") == (
        "Wait for the call's outcome until day 1 10:10 EDT (ring)"
    )
    assert waiting_for(plan, waiting) == "unknown"  # as the run listing says of a call
    task_plan = seed("new_lead_callback")
    task_wait = state(task_plan, step="first_call", phase="awaiting_outcome", wake_at=AT)
    assert waiting_for(task_plan, task_wait) == "rep"
    assert waiting_for(task_plan, task_wait.model_copy(update={"paused": True})) == "resume"
    assert waiting_for(task_plan, task_wait.model_copy(update={"phase": "deferred"})) == "window"
    assert waiting_for(task_plan, task_wait.model_copy(update={"phase": "finished"})) is None
