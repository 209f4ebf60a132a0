"""What a run's history says in words: the summaries of its activities and timers.

Temporal's UI prints an activity's or a timer's summary beside its event (the API gives it as
the event's user_metadata.summary), so a supervisor reads "Call the new lead → inside_sales (round robin)", "Text
day_before_sms" or "Wait until day 2 18:00 EDT (retry_calls)" instead of "sopflow.perform".
Pure functions of the plan, the command or state, and the rep known so far: no I/O, no clock.
A summary is metadata, not a command: changing its words never breaks a replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    AssignTask,
    CheckSegments,
    Command,
    EnrollContact,
    Escalate,
    Finish,
    PlaceCall,
    Record,
    RunState,
    SendMessage,
    UpdateContact,
)
from sopflow.sop.schema import AssignRule, LadderStep, MessageChannel
from workflows.search_attributes import rep_task

MAX_SUMMARY = 200  # one line in the UI; the step's own name stays in the plan


def _short(text: str) -> str:
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def _verb(channel: MessageChannel) -> str:
    match channel:
        case "sms":
            return "Text"
        case "whatsapp":
            return "WhatsApp"
        case "email":
            return "Email"
        case _:
            assert_never(channel)


def _ladder(plan: Plan, step_id: str) -> bool:
    return plan.has_step(step_id) and isinstance(plan.step(step_id), LadderStep)


def _label(plan: Plan, step_id: str) -> str:
    """The step's name as its author wrote it, else its id; a ladder's touches are its follow-ups."""
    if not plan.has_step(step_id):
        return step_id
    step = plan.step(step_id)
    if isinstance(step, LadderStep):
        return f"the follow-up of {step_id}"
    return f"“{step.name}”" if step.name else step_id


def assignee(rule: AssignRule, rep: str | None) -> str:
    """Who a task goes to, as far as the workflow knows before the activity picks: a named rep,
    the rep the run assigned last (the owner), else the team and how it picks."""
    match rule.strategy:
        case "rep":
            return rule.rep or "a rep"
        case "owner":
            return rep or "the contact's owner"
        case "round_robin" | "least_loaded":
            return f"{rule.team} ({rule.strategy.replace('_', ' ')})"
        case _:
            assert_never(rule.strategy)


def activity_summary(plan: Plan, command: Command, rep: str | None = None) -> str:
    """One line for the activity carrying `command` out; `rep`: the rep the run assigned last."""
    match command:
        case SendMessage():
            return _short(f"{_verb(command.channel)} {_label(plan, command.step)}")
        case PlaceCall():
            return _short(f"Automated call: {_label(plan, command.step)}")
        case AssignTask():
            attempt = f" (attempt {command.attempt})" if _ladder(plan, command.step) else ""
            return _short(f"{command.title}{attempt} → {assignee(command.assign, rep)}")
        case Escalate():
            holder = rep or "the rep"
            match command.action:
                case "remind":
                    text = f"Remind {holder}: {command.step} is overdue"
                case "notify_supervisor":
                    text = f"Notify {holder}'s supervisor: {command.step} is overdue"
                case "reassign":
                    to = assignee(command.to, None) if command.to else "the contact's owner"
                    text = f"Reassign {command.step} from {holder} → {to}"
                case _:
                    assert_never(command.action)
            return _short(f"{text} (level {command.level})")
        case EnrollContact():
            return _short(f"Enrol in {command.sop} ({command.step})")
        case UpdateContact():
            return _short(f"Update the {command.target} ({command.step})")
        case CheckSegments():
            return _short(f"Check segments {', '.join(command.segments)} ({command.step})")
        case Record():
            return _short(f"Record {command.action} ({command.step or 'run'})")
        case Finish():
            return _short(f"Finish: {command.result}")
        case _:
            assert_never(command)


def run_day(state: RunState, at: datetime) -> str:
    """`at` on the contact's wall clock, counted in days of the run: day 1 is the local date of
    the enrolment (how an author reads "day 2 at 18:00")."""
    zone = state.zones[0]
    local = clock.to_local(at, zone)
    day = (local.date() - clock.to_local(state.enrolled_at, zone).date()).days + 1
    return f"day {day} {local:%H:%M %Z}"


def timer_summary(plan: Plan, state: RunState, rep: str | None = None) -> str:
    """One line for the timer the run arms for `state.wake_at`: what it waits for, and until."""
    assert state.wake_at is not None, "a timer needs the state's wake_at"
    until = run_day(state, state.wake_at)
    step = state.step or "run"
    match state.phase:
        case "deferred":
            text = f"Wait for the window until {until} ({step})"
        case "awaiting_outcome":
            if not rep_task(plan, state.step):
                who = "the call's"  # the carrier answers a call step
            else:
                who = f"{rep}'s" if rep else "the rep's"
            text = f"Wait for {who} outcome until {until} ({step})"
        case "awaiting_event":
            events = " or ".join(state.awaiting_events) or "an event"
            text = f"Wait for {events} until {until} ({step})"
        case "waiting" | "awaiting_result" | "finished":
            text = f"Wait until {until} ({step})"
        case _:
            assert_never(state.phase)
    return _short(text)
