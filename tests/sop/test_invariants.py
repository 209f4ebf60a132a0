"""Property tests of the engine's invariants over random SOPs, zones, start times and outcomes.

Window membership is checked here from first principles (zoneinfo + holidays), not through
sopflow.sop.clock, so a bug there cannot hide itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.sop import engine
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import (
    ActionResult,
    AssignTask,
    Command,
    Event,
    OutcomeReported,
    PlaceCall,
    SendMessage,
    Tick,
    Transition,
)
from sopflow.sop.schema import Sop

ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/Paris",
    "Asia/Shanghai",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
]
WEEKDAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    first = draw(st.integers(6, 14))
    end = draw(st.integers(first + 1, 17))
    hours = [f"{first:02d}:{draw(st.sampled_from([0, 30])):02d}-{end:02d}:00"]
    if draw(st.booleans()):
        hours.append(f"{end + 1:02d}:00-{draw(st.integers(end + 2, 23)):02d}:00")
    return {"hours": hours, "days": draw(st.sampled_from(["all", "business"]))}


@st.composite
def sops(draw: st.DrawFn) -> dict[str, Any]:
    slots = sorted(
        {
            (draw(st.integers(1, 3)), draw(st.integers(0, 23)))
            for _ in range(draw(st.integers(1, 6)))
        }
    )
    task = {
        "title": "Call",
        "channel": "call",
        "due_within": f"{draw(st.integers(5, 120))}m",
        "outcomes": ["connected", "no_answer", "busy"],
        "escalation": [
            {"after": f"{m}m", "action": a}
            for m, a in zip(
                sorted(draw(st.lists(st.integers(0, 90), max_size=3))),
                ["remind", "notify_supervisor", "reassign"],
                strict=False,
            )
        ],
    }
    if draw(st.booleans()):
        task["expires_after"] = f"{draw(st.integers(1, 6))}h"
    return {
        "id": "prop",
        "version": 1,
        "name": "Property",
        "owner": "qa",
        "entry": {"events": ["lead.created"]},
        "policy": {
            "business_days": draw(
                st.lists(st.sampled_from(WEEKDAY_NAMES), min_size=1, max_size=7, unique=True)
            ),
            "holidays": draw(st.sampled_from([None, {"country": "US"}, {"country": "FR"}])),
            "windows": {"call": draw(windows()), "sms": draw(windows())},
            "outside_window": draw(st.sampled_from(["defer", "skip"])),
        },
        "steps": [
            {"id": "first", "kind": "task", **task, "on_outcome": {"connected": "done"}},
            {
                "id": "ladder",
                "kind": "ladder",
                "attempt": {"kind": "task", **task},
                "slots": [{"day": d, "at": f"{h:02d}:00"} for d, h in slots],
                "stop_on": ["connected"],
                "followups": [
                    {"after_attempt": 1, "kind": "sms", "body": "Hi {{ contact.first_name }}"}
                ],
                "on_outcome": {"connected": "done"},
            },
            {"id": "nudge", "kind": "sms", "body": "Still there?"},
            {"id": "pause", "kind": "wait", "duration": f"{draw(st.integers(1, 48))}h"},
            {"id": "robocall", "kind": "call", "script": "Hello", "result_timeout": "15m"},
            {"id": "done", "kind": "end", "result": "done"},
        ],
    }


def allowed(plan: Plan, channel: str, at: datetime, zones: list[str]) -> bool:
    policy = plan.sop.policy
    window = policy.windows[channel]  # type: ignore[index]
    for zone in zones:
        local = at.astimezone(ZoneInfo(zone))
        if not any(start <= local.time() < end for start, end in window.hours):
            return False
        if window.days == "business":
            if WEEKDAY_NAMES[local.weekday()] not in policy.business_days:
                return False
            if policy.holidays and local.date() in holidays.country_holidays(
                policy.holidays.country, years=local.year
            ):
                return False
    return True


def channel_of(command: Command) -> str | None:
    if isinstance(command, SendMessage):
        return command.channel
    if isinstance(command, PlaceCall | AssignTask):
        return "call"  # every task in these SOPs has channel: call
    return None


def drive(
    plan: Plan, zones: list[str], start: datetime, outcomes: list[str | None]
) -> list[Transition]:
    """Answer every effect, report scripted outcomes 5 minutes after each assignment, tick timers."""
    outcomes = list(outcomes)
    transitions = [engine.start(plan, {"id": "c-1", "first_name": "Ann"}, zones, start)]
    inbox: list[Event] = []
    for _ in range(400):
        current = transitions[-1]
        for command in current.commands:
            if isinstance(command, SendMessage | PlaceCall | AssignTask):
                inbox.append(ActionResult(at=command.at, key=command.key, status="done"))
            if isinstance(command, PlaceCall | AssignTask) and outcomes:
                outcome = outcomes.pop(0)
                if outcome is not None:
                    inbox.append(
                        OutcomeReported(
                            at=command.at + timedelta(minutes=5),
                            step=command.step,
                            outcome=outcome if isinstance(command, AssignTask) else "no_answer",
                        )
                    )
        state = current.state
        if state.finished:
            break
        inbox.sort(key=lambda e: e.at)
        if state.wake_at is not None and (not inbox or state.wake_at < inbox[0].at):
            event: Event = Tick(at=state.wake_at)
        elif inbox:
            event = inbox.pop(0)
        else:
            break
        if isinstance(event, OutcomeReported) and engine.outcome_problem(
            plan, state, event.step, event.outcome
        ):
            continue
        transitions.append(engine.handle(plan, state, event))
    return transitions


CASES = given(
    sop=sops(),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True),
    start=st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    outcomes=st.lists(st.sampled_from([None, "connected", "no_answer", "busy"]), max_size=8),
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@CASES
def test_no_touch_outside_its_window_and_ladders_never_exceed_their_slots(
    sop: dict[str, Any], zones: list[str], start: datetime, outcomes: list[str | None]
) -> None:
    plan = compile_plan(Sop.model_validate(sop))
    transitions = drive(plan, zones, start, outcomes)
    ladder_attempts = 0
    previous = start
    for transition in transitions:
        for command in transition.commands:
            assert command.at >= previous, "time went backwards"
            previous = command.at
            channel = channel_of(command)
            if channel is not None:
                assert allowed(plan, channel, command.at, zones), (
                    command.kind,
                    command.at.isoformat(),
                    zones,
                )
            if isinstance(command, AssignTask) and command.step == "ladder":
                ladder_attempts += 1
    assert ladder_attempts <= len(sop["steps"][1]["slots"])


@SETTINGS
@CASES
def test_every_state_waits_for_something_or_has_ended(
    sop: dict[str, Any], zones: list[str], start: datetime, outcomes: list[str | None]
) -> None:
    plan = compile_plan(Sop.model_validate(sop))
    for transition in drive(plan, zones, start, outcomes):
        state = transition.state
        if state.phase in ("deferred", "waiting", "awaiting_event"):
            assert state.wake_at is not None, state.phase
        elif state.phase == "awaiting_result":
            assert state.pending is not None
        else:
            assert state.phase in ("awaiting_outcome", "finished")
        assert state.finished == (state.result is not None)


@settings(max_examples=50, deadline=None)
@CASES
def test_same_inputs_same_timeline(
    sop: dict[str, Any], zones: list[str], start: datetime, outcomes: list[str | None]
) -> None:
    plan = compile_plan(Sop.model_validate(sop))
    first = [c.model_dump() for t in drive(plan, zones, start, outcomes) for c in t.commands]
    second = [c.model_dump() for t in drive(plan, zones, start, outcomes) for c in t.commands]
    assert first == second


def test_a_slot_inside_a_dst_gap_is_late_never_early() -> None:
    """02:30 does not exist in New York on 2026-03-08: the slot runs at 03:30 EDT."""
    sop = {
        "id": "dst",
        "version": 1,
        "name": "DST",
        "owner": "qa",
        "entry": {"events": ["x"]},
        "steps": [
            {"id": "w", "kind": "wait", "until": {"day": 2, "at": "02:30"}},
            {"id": "s", "kind": "sms", "body": "hi"},
        ],
    }
    plan = compile_plan(Sop.model_validate(sop))
    start = datetime(2026, 3, 7, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    transition = engine.start(plan, {"id": "c"}, ["America/New_York"], start)
    wake = transition.state.wake_at
    assert wake is not None
    assert wake.astimezone(ZoneInfo("America/New_York")).time() == time(3, 30)
