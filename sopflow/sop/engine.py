"""The pure SOP engine: (plan, state, event) -> (new state, commands).

It is the only implementation of SOP semantics. The Temporal workflow and the simulator
both drive it, so what the preview shows is what production does. No I/O, no clock (time
arrives on every event), no randomness (A/B splits take the arm assigned at enrolment, else
hash the contact id: sopflow/sop/splits.py).

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
from sopflow.sop import clock, splits, touches
from sopflow.sop.conditions import all_hold
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    ActionResult,
    Command,
    ContactEvent,
    Control,
    EnrollContact,
    Event,
    Finish,
    OutcomeReported,
    ProviderEvent,
    Record,
    RunState,
    Tick,
    Transition,
    UpdateContact,
    utc,
)
from sopflow.sop.schema import (
    BranchStep,
    CallStep,
    EndStep,
    EnrollStep,
    LadderStep,
    MessageStep,
    SplitStep,
    Step,
    TaskSpec,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    step_action,
    step_outcomes,
)

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
    return run.finish_transition()


def handle(plan: Plan, state: RunState, event: Event) -> Transition:
    """Apply one event. Events that do not concern the run are recorded and change nothing."""
    if state.digest != plan.digest:
        raise InvalidEventError(f"run is pinned to plan {state.digest}, not {plan.digest}")
    run = Run(plan, state.model_copy(deep=True))
    run.state.now = max(run.state.now, utc(event.at))
    if isinstance(event, ActionResult) and event.key != state.pending:
        touches.on_result(run, event)  # a failed escalation or enrolment: recorded, even at the end
    elif run.state.finished:
        run.record(state.step or "", "ignored", reason="run already finished", event=event.type)
    elif isinstance(event, Control):
        run.on_control(event)
    elif isinstance(event, Tick):
        if not run.state.paused:
            run.on_tick()
    elif isinstance(event, ActionResult):
        touches.on_result(run, event)
    elif isinstance(event, ProviderEvent):  # the step is the key's first part: "step:visit:attempt"
        step = event.key.split(":", 1)[0]
        run.record(
            step, "provider_status", key=event.key, status=event.status, provider=event.detail
        )
    elif isinstance(event, OutcomeReported):
        problem = outcome_problem(plan, state, event.step, event.outcome, event.data)
        if problem:
            raise InvalidEventError(problem)
        touches.on_outcome(run, event.outcome, actor=event.actor, note=event.note, data=event.data)
    else:
        run.on_contact_event(event)
    return run.finish_transition()


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
    allowed = step_outcomes(plan.step(step_id))
    if outcome not in allowed:
        return f"outcome {outcome!r} is not allowed for step {step_id!r} (allowed: {', '.join(allowed)})"
    action = step_action(plan.step(step_id))
    needed = action.outcome_fields.get(outcome, []) if isinstance(action, TaskSpec) else []
    missing = [name for name in needed if (data or {}).get(name) in (None, "")]
    if missing:
        return f"outcome {outcome!r} of step {step_id!r} needs {', '.join(missing)}"
    return None


def entry_matches(
    plan: Plan, event_type: str, contact: Mapping[str, Any], data: Mapping[str, Any]
) -> bool:
    """Does this event enrol this contact into the plan's SOP?"""
    entry = plan.sop.entry
    scope = {"contact": contact, "event": {**data, "type": event_type}}
    return event_type in entry.events and all_hold(entry.conditions, scope)


def template_context(plan: Plan, state: RunState) -> dict[str, Any]:
    """Template variables the engine knows; the shell adds `rep` and `run.id`."""
    return {
        "contact": state.contact,
        "event": state.last_event.get("data", {}),
        "run": {
            "enrolled_at": state.enrolled_at.isoformat(),
            "variant": next(reversed(state.variants.values()), None),
            "attempt": state.attempt,
            "visit": state.visits.get(state.step or "", 0),
            "step": state.step,
            "timezone": state.zones[0],
        },
        "sop": {"id": plan.sop.id, "name": plan.sop.name, "version": plan.sop.version},
    }


class Run:
    """One engine call's working copy: mutates `state` and collects commands."""

    def __init__(self, plan: Plan, state: RunState) -> None:
        self.plan = plan
        self.state = state
        self.commands: list[Command] = []
        self.calendar = clock.Calendar.from_policy(plan.sop.policy)
        self._jump: list[str | None] = []

    # ------------------------------------------------------------ plumbing
    @property
    def now(self) -> datetime:
        return self.state.now

    @property
    def step(self) -> Step:
        assert self.state.step is not None
        return self.plan.step(self.state.step)

    def key(self, suffix: str = "") -> str:
        step = self.state.step or "-"
        return f"{step}:{self.state.visits.get(step, 0)}:{self.state.attempt}{suffix}"

    def unique_key(self, what: str) -> str:
        """For records: one per command of one transition, so never reused within the run."""
        return f"{what}@{self.state.transitions}.{len(self.commands)}"

    def record(self, step: str, action: str, **detail: Any) -> None:
        self.commands.append(
            Record(
                at=self.now, step=step, key=self.unique_key(action), action=action, detail=detail
            )
        )

    def context(self) -> dict[str, Any]:
        return template_context(self.plan, self.state)

    def goto(self, target: str | None) -> None:
        self._jump.append(target)

    def finish_transition(self) -> Transition:
        entered = 0
        while self._jump:
            target = self._jump.pop(0)
            entered += 1
            if entered > _MAX_INSTANT_STEPS:
                raise InvalidEventError("the SOP chains too many steps with no wait")
            self._enter(target)
        self.state.transitions += 1
        return Transition(state=self.state, commands=self.commands)

    def wait(self, phase: Any, until: datetime | None) -> None:
        self.state.phase = phase
        self.state.wake_at = until

    def end(self, result: str) -> None:
        state = self.state
        state.phase, state.result, state.wake_at, state.pending = "finished", result, None, None
        state.awaiting_events = []
        self.commands.append(
            Finish(at=self.now, step=state.step or "", key=self.unique_key("end"), result=result)
        )

    # ------------------------------------------------------------ entering steps
    def _enter(self, target: str | None) -> None:
        state = self.state
        if target is None:
            self.end("completed")
            return
        state.step = target
        state.visits[target] = state.visits.get(target, 0) + 1
        state.step_started[target] = self.now
        state.planned_at, state.attempt, state.followup, state.slots = self.now, 0, None, []
        state.attempts_made = 0
        state.due_at, state.overdue_recorded, state.escalation_level = None, False, 0
        state.pending, state.awaiting_events, state.wake_at = None, [], None
        try:
            self._perform(self.step)
        except InvalidContactError as exc:  # e.g. no appointment date to schedule from
            self.record(target, "error", reason=str(exc))
            self.end("invalid_contact")

    def _perform(self, step: Step) -> None:
        """Enter a step: one case per step kind, so a kind added to the language and forgotten
        here fails mypy (assert_never), not a run."""
        state = self.state
        match step:
            case MessageStep() | CallStep() | TaskStep():
                touches.try_touch(self)
            case LadderStep():
                touches.start_ladder(self, step)
            case WaitStep():
                self._start_wait(step)
            case WaitForStep():
                deadline = (
                    self.now + step.timeout if step.timeout is not None else self.moment(step.until)
                )
                state.awaiting_events = list(step.events)
                self.wait("awaiting_event", deadline)
            case BranchStep():
                self._branch(step)
            case SplitStep():
                contact_id = str(state.contact.get("id", ""))
                variant, how = splits.choose(self.plan, step, contact_id, state.assigned_variants)
                state.variants[step.id] = variant
                self.record(step.id, "variant", variant=variant, **how)
                self.goto(next(v.goto for v in step.variants if v.name == variant))
            case EnrollStep():
                self.commands.append(
                    EnrollContact(
                        at=self.now,
                        step=step.id,
                        key=self.key(),
                        sop=step.sop,
                        data=step.data,
                        context=self.context(),
                    )
                )
                self.goto(self.plan.next_of(step.id))
            case UpdateStep():
                self.commands.append(
                    UpdateContact(
                        at=self.now,
                        step=step.id,
                        key=self.key(),
                        target=step.target,
                        set=step.set,
                        add_tags=step.add_tags,
                        context=self.context(),
                    )
                )
                self.goto(self.plan.next_of(step.id))
            case EndStep():
                self.end(step.result)
            case _:
                assert_never(step)

    def moment(self, moment: Any) -> datetime:
        state = self.state
        return clock.resolve_moment(
            moment,
            now=self.now,
            enrolled_at=state.enrolled_at,
            step_started=state.step_started,
            contact=state.contact,
            zone_name=state.zones[0],
            calendar=self.calendar,
        )

    def _start_wait(self, step: WaitStep) -> None:
        target = self.now + step.duration if step.duration is not None else self.moment(step.until)
        if target > self.now:
            self.wait("waiting", target)
            return
        self.record(step.id, "wait_past", target=target.isoformat(), goto=step.on_past)
        self.goto(step.on_past or self.plan.next_of(step.id))

    def _branch(self, step: BranchStep) -> None:
        context = self.context()
        scope = context | {
            "event": {**context["event"], "type": self.state.last_event.get("type")},
            "outcome": self.state.last_outcome,
            "variant": context["run"]["variant"],
            "visits": self.state.visits,
            "today": clock.to_local(self.now, self.state.zones[0]).date(),
        }
        for index, case in enumerate(step.cases):
            if all_hold(case.when, scope):
                self.record(step.id, "branch", case=index + 1, goto=case.goto)
                self.goto(case.goto)
                return
        target = step.default or self.plan.next_of(step.id)
        self.record(step.id, "branch", case="default", goto=target)
        self.goto(target)

    # ------------------------------------------------------------ timers and contact events
    def on_tick(self) -> None:
        state = self.state
        if state.wake_at is None or self.now < state.wake_at:
            return  # a stale or early timer: nothing is due
        match state.phase:
            case "deferred":
                touches.try_touch(self)
            case "waiting":
                step = self.step
                if isinstance(step, LadderStep):  # a ladder waits for its next slot
                    touches.try_touch(self)
                else:
                    self.goto(self.plan.next_of(step.id))
            case "awaiting_outcome":
                touches.outcome_timer(self)
            case "awaiting_event":
                step = self.step
                assert isinstance(step, WaitForStep)
                self.record(step.id, "timeout", waited_for=step.events)
                self.goto(step.on_timeout or self.plan.next_of(step.id))
            case "awaiting_result" | "finished":
                pass  # a result or nothing is awaited: a timer means nothing here
            case _:
                assert_never(state.phase)

    def on_control(self, event: Control) -> None:
        state, here = self.state, self.state.step or ""
        if event.action == "cancel":
            self.record(here, "cancelled", actor=event.actor, reason=event.reason)
            self.end("cancelled")
        elif event.action == "pause" and not state.paused:
            state.paused = True
            self.record(here, "paused", actor=event.actor, reason=event.reason)
        elif event.action == "resume" and state.paused:
            state.paused = False
            self.record(here, "resumed", actor=event.actor, reason=event.reason)
            self.on_tick()  # whatever fell due while paused happens now
        else:
            self.record(
                here,
                "ignored",
                reason=f"already {'paused' if state.paused else 'running'}",
                control=event.action,
                actor=event.actor,
            )

    def on_contact_event(self, event: ContactEvent) -> None:
        state = self.state
        state.contact.update(event.data)
        state.last_event = {"type": event.name, "data": dict(event.data)}
        here = state.step or ""
        interrupt = self.plan.sop.interrupts.get(event.name)
        if interrupt is not None:
            self.record(here, "interrupt", event=event.name, goto=interrupt)
            self.goto(interrupt)
        elif event.name == "opted_out":
            self.record(here, "event", event=event.name, data=event.data)
            self.end("opted_out")
        elif state.phase == "awaiting_event" and event.name in state.awaiting_events:
            step = self.step
            assert isinstance(step, WaitForStep)
            self.record(here, "event", event=event.name, data=event.data)
            self.goto(step.on_event.get(event.name) or self.plan.next_of(step.id))
        else:
            self.record(here, "event", event=event.name, data=event.data, effect="none")
