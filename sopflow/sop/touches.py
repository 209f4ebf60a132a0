"""How the engine carries out touches (send, call, task), their outcomes, escalations and ladders.

Functions over the engine's working `Run`; split from engine.py so each file holds one idea:
engine.py walks the steps, this module performs and follows up the contact-facing ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sopflow.sop import clock
from sopflow.sop.protocol import (
    ActionResult,
    AssignTask,
    Command,
    Escalate,
    PlaceCall,
    SendMessage,
)
from sopflow.sop.schema import (
    CallSpec,
    CallStep,
    FollowUp,
    LadderStep,
    MessageStep,
    TaskSpec,
    TaskStep,
    step_action,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sopflow.sop.engine import Run


def _touch_channel(run: Run) -> str | None:
    step = run.step
    if run.state.followup is not None:
        assert isinstance(step, LadderStep)
        return step.followups[run.state.followup].kind
    if isinstance(step, MessageStep):
        return step.kind
    action = step_action(step)
    if isinstance(action, CallSpec):
        return "call"
    return action.channel if action else None


def try_touch(run: Run) -> None:
    """Run the current touch now if its window allows, else defer or skip it per policy."""
    state, policy = run.state, run.plan.sop.policy
    if state.paused:  # a paused run contacts no one; resuming picks the touch up at once
        run.record(
            state.step or "",
            "deferred",
            reason="the run is paused",
            planned_at=_iso(state.planned_at),
        )
        run.wait("deferred", run.now)
        return
    channel = _touch_channel(run)
    window = policy.windows.get(channel) if channel else None  # type: ignore[call-overload]
    allowed = clock.next_allowed(run.now, state.zones, window, run.calendar)
    if allowed == run.now:
        _issue_touch(run)
        return
    assert window is not None and channel is not None
    reason = clock.why_blocked(run.now, state.zones, channel, window, run.calendar)
    if allowed is not None and policy.outside_window == "defer":
        run.record(
            state.step or "",
            "deferred",
            reason=reason,
            until=allowed.isoformat(),
            planned_at=_iso(state.planned_at),
        )
        run.wait("deferred", allowed)
        return
    run.record(state.step or "", "skipped", reason=reason, planned_at=_iso(state.planned_at))
    touch_did_not_happen(run, "skipped")


def _message(run: Run) -> tuple[str, MessageStep | FollowUp] | None:
    """(key, message) when the current touch is a message: a message step or a follow-up."""
    state, step = run.state, run.step
    if state.followup is not None:
        assert isinstance(step, LadderStep)
        return run.key(f":f{state.followup}"), step.followups[state.followup]
    if isinstance(step, MessageStep):
        return run.key(), step
    return None


def _issue_touch(run: Run) -> None:
    state, step = run.state, run.step
    planned = state.planned_at or run.now
    command: Command
    message = _message(run)
    if message is not None:
        key, spec = message
        command = SendMessage(
            at=run.now,
            step=step.id,
            key=key,
            channel=spec.kind,
            body=spec.body,
            planned_at=planned,
            context=run.context(),
            template=spec.template,
        )
    else:
        action = step_action(step)
        if isinstance(action, CallSpec):
            command = PlaceCall(
                at=run.now,
                step=step.id,
                key=run.key(),
                script=action.script,
                machine_detection=action.machine_detection,
                planned_at=planned,
                context=run.context(),
            )
        else:
            assert isinstance(action, TaskSpec)
            state.due_at = task_due(run, action)
            command = AssignTask(
                at=run.now,
                step=step.id,
                key=run.key(),
                title=action.title,
                instructions=action.instructions,
                assign=action.assign,
                due_at=state.due_at,
                planned_at=planned,
                attempt=max(state.attempt, 1),
                context=run.context(),
                channel=action.channel,
                due_within=action.due_within,
            )
    state.pending = command.key
    run.commands.append(command)
    run.wait("awaiting_result", None)


def task_due(run: Run, action: TaskSpec) -> datetime:
    """The SLA counted in the task's window only (clock.add_window_time): a task issued near
    closing time is due after the window reopens, never outside it. The gate may move it later
    still for the law's windows; the engine then takes the gate's due time (on_result)."""
    policy = run.plan.sop.policy
    window = policy.windows.get(action.channel) if action.channel else None
    windows = [(window, run.calendar)] if window is not None else []
    due = clock.add_window_time(run.now, action.due_within, run.state.zones, windows)
    return due if due is not None else run.now + action.due_within


def touch_did_not_happen(run: Run, outcome: str) -> None:
    """A touch was skipped or failed: route it like the step's outcome of that name."""
    step, state = run.step, run.state
    if state.followup is not None:
        _after_followup(run)
    elif isinstance(step, MessageStep):
        run.goto(step.on_failed or run.plan.next_of(step.id))
    else:
        on_outcome(run, outcome, actor="sopflow")


def on_result(run: Run, event: ActionResult) -> None:
    state = run.state
    if state.pending != event.key:
        # A command that does not hold the run (escalation, enrolment, update) reports only its
        # failure: written down for the audit, the run goes on (see protocol.awaits_result).
        step_id = event.key.split(":", 1)[0]
        if event.status == "failed":
            run.record(step_id, "effect_failed", key=event.key, reason=event.reason, **event.detail)
        else:
            run.record(
                state.step or "",
                "ignored",
                reason="result for a command not awaited",
                key=event.key,
            )
        return
    step = run.step
    state.pending = None
    if event.status == "blocked":
        if event.retry_at is not None and run.plan.sop.policy.outside_window == "defer":
            run.record(
                step.id,
                "deferred",
                reason=event.reason,
                until=event.retry_at.isoformat(),
                planned_at=_iso(state.planned_at),
                by="compliance",
                rule=event.detail.get("rule", ""),
            )
            run.wait("deferred", max(event.retry_at, run.now))
            return
        run.record(step.id, "blocked", reason=event.reason, **event.detail)
        if event.detail.get("rule") == "opt_out":  # the gate saw an opt-out: no more touches
            run.end("opted_out")
            return
        touch_did_not_happen(run, "skipped")
        return
    if event.status == "failed":
        run.record(step.id, "failed", reason=event.reason, **event.detail)
        touch_did_not_happen(run, "failed")
        return
    if state.followup is not None:
        _after_followup(run)
    elif isinstance(step, MessageStep):
        run.goto(run.plan.next_of(step.id))
    else:
        action = step_action(step)
        if isinstance(action, CallSpec):  # the carrier reports the result by then
            state.due_at = run.now + action.result_timeout
        elif event.due_at is not None:  # the gate counted the SLA in the law's windows too
            state.due_at = event.due_at
        _await_outcome(run)


# ---- outcomes and escalation
def _await_outcome(run: Run) -> None:
    run.state.phase = "awaiting_outcome"
    run.state.wake_at = _next_outcome_deadline(run)


def _next_outcome_deadline(run: Run) -> datetime | None:
    state, action = run.state, step_action(run.step)
    assert state.due_at is not None
    if isinstance(action, CallSpec):
        return state.due_at
    assert isinstance(action, TaskSpec)
    candidates = []
    if not state.overdue_recorded:
        candidates.append(state.due_at)
    if state.escalation_level < len(action.escalation):
        candidates.append(state.due_at + action.escalation[state.escalation_level].after)
    if action.expires_after is not None:
        candidates.append(state.due_at + action.expires_after)
    future = [c for c in candidates if c >= run.now]
    return min(future) if future else (min(candidates) if candidates else None)


def outcome_timer(run: Run) -> None:
    state, action = run.state, step_action(run.step)
    if isinstance(action, CallSpec):
        run.record(run.step.id, "timeout", reason="no call result in time")
        on_outcome(run, "expired", actor="sopflow")
        return
    assert isinstance(action, TaskSpec) and state.due_at is not None
    if not state.overdue_recorded and run.now >= state.due_at:
        state.overdue_recorded = True
        run.record(run.step.id, "overdue", due_at=state.due_at.isoformat())
    while (
        state.escalation_level < len(action.escalation)
        and run.now >= state.due_at + action.escalation[state.escalation_level].after
    ):
        rung = action.escalation[state.escalation_level]
        state.escalation_level += 1
        run.commands.append(
            Escalate(
                at=run.now,
                step=run.step.id,
                key=run.key(f":e{state.escalation_level}"),
                action=rung.action,
                level=state.escalation_level,
                to=rung.to,
                due_at=state.due_at,
            )
        )
    if action.expires_after is not None and run.now >= state.due_at + action.expires_after:
        run.record(run.step.id, "expired", due_at=state.due_at.isoformat())
        on_outcome(run, "expired", actor="sopflow")
        return
    _await_outcome(run)


def on_outcome(
    run: Run, outcome: str, *, actor: str, note: str = "", data: Mapping[str, Any] | None = None
) -> None:
    state, step = run.state, run.step
    state.last_outcome = outcome
    if data:
        state.contact.update(data)
        state.last_event = {"type": "outcome", "data": dict(data)}
    on_time = None if state.due_at is None else run.now <= state.due_at
    run.record(
        step.id,
        "outcome",
        outcome=outcome,
        actor=actor,
        note=note,
        attempt=state.attempt,
        on_time=on_time,
        **({"data": dict(data)} if data else {}),
    )
    state.wake_at, state.pending = None, None
    if isinstance(step, LadderStep):
        # The touch went out only if the run was awaiting its outcome: a skipped, blocked or
        # failed one comes here through touch_did_not_happen in another phase (see _next_slot).
        made = state.phase == "awaiting_outcome"
        if made:
            state.attempts_made += 1
        if outcome in step.stop_on:
            run.goto(step.on_outcome.get(outcome) or run.plan.next_of(step.id))
            return
        index = _followup_due(step, state.attempts_made if made else None, state.attempt)
        if index is not None:
            state.followup, state.planned_at = index, run.now
            try_touch(run)
            return
        _next_slot(run, step)
        return
    assert isinstance(step, TaskStep | CallStep)
    run.goto(step.on_outcome.get(outcome) or run.plan.next_of(step.id))


# ---- ladders
def start_ladder(run: Run, step: LadderStep) -> None:
    anchor = run.state.enrolled_at if step.anchor == "enrolment" else run.now
    zone_name = run.state.zones[0]
    day0 = clock.to_local(anchor, zone_name).date()
    run.state.slots = [
        clock.local_instant(day0 + timedelta(days=slot.day - 1), slot.at, zone_name)
        for slot in step.slots
    ]
    _next_slot(run, step)


def _after_followup(run: Run) -> None:
    run.state.followup = None
    step = run.step
    assert isinstance(step, LadderStep)
    _next_slot(run, step)


def _next_slot(run: Run, step: LadderStep) -> None:
    state = run.state
    while state.attempt < len(state.slots):
        state.attempt += 1
        slot = state.slots[state.attempt - 1]
        state.planned_at, state.due_at, state.overdue_recorded, state.escalation_level = (
            slot,
            None,
            False,
            0,
        )
        if slot >= run.now - SLOT_GRACE:  # late by a timer's latency is not missed
            run.wait("waiting", max(slot, run.now))
            return
        if step.missed_slot == "shift":
            _shift_slots(run, step)
            run.wait("waiting", state.planned_at)
            return
        if step.missed_slot == "run_now":
            # The previous touch's phase must not pass for this one's (on_outcome counts an
            # attempt as made only when the run was awaiting its outcome).
            state.phase = "waiting"
            try_touch(run)
            return
        run.record(step.id, "slot_missed", attempt=state.attempt, slot=slot.isoformat())
    run.record(step.id, "ladder_exhausted", attempts=len(state.slots))
    run.goto(step.on_exhausted or run.plan.next_of(step.id))


# A slot reached this late still runs (at once): the previous attempt's expiry timer may fire
# seconds after a slot at the same instant, and that must not cost the lead a day or an attempt.
SLOT_GRACE = timedelta(minutes=10)
# Looking this many days past the first day a shifted slot is ahead for one its window allows.
_SHIFT_SEARCH_DAYS = 14


def _shift_slots(run: Run, step: LadderStep) -> None:
    """`missed_slot: shift`: the slot now due is past; move it and every later slot by the same
    whole days, to the first day its listed local time is ahead and inside the attempt's window
    (so the window does not defer it a second time), else the first day it is ahead. Slots are
    rebuilt from local dates and listed times, so they keep their local time across DST."""
    state, zone_name = run.state, run.state.zones[0]
    index = state.attempt - 1

    def moved(i: int, days: int) -> datetime:
        day = clock.to_local(state.slots[i], zone_name).date() + timedelta(days=days)
        return clock.local_instant(day, step.slots[i].at, zone_name)

    today = clock.to_local(run.now, zone_name).date()
    ahead = max(1, (today - clock.to_local(state.slots[index], zone_name).date()).days)
    if moved(index, ahead) < run.now:
        ahead += 1
    channel = _touch_channel(run)
    window = run.plan.sop.policy.windows.get(channel) if channel else None  # type: ignore[call-overload]
    days = ahead  # if the window never allows the listed time, it defers the slot as usual
    for candidate in range(ahead, ahead + _SHIFT_SEARCH_DAYS):
        at = moved(index, candidate)
        if window is None or clock.next_allowed(at, state.zones, window, run.calendar) == at:
            days = candidate
            break
    run.record(
        step.id,
        "slot_shifted",
        attempt=state.attempt,
        slot=state.slots[index].isoformat(),
        to=moved(index, days).isoformat(),
        days=days,
        reason="the slot passed before the ladder reached it",
    )
    state.slots[index:] = [moved(i, days) for i in range(index, len(state.slots))]
    state.planned_at = state.slots[index]


def _followup_due(step: LadderStep, made: int | None, slot: int) -> int | None:
    """The follow-up to send now: after the `made`-th attempt made (None: this one was not),
    or, for plans compiled before attempts made were counted, after slot number `slot`."""
    count = slot if step.followups_count == "slots" else made
    if count is None:
        return None
    return next((i for i, f in enumerate(step.followups) if f.after_attempt == count), None)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
