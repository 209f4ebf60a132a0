"""The pure SOP engine: (plan, state, event) -> (new state, commands).

It is the only implementation of SOP semantics. The Temporal workflow and the simulator
both drive it, so what the preview shows is what production does. No I/O, no clock (time
arrives on every event), no randomness (A/B splits take the arm assigned at enrolment, else
hash the contact id: sopflow/sop/splits.py).

This module is the walk: an event goes to the handler of the step the run is at
(sopflow/sop/steps/, one per step kind), the steps it leads to are entered in turn, and the
Transition comes out. The working object and its primitives are in run.py.

Shell contract:
- carry out the commands in order; SendMessage / PlaceCall / AssignTask each need an
  ActionResult with the command's key before the run moves on;
- when ``state.wake_at`` is set, send ``Tick(at >= wake_at)`` unless another event comes first;
- feed outcomes (rep or carrier) and contact events as they arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, assert_never

from sopflow.errors import InvalidContactError, InvalidEventError
from sopflow.sop import segment_routing
from sopflow.sop.conditions import all_hold
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    ActionResult,
    ContactEvent,
    Control,
    Event,
    OutcomeReported,
    ProviderEvent,
    RunState,
    Tick,
    Transition,
    utc,
)
from sopflow.sop.run import Run
from sopflow.sop.run import template_context as template_context
from sopflow.sop.steps import handler_for
from sopflow.sop.steps.base import Handler

# A valid plan never chains this many instant steps; the guard turns a bug into an error.
_MAX_INSTANT_STEPS = 1000


def start(
    plan: Plan,
    contact: Mapping[str, Any],
    zones: list[str],
    at: datetime,
    trigger: str = "",
    trigger_data: Mapping[str, Any] | None = None,
    variants: Mapping[str, str] | None = None,
) -> Transition:
    """Enrol a contact: the run enters the first step at `at`. The trigger event is `event`.
    `variants`: split step -> arm assigned at enrolment (the store's balanced blocks)."""
    at = utc(at)
    state = RunState(
        sop=plan.sop.id,
        version=plan.sop.version,
        digest=plan.digest,
        contact=dict(contact),
        zones=list(zones) or [plan.sop.policy.timezone.default],
        enrolled_at=at,
        now=at,
        last_event={"type": trigger, "data": dict(trigger_data or {})},
        assigned_variants=dict(variants or {}),
    )
    run = Run(plan, state)
    run.record(plan.sop.steps[0].id, "enrolled", zones=state.zones, version=plan.sop.version)
    run.goto(plan.sop.steps[0].id)
    return _settle(run)


def handle(plan: Plan, state: RunState, event: Event) -> Transition:
    """Apply one event. Events that do not concern the run are recorded and change nothing."""
    if state.digest != plan.digest:
        raise InvalidEventError(f"run is pinned to plan {state.digest}, not {plan.digest}")
    run = Run(plan, state.model_copy(deep=True))
    run.state.now = max(run.state.now, utc(event.at))
    if isinstance(event, ActionResult) and event.key != state.pending:
        _unheld_result(run, event)  # a failed escalation or enrolment: recorded, even at the end
    elif run.state.finished:
        run.record(state.step or "", "ignored", reason="run already finished", event=event.type)
    elif isinstance(event, Control):
        _on_control(run, event)
    elif isinstance(event, Tick):
        if not run.state.paused:
            _on_tick(run)
    elif isinstance(event, ActionResult):
        _here(run).on_result(run, event)
    elif isinstance(event, ProviderEvent):  # the step is the key's first part: "step:visit:attempt"
        step = event.key.split(":", 1)[0]
        run.record(
            step, "provider_status", key=event.key, status=event.status, provider=event.detail
        )
    elif isinstance(event, OutcomeReported):
        problem = outcome_problem(plan, state, event.step, event.outcome, event.data)
        if problem:
            raise InvalidEventError(problem)
        _here(run).on_outcome(run, event)
    else:
        _on_contact_event(run, event)
    return _settle(run)


def outcome_problem(
    plan: Plan, state: RunState, step_id: str, outcome: str, data: Mapping[str, Any] | None = None
) -> str | None:
    """Why an outcome report would be rejected, or None. Shells call this to validate updates."""
    if not plan.has_step(step_id):
        return f"unknown step {step_id!r} in SOP {plan.sop.id!r}"
    if state.finished:
        return f"the run has finished ({state.result})"
    if state.step != step_id or state.phase != "awaiting_outcome":
        return f"step {step_id!r} is not waiting for an outcome (the run is at {state.step!r}, {state.phase})"
    waits = handler_for(plan.step(step_id)).waits_for()
    allowed = waits.outcomes
    if outcome not in allowed:
        return f"outcome {outcome!r} is not allowed for step {step_id!r} (allowed: {', '.join(allowed)})"
    needed = waits.outcome_fields.get(outcome, [])
    missing = [name for name in needed if (data or {}).get(name) in (None, "")]
    if missing:
        return f"outcome {outcome!r} of step {step_id!r} needs {', '.join(missing)}"
    return None


def entry_matches(
    plan: Plan,
    event_type: str,
    contact: Mapping[str, Any],
    data: Mapping[str, Any],
    segments: Mapping[str, bool] | None = None,
) -> bool:
    """Does this event enrol this contact into the plan's SOP? `segments`: the store's answers
    for the segments the entry names (segment_routing.entry_segments); None: not asked yet, so
    conditions naming a segment are left out (intake asks the store next, sopflow/segmenting/
    membership.py), and a True here means "unless a segment says no"."""
    return event_type in plan.sop.entry.events and entry_holds(
        plan, event_type, contact, data, segments
    )


def entry_holds(
    plan: Plan,
    trigger: str,
    contact: Mapping[str, Any],
    data: Mapping[str, Any],
    segments: Mapping[str, bool] | None = None,
) -> bool:
    """The entry's conditions, for an event or a schedule's `trigger` ("schedule": a cohort's
    enrolment, sopflow/cohorts/enrol.py); `segments` as for `entry_matches`."""
    conditions = plan.sop.entry.conditions
    scope = {"contact": contact, "event": {**data, "type": trigger}, "segments": segments}
    if segments is None:
        conditions = segment_routing.without_segments(conditions)
    return all_hold(conditions, scope)


# ------------------------------------------------------------ the walk
def _here(run: Run) -> Handler[Any]:
    """The handler of the step the run is at."""
    return handler_for(run.step)


def _settle(run: Run) -> Transition:
    """Enter the steps the event led to, one after another, until one waits (or the run ends)."""
    entered = 0
    while run.jumps:
        target = run.jumps.pop(0)
        entered += 1
        if entered > _MAX_INSTANT_STEPS:
            raise InvalidEventError("the SOP chains too many steps with no wait")
        _enter(run, target)
    return run.transition()


def _enter(run: Run, target: str | None) -> None:
    if target is None:
        run.end("completed")
        return
    run.arrive(target)
    try:
        _here(run).enter(run)
    except InvalidContactError as exc:  # e.g. no appointment date to schedule from
        run.record(target, "error", reason=str(exc))
        run.end("invalid_contact")


def _unheld_result(run: Run, event: ActionResult) -> None:
    """A command that does not hold the run (escalation, enrolment, update) reports only its
    failure: written down for the audit, the run goes on (see protocol.awaits_result)."""
    if event.status == "failed":
        step_id = event.key.split(":", 1)[0]
        run.record(step_id, "effect_failed", key=event.key, reason=event.reason, **event.detail)
    else:
        run.record(
            run.state.step or "",
            "ignored",
            reason="result for a command not awaited",
            key=event.key,
        )


def _on_tick(run: Run) -> None:
    state = run.state
    if state.wake_at is None or run.now < state.wake_at:
        return  # a stale or early timer: nothing is due
    match state.phase:
        case "deferred" | "waiting" | "awaiting_outcome" | "awaiting_event":
            _here(run).on_timer(run)  # one of the step's own timers: the phase says which
        case "awaiting_result" | "finished":
            pass  # a result or nothing is awaited: a timer means nothing here
        case _:
            assert_never(state.phase)


def _on_control(run: Run, event: Control) -> None:
    state, here = run.state, run.state.step or ""
    if event.action == "cancel":
        run.record(here, "cancelled", actor=event.actor, reason=event.reason)
        run.end("cancelled")
    elif event.action == "pause" and not state.paused:
        state.paused = True
        run.record(here, "paused", actor=event.actor, reason=event.reason)
    elif event.action == "resume" and state.paused:
        state.paused = False
        run.record(here, "resumed", actor=event.actor, reason=event.reason)
        _on_tick(run)  # whatever fell due while paused happens now
    else:
        run.record(
            here,
            "ignored",
            reason=f"already {'paused' if state.paused else 'running'}",
            control=event.action,
            actor=event.actor,
        )


def _on_contact_event(run: Run, event: ContactEvent) -> None:
    state = run.state
    state.contact.update(event.data)
    state.last_event = {"type": event.name, "data": dict(event.data)}
    here = state.step or ""
    interrupt = run.plan.sop.interrupts.get(event.name)
    if interrupt is not None:
        run.record(here, "interrupt", event=event.name, goto=interrupt)
        run.goto(interrupt)
    elif event.name == "opted_out":
        run.record(here, "event", event=event.name, data=event.data)
        run.end("opted_out")
    elif state.phase == "awaiting_event" and event.name in state.awaiting_events:
        run.record(here, "event", event=event.name, data=event.data)
        _here(run).on_event(run, event)
    else:
        run.record(here, "event", event=event.name, data=event.data, effect="none")
