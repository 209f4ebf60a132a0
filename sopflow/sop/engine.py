"""The pure SOP engine: (plan, state, event) -> (new state, commands).

It is the only implementation of SOP semantics. The Temporal workflow and the simulator
both drive it, so what the preview shows is what production does. No I/O, no clock (time
arrives on every event), no randomness (A/B splits hash the contact id).

Shell contract:
- carry out the commands in order; SendMessage / PlaceCall / AssignTask each need an
  ActionResult with the command's key before the run moves on;
- when ``state.wake_at`` is set, send ``Tick(at >= wake_at)`` unless another event comes first;
- feed outcomes (rep or carrier) and contact events as they arrive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sopflow.errors import InvalidEventError
from sopflow.sop import clock
from sopflow.sop.conditions import all_hold
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    ActionResult,
    AssignTask,
    Command,
    ContactEvent,
    EnrollContact,
    Escalate,
    Event,
    Finish,
    OutcomeReported,
    PlaceCall,
    Record,
    RunState,
    SendMessage,
    Tick,
    Transition,
    UpdateContact,
    utc,
)
from sopflow.sop.schema import (
    BranchStep,
    CallSpec,
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
) -> Transition:
    """Enrol a contact: the run enters the first step at `at`. The trigger event is `event`."""
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
    )
    run = _Run(plan, state)
    run.record(plan.sop.steps[0].id, "enrolled", zones=state.zones, version=plan.sop.version)
    run.goto(plan.sop.steps[0].id)
    return run.finish_transition()


def handle(plan: Plan, state: RunState, event: Event) -> Transition:
    """Apply one event. Events that do not concern the run are recorded and change nothing."""
    if state.digest != plan.digest:
        raise InvalidEventError(f"run is pinned to plan {state.digest}, not {plan.digest}")
    run = _Run(plan, state.model_copy(deep=True))
    run.state.now = max(run.state.now, utc(event.at))
    if run.state.finished:
        run.record(state.step or "", "ignored", reason="run already finished", event=event.type)
    elif isinstance(event, Tick):
        run.on_tick()
    elif isinstance(event, ActionResult):
        run.on_result(event)
    elif isinstance(event, OutcomeReported):
        problem = outcome_problem(plan, state, event.step, event.outcome, event.data)
        if problem:
            raise InvalidEventError(problem)
        run.on_outcome(event.outcome, actor=event.actor, note=event.note, data=event.data)
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


def split_variant(plan: Plan, step: SplitStep, contact_id: str) -> str:
    """Deterministic per contact: the same contact always lands in the same variant."""
    seed = f"{plan.sop.id}:{step.id}:{contact_id}".encode()
    bucket = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") % sum(
        v.weight for v in step.variants
    )
    for variant in step.variants:
        if bucket < variant.weight:
            return variant.name
        bucket -= variant.weight
    raise AssertionError("unreachable: buckets cover the total weight")


class _Run:
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
        """Template variables the engine knows; the shell adds `rep` and `run.id`."""
        state = self.state
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
            "sop": {
                "id": self.plan.sop.id,
                "name": self.plan.sop.name,
                "version": self.plan.sop.version,
            },
        }

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
        state.due_at, state.overdue_recorded, state.escalation_level = None, False, 0
        state.pending, state.awaiting_events, state.wake_at = None, [], None
        step = self.step
        if isinstance(step, MessageStep | CallStep | TaskStep):
            self.try_touch()
        elif isinstance(step, LadderStep):
            self._start_ladder(step)
        elif isinstance(step, WaitStep):
            self._start_wait(step)
        elif isinstance(step, WaitForStep):
            deadline = (
                self.now + step.timeout if step.timeout is not None else self.moment(step.until)
            )
            state.awaiting_events = list(step.events)
            self.wait("awaiting_event", deadline)
        elif isinstance(step, BranchStep):
            self._branch(step)
        elif isinstance(step, SplitStep):
            variant = split_variant(self.plan, step, str(state.contact.get("id", "")))
            state.variants[step.id] = variant
            self.record(step.id, "variant", variant=variant)
            self.goto(next(v.goto for v in step.variants if v.name == variant))
        elif isinstance(step, EnrollStep):
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
        elif isinstance(step, UpdateStep):
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
        elif isinstance(step, EndStep):
            self.end(step.result)

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

    # ------------------------------------------------------------ touches (send, call, task)
    def _touch_channel(self) -> str | None:
        step = self.step
        if self.state.followup is not None:
            assert isinstance(step, LadderStep)
            return step.followups[self.state.followup].kind
        if isinstance(step, MessageStep):
            return step.kind
        action = step_action(step)
        if isinstance(action, CallSpec):
            return "call"
        return action.channel if action else None

    def try_touch(self) -> None:
        """Run the current touch now if its window allows, else defer or skip it per policy."""
        state, policy = self.state, self.plan.sop.policy
        channel = self._touch_channel()
        window = policy.windows.get(channel) if channel else None  # type: ignore[call-overload]
        allowed = clock.next_allowed(self.now, state.zones, window, self.calendar)
        if allowed == self.now:
            self._issue_touch()
            return
        assert window is not None and channel is not None
        reason = clock.why_blocked(self.now, state.zones, channel, window, self.calendar)
        if allowed is not None and policy.outside_window == "defer":
            self.record(
                state.step or "",
                "deferred",
                reason=reason,
                until=allowed.isoformat(),
                planned_at=_iso(state.planned_at),
            )
            self.wait("deferred", allowed)
            return
        self.record(state.step or "", "skipped", reason=reason, planned_at=_iso(state.planned_at))
        self.touch_did_not_happen("skipped")

    def _issue_touch(self) -> None:
        state, step = self.state, self.step
        planned = state.planned_at or self.now
        command: Command
        if state.followup is not None:
            assert isinstance(step, LadderStep)
            follow = step.followups[state.followup]
            command = SendMessage(
                at=self.now,
                step=step.id,
                key=self.key(f":f{state.followup}"),
                channel=follow.kind,
                body=follow.body,
                planned_at=planned,
                context=self.context(),
            )
        elif isinstance(step, MessageStep):
            command = SendMessage(
                at=self.now,
                step=step.id,
                key=self.key(),
                channel=step.kind,
                body=step.body,
                planned_at=planned,
                context=self.context(),
            )
        else:
            action = step_action(step)
            if isinstance(action, CallSpec):
                command = PlaceCall(
                    at=self.now,
                    step=step.id,
                    key=self.key(),
                    script=action.script,
                    machine_detection=action.machine_detection,
                    planned_at=planned,
                    context=self.context(),
                )
            else:
                assert isinstance(action, TaskSpec)
                state.due_at = self.now + action.due_within
                command = AssignTask(
                    at=self.now,
                    step=step.id,
                    key=self.key(),
                    title=action.title,
                    instructions=action.instructions,
                    assign=action.assign,
                    due_at=state.due_at,
                    planned_at=planned,
                    attempt=max(state.attempt, 1),
                    context=self.context(),
                )
        state.pending = command.key
        self.commands.append(command)
        self.wait("awaiting_result", None)

    def touch_did_not_happen(self, outcome: str) -> None:
        """A touch was skipped or failed: route it like the step's outcome of that name."""
        step, state = self.step, self.state
        if state.followup is not None:
            self._after_followup()
        elif isinstance(step, MessageStep):
            self.goto(step.on_failed or self.plan.next_of(step.id))
        else:
            self.on_outcome(outcome, actor="sopflow")

    def on_result(self, event: ActionResult) -> None:
        state, step = self.state, self.step
        if state.pending != event.key:
            self.record(
                state.step or "",
                "ignored",
                reason="result for a command not awaited",
                key=event.key,
            )
            return
        state.pending = None
        if event.status == "blocked":
            if event.retry_at is not None and self.plan.sop.policy.outside_window == "defer":
                self.record(
                    step.id,
                    "deferred",
                    reason=event.reason,
                    until=event.retry_at.isoformat(),
                    planned_at=_iso(state.planned_at),
                    by="compliance",
                )
                self.wait("deferred", max(event.retry_at, self.now))
                return
            self.record(step.id, "blocked", reason=event.reason)
            self.touch_did_not_happen("skipped")
            return
        if event.status == "failed":
            self.record(step.id, "failed", reason=event.reason, **event.detail)
            self.touch_did_not_happen("failed")
            return
        if state.followup is not None:
            self._after_followup()
        elif isinstance(step, MessageStep):
            self.goto(self.plan.next_of(step.id))
        else:
            action = step_action(step)
            if isinstance(action, CallSpec):  # the carrier reports the result by then
                state.due_at = self.now + action.result_timeout
            self._await_outcome()

    # ------------------------------------------------------------ outcomes and escalation
    def _await_outcome(self) -> None:
        self.state.phase = "awaiting_outcome"
        self.state.wake_at = self._next_outcome_deadline()

    def _next_outcome_deadline(self) -> datetime | None:
        state, action = self.state, step_action(self.step)
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
        future = [c for c in candidates if c >= self.now]
        return min(future) if future else (min(candidates) if candidates else None)

    def _outcome_timer(self) -> None:
        state, action = self.state, step_action(self.step)
        if isinstance(action, CallSpec):
            self.record(self.step.id, "timeout", reason="no call result in time")
            self.on_outcome("expired", actor="sopflow")
            return
        assert isinstance(action, TaskSpec) and state.due_at is not None
        if not state.overdue_recorded and self.now >= state.due_at:
            state.overdue_recorded = True
            self.record(self.step.id, "overdue", due_at=state.due_at.isoformat())
        while (
            state.escalation_level < len(action.escalation)
            and self.now >= state.due_at + action.escalation[state.escalation_level].after
        ):
            rung = action.escalation[state.escalation_level]
            state.escalation_level += 1
            self.commands.append(
                Escalate(
                    at=self.now,
                    step=self.step.id,
                    key=self.key(f":e{state.escalation_level}"),
                    action=rung.action,
                    level=state.escalation_level,
                    to=rung.to,
                    due_at=state.due_at,
                )
            )
        if action.expires_after is not None and self.now >= state.due_at + action.expires_after:
            self.record(self.step.id, "expired", due_at=state.due_at.isoformat())
            self.on_outcome("expired", actor="sopflow")
            return
        self._await_outcome()

    def on_outcome(
        self, outcome: str, *, actor: str, note: str = "", data: Mapping[str, Any] | None = None
    ) -> None:
        state, step = self.state, self.step
        state.last_outcome = outcome
        if data:
            state.contact.update(data)
            state.last_event = {"type": "outcome", "data": dict(data)}
        on_time = None if state.due_at is None else self.now <= state.due_at
        self.record(
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
            if outcome in step.stop_on:
                self.goto(step.on_outcome.get(outcome) or self.plan.next_of(step.id))
                return
            index = next(
                (i for i, f in enumerate(step.followups) if f.after_attempt == state.attempt), None
            )
            if index is not None:
                state.followup, state.planned_at = index, self.now
                self.try_touch()
                return
            self._next_slot(step)
            return
        assert isinstance(step, TaskStep | CallStep)
        self.goto(step.on_outcome.get(outcome) or self.plan.next_of(step.id))

    # ------------------------------------------------------------ ladders
    def _start_ladder(self, step: LadderStep) -> None:
        anchor = self.state.enrolled_at if step.anchor == "enrolment" else self.now
        zone_name = self.state.zones[0]
        day0 = clock.to_local(anchor, zone_name).date()
        self.state.slots = [
            clock.local_instant(day0 + timedelta(days=slot.day - 1), slot.at, zone_name)
            for slot in step.slots
        ]
        self._next_slot(step)

    def _after_followup(self) -> None:
        self.state.followup = None
        step = self.step
        assert isinstance(step, LadderStep)
        self._next_slot(step)

    def _next_slot(self, step: LadderStep) -> None:
        state = self.state
        while state.attempt < len(state.slots):
            state.attempt += 1
            slot = state.slots[state.attempt - 1]
            state.planned_at, state.due_at, state.overdue_recorded, state.escalation_level = (
                slot,
                None,
                False,
                0,
            )
            if slot > self.now:
                self.wait("waiting", slot)
                return
            if step.missed_slot == "run_now":
                self.try_touch()
                return
            self.record(step.id, "slot_missed", attempt=state.attempt, slot=slot.isoformat())
        self.record(step.id, "ladder_exhausted", attempts=len(state.slots))
        self.goto(step.on_exhausted or self.plan.next_of(step.id))

    # ------------------------------------------------------------ timers and contact events
    def on_tick(self) -> None:
        state = self.state
        if state.wake_at is None or self.now < state.wake_at:
            return  # a stale or early timer: nothing is due
        if state.phase == "deferred":
            self.try_touch()
        elif state.phase == "waiting":
            step = self.step
            if isinstance(step, LadderStep):
                self.try_touch()
            else:
                self.goto(self.plan.next_of(step.id))
        elif state.phase == "awaiting_outcome":
            self._outcome_timer()
        elif state.phase == "awaiting_event":
            step = self.step
            assert isinstance(step, WaitForStep)
            self.record(step.id, "timeout", waited_for=step.events)
            self.goto(step.on_timeout or self.plan.next_of(step.id))

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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
