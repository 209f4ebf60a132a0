"""Engine paths the seed SOPs do not take: calls, blocked and failed sends, skip policy, rejections."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sopflow.errors import InvalidEventError
from sopflow.sop import engine
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import (
    ActionResult,
    AssignTask,
    ContactEvent,
    Control,
    Finish,
    OutcomeReported,
    PlaceCall,
    ProviderEvent,
    Record,
    SendMessage,
    Tick,
    Transition,
)
from sopflow.sop.schema import Sop

NY = ZoneInfo("America/New_York")
AT = datetime(2026, 12, 1, 10, 0, tzinfo=NY)  # a Tuesday


def plan(steps: list[dict[str, Any]], **extra: Any) -> Plan:
    return compile_plan(
        Sop.model_validate(
            {
                "id": "t",
                "version": 1,
                "name": "T",
                "owner": "qa",
                "entry": {"events": ["x"]},
                "steps": steps,
                **extra,
            }
        )
    )


def start(p: Plan, at: datetime = AT) -> Transition:
    return engine.start(p, {"id": "c-1", "first_name": "Ann"}, ["America/New_York"], at)


def records(t: Transition) -> list[str]:
    return [c.action for c in t.commands if isinstance(c, Record)]


CALL = {
    "id": "ring",
    "kind": "call",
    "script": "Hello {{ contact.first_name }}",
    "result_timeout": "15m",
    "on_outcome": {"connected": "won", "expired": "lost"},
}
ENDS = [
    {"id": "next_one", "kind": "end", "result": "next"},
    {"id": "won", "kind": "end", "result": "won"},
    {"id": "lost", "kind": "end", "result": "lost"},
]


def test_call_routes_its_outcome() -> None:
    p = plan([CALL, *ENDS])
    t = start(p)
    call = t.commands[-1]
    assert (
        isinstance(call, PlaceCall) and call.machine_detection and call.script.startswith("Hello")
    )
    t = engine.handle(p, t.state, ActionResult(at=AT, key=call.key, status="done"))
    assert t.state.phase == "awaiting_outcome" and t.state.wake_at == AT + timedelta(minutes=15)
    t = engine.handle(
        p, t.state, OutcomeReported(at=AT + timedelta(minutes=2), step="ring", outcome="connected")
    )
    assert t.state.result == "won"


def test_call_without_a_result_expires() -> None:
    p = plan([CALL, *ENDS])
    t = start(p)
    t = engine.handle(p, t.state, ActionResult(at=AT, key=t.commands[-1].key, status="done"))
    t = engine.handle(p, t.state, Tick(at=AT + timedelta(minutes=15)))
    assert "timeout" in records(t) and t.state.result == "lost"


def test_unrouted_outcome_falls_through_to_next() -> None:
    p = plan([CALL, *ENDS])
    t = start(p)
    t = engine.handle(p, t.state, ActionResult(at=AT, key=t.commands[-1].key, status="done"))
    t = engine.handle(p, t.state, OutcomeReported(at=AT, step="ring", outcome="busy"))
    assert t.state.result == "next"


SMS = {"id": "hi", "kind": "sms", "body": "Hi", "on_failed": "lost"}
WINDOWS = {"windows": {"sms": {"hours": ["08:00-21:00"]}}}


def test_blocked_send_with_retry_at_is_deferred_then_resent() -> None:
    p = plan([SMS, *ENDS], policy=WINDOWS)
    t = start(p)
    first = t.commands[-1]
    retry = AT + timedelta(hours=3)
    t = engine.handle(
        p,
        t.state,
        ActionResult(
            at=AT, key=first.key, status="blocked", reason="frequency cap", retry_at=retry
        ),
    )
    deferral = next(c for c in t.commands if isinstance(c, Record))
    assert deferral.action == "deferred" and deferral.detail["reason"] == "frequency cap"
    assert deferral.detail["by"] == "compliance" and t.state.wake_at == retry
    t = engine.handle(p, t.state, Tick(at=retry))
    again = t.commands[-1]
    assert isinstance(again, SendMessage) and again.key == first.key  # the same touch, same key
    assert again.planned_at == AT


def test_a_task_blocked_by_rep_workload_is_deferred_then_assigned_with_a_fresh_due_time() -> None:
    p = plan([TASK, *ENDS])
    t = start(p)
    task = t.commands[-1]
    assert isinstance(task, AssignTask)
    retry = AT + timedelta(hours=5)
    t = engine.handle(
        p,
        t.state,
        ActionResult(
            at=AT,
            key=task.key,
            status="blocked",
            reason="every active rep of team 't' reached max_tasks_per_day",
            retry_at=retry,
            detail={"rule": "rep_workload"},
        ),
    )
    deferral = next(c for c in t.commands if isinstance(c, Record))
    assert (deferral.action, deferral.detail["rule"]) == ("deferred", "rep_workload")
    t = engine.handle(p, t.state, Tick(at=retry))
    again = t.commands[-1]
    assert isinstance(again, AssignTask) and again.key == task.key
    assert again.due_at == retry + timedelta(minutes=30) and again.planned_at == AT


def test_a_provider_status_is_recorded_and_changes_nothing_else() -> None:
    p = plan([SMS, *ENDS], policy=WINDOWS)
    t = start(p)
    before = t.state
    t = engine.handle(
        p,
        t.state,
        ProviderEvent(
            at=AT, key="hi:1:0", status="undelivered", detail={"step": "x", "code": 30006}
        ),
    )
    (record,) = t.commands
    assert isinstance(record, Record) and record.action == "provider_status" and record.step == "hi"
    assert record.detail == {
        "key": "hi:1:0",
        "status": "undelivered",
        "provider": {"step": "x", "code": 30006},
    }
    assert t.state.phase == before.phase and t.state.pending == before.pending


def test_send_blocked_by_an_opt_out_ends_the_run() -> None:
    p = plan([SMS, *ENDS], policy=WINDOWS)
    t = start(p)
    t = engine.handle(
        p,
        t.state,
        ActionResult(
            at=AT,
            key=t.commands[-1].key,
            status="blocked",
            reason="the contact opted out",
            detail={"rule": "opt_out"},
        ),
    )
    blocked = next(c for c in t.commands if isinstance(c, Record))
    assert blocked.action == "blocked" and blocked.detail["rule"] == "opt_out"
    assert t.state.result == "opted_out" and isinstance(t.commands[-1], Finish)


def test_blocked_send_without_retry_and_failed_send_take_on_failed() -> None:
    p = plan([SMS, *ENDS], policy=WINDOWS)
    t = start(p)
    blocked = engine.handle(
        p,
        t.state,
        ActionResult(at=AT, key=t.commands[-1].key, status="blocked", reason="opted out"),
    )
    assert records(blocked)[0] == "blocked" and blocked.state.result == "lost"
    failed = engine.handle(
        p,
        t.state,
        ActionResult(at=AT, key=t.commands[-1].key, status="failed", reason="21211 invalid number"),
    )
    assert records(failed)[0] == "failed" and failed.state.result == "lost"


def test_skip_policy_records_and_moves_on() -> None:
    p = plan([SMS, *ENDS], policy={**WINDOWS, "outside_window": "skip"})
    t = start(p, datetime(2026, 12, 1, 22, 0, tzinfo=NY))
    skipped = next(c for c in t.commands if isinstance(c, Record) and c.action == "skipped")
    assert "outside the sms window 08:00-21:00" in skipped.detail["reason"]
    assert t.state.result == "lost"  # skipped sends go where failed ones go


def test_result_for_another_key_is_ignored_and_recorded() -> None:
    p = plan([SMS, *ENDS])
    t = start(p)
    after = engine.handle(p, t.state, ActionResult(at=AT, key="nope", status="done"))
    assert records(after) == ["ignored"] and after.state.pending == t.state.pending


TASK = {
    "id": "call_lead",
    "kind": "task",
    "title": "Call",
    "due_within": "30m",
    "outcomes": ["connected", "booked"],
    "outcome_fields": {"booked": ["appointment_at"]},
    "on_outcome": {"booked": "won"},
}


@pytest.mark.parametrize(
    "step, outcome, data, message",
    [
        ("nope", "connected", {}, "unknown step 'nope'"),
        (
            "call_lead",
            "voicemail",
            {},
            "outcome 'voicemail' is not allowed for step 'call_lead' (allowed: connected, booked)",
        ),
        ("call_lead", "booked", {}, "outcome 'booked' of step 'call_lead' needs appointment_at"),
        ("won", "connected", {}, "step 'won' is not waiting for an outcome"),
    ],
)
def test_bad_outcome_reports_are_rejected_and_change_nothing(
    step: str, outcome: str, data: dict[str, Any], message: str
) -> None:
    p = plan([TASK, *ENDS], contact_fields={"appointment_at": {"type": "datetime"}})
    t = start(p)
    t = engine.handle(p, t.state, ActionResult(at=AT, key=t.commands[-1].key, status="done"))
    before = t.state.model_dump()
    assert message in (engine.outcome_problem(p, t.state, step, outcome, data) or "")
    with pytest.raises(InvalidEventError, match=message.split(" (")[0].replace("'", ".")):
        engine.handle(p, t.state, OutcomeReported(at=AT, step=step, outcome=outcome, data=data))
    assert t.state.model_dump() == before


def test_an_outcome_before_the_task_is_assigned_is_rejected() -> None:
    p = plan([TASK, *ENDS])
    t = start(p)  # AssignTask issued, its result not yet in
    assert "not waiting for an outcome" in (
        engine.outcome_problem(p, t.state, "call_lead", "connected") or ""
    )


def test_events_after_the_end_are_ignored() -> None:
    p = plan([{"id": "bye", "kind": "end", "result": "done"}])
    t = start(p)
    assert isinstance(t.commands[-1], Finish) and t.state.finished
    after = engine.handle(p, t.state, ContactEvent(at=AT, name="reply"))
    assert records(after) == ["ignored"] and after.state.result == "done"


def test_an_interrupt_overrides_the_default_opt_out_ending() -> None:
    steps = [
        {"id": "pause", "kind": "wait", "duration": "1d"},
        {"id": "sorry", "kind": "sms", "body": "Bye"},
        {"id": "done", "kind": "end", "result": "opted_out_acknowledged"},
    ]
    p = plan(steps, interrupts={"opted_out": "sorry"})
    t = start(p)
    t = engine.handle(p, t.state, ContactEvent(at=AT + timedelta(hours=1), name="opted_out"))
    assert records(t)[0] == "interrupt" and isinstance(t.commands[-1], SendMessage)


def test_a_tick_before_wake_at_changes_nothing() -> None:
    p = plan([{"id": "pause", "kind": "wait", "duration": "1d"}])
    t = start(p)
    early = engine.handle(p, t.state, Tick(at=AT + timedelta(hours=1)))
    assert early.commands == [] and early.state.wake_at == t.state.wake_at


def test_a_state_pinned_to_another_plan_is_refused() -> None:
    p1 = plan([{"id": "pause", "kind": "wait", "duration": "1d"}])
    p2 = plan([{"id": "pause", "kind": "wait", "duration": "2d"}])
    t = start(p1)
    with pytest.raises(InvalidEventError, match="pinned to plan"):
        engine.handle(p2, t.state, Tick(at=AT + timedelta(days=1)))


def test_next_business_day_at_ten_skips_the_weekend_and_thanksgiving() -> None:
    p = plan(
        [
            {
                "id": "w",
                "kind": "wait",
                "until": {"anchor": "enrolment", "business_day": 1, "at": "10:00"},
            },
            {"id": "done", "kind": "end", "result": "done"},
        ],
        policy={"holidays": {"country": "US"}},
    )
    wed = datetime(2026, 11, 25, 15, 0, tzinfo=NY)  # the day before Thanksgiving
    t = start(p, wed)
    assert t.state.wake_at == datetime(2026, 11, 27, 10, 0, tzinfo=NY)
    fri = datetime(2026, 11, 27, 15, 0, tzinfo=NY)
    assert start(p, fri).state.wake_at == datetime(2026, 11, 30, 10, 0, tzinfo=NY)


DRIP = [
    {"id": "pause_1", "kind": "wait", "duration": "1h"},
    {"id": "hello", "kind": "sms", "body": "Hi"},
    {"id": "done", "kind": "end", "result": "done"},
]


def test_a_paused_run_ignores_its_timer_and_resuming_acts_at_once() -> None:
    p = plan(DRIP)
    t = start(p)
    paused = engine.handle(
        p, t.state, Control(at=AT, action="pause", actor="sup-1", reason="complaint")
    )
    assert records(paused) == ["paused"] and paused.state.paused
    assert next(c for c in paused.commands if isinstance(c, Record)).detail == {
        "actor": "sup-1",
        "reason": "complaint",
    }
    late = engine.handle(p, paused.state, Tick(at=AT + timedelta(hours=2)))
    assert late.commands == [] and late.state.step == "pause_1"
    resumed = engine.handle(
        p, late.state, Control(at=AT + timedelta(hours=3), action="resume", actor="sup-1")
    )
    assert records(resumed)[0] == "resumed" and isinstance(resumed.commands[-1], SendMessage)


def test_a_paused_run_touches_no_one_even_when_an_event_moves_it_on() -> None:
    steps = [
        {"id": "await", "kind": "wait_for", "events": ["reply"], "timeout": "1d"},
        {"id": "hello", "kind": "sms", "body": "Hi"},
        {"id": "done", "kind": "end", "result": "done"},
    ]
    p = plan(steps)
    t = engine.handle(p, start(p).state, Control(at=AT, action="pause", actor="sup-1"))
    moved = engine.handle(p, t.state, ContactEvent(at=AT, name="reply"))
    assert not any(isinstance(c, SendMessage) for c in moved.commands)
    assert (
        "the run is paused"
        in next(
            c for c in moved.commands if isinstance(c, Record) and c.action == "deferred"
        ).detail["reason"]
    )
    resumed = engine.handle(
        p, moved.state, Control(at=AT + timedelta(minutes=5), action="resume", actor="sup-1")
    )
    assert isinstance(resumed.commands[-1], SendMessage)


def test_opt_out_still_ends_a_paused_run_and_cancel_ends_any_run() -> None:
    p = plan(DRIP)
    paused = engine.handle(p, start(p).state, Control(at=AT, action="pause", actor="sup-1"))
    assert (
        engine.handle(p, paused.state, ContactEvent(at=AT, name="opted_out")).state.result
        == "opted_out"
    )
    cancelled = engine.handle(
        p, start(p).state, Control(at=AT, action="cancel", actor="sup-2", reason="duplicate lead")
    )
    assert records(cancelled)[0] == "cancelled" and cancelled.state.result == "cancelled"
    twice = engine.handle(p, paused.state, Control(at=AT, action="pause", actor="sup-1"))
    assert records(twice) == ["ignored"]
