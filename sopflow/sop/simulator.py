"""The simulator: drives the engine on a virtual clock with scripted outcomes and events.

It is the second shell over the engine (the Temporal workflow is the first), so the timeline it
prints is what production does with the same inputs. Sends always succeed here; outcomes come
from the script (or never, which is how a silent rep looks).
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.gate import ContactFacts, Touch
from sopflow.compliance.preflight import (
    Refused,
    RunFacts,
    facts_lookback,
    gate_and_clear,
    touch_request,
)
from sopflow.compliance.rules import Rule
from sopflow.errors import InvalidContactError, SopflowError
from sopflow.sop import clock, engine, segment_routing, splits
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    ActionResult,
    AssignTask,
    CheckSegments,
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
    UpdateContact,
    awaits_result,
    is_bookkeeping,
)
from sopflow.sop.rep_view import SAMPLE_REP
from sopflow.sop.schema import TaskSpec, step_action, step_outcomes
from sopflow.sop.values import parse_duration

DEFAULT_TASK_DELAY = timedelta(minutes=5)
_HORIZON = timedelta(days=800)
_MAX_INPUTS = 20_000


@dataclass(frozen=True)
class ScriptedOutcome:
    outcome: str
    delay: timedelta | None = None  # after the task is assigned / the call placed
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. the booked appointment


@dataclass(frozen=True)
class ScriptedEvent:
    offset: timedelta  # after the start
    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Script:
    """What the world does: outcomes per step (in order of attempts) and contact events."""

    outcomes: dict[str, list[ScriptedOutcome]] = field(default_factory=dict)
    default_outcome: str | None = None
    events: list[ScriptedEvent] = field(default_factory=list)
    delay: timedelta = DEFAULT_TASK_DELAY

    def next_outcome(self, step: str) -> ScriptedOutcome | None:
        queue = self.outcomes.get(step)
        if queue:
            return queue.pop(0)
        return ScriptedOutcome(self.default_outcome) if self.default_outcome else None


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    step: str
    action: str
    detail: dict[str, Any]
    key: str = ""  # the command's idempotency key


@dataclass
class Simulation:
    plan: Plan
    contact: dict[str, Any]
    zones: list[str]
    timeline: list[TimelineEntry]
    state: RunState
    inputs: int = 0  # events fed to the engine after the start
    commands: list[Command] = field(default_factory=list)  # as the engine issued them
    touches: list[Touch] = field(default_factory=list)  # what reached the contact (for caps)
    dropped: list[str] = field(default_factory=list)  # scripted outcomes not applied, and why

    @property
    def result(self) -> str | None:
        return self.state.result

    def to_json(self) -> dict[str, Any]:
        zone = clock.zone(self.zones[0])
        return {
            "sop": self.plan.sop.id,
            "version": self.plan.sop.version,
            "digest": self.plan.digest,
            "contact": {"id": self.contact.get("id"), "zones": self.zones},
            "events": [
                {
                    "at": e.at.astimezone(zone).isoformat(),
                    "step": e.step,
                    "action": e.action,
                    "detail": e.detail,
                }
                for e in self.timeline
            ],
            "result": self.state.result,
        }


def check_script(plan: Plan, script: Script) -> None:
    """Refuse, before anything runs, outcomes production would refuse whenever they came: an
    unknown step, a step that takes no outcome, an outcome the step does not list, or one
    without the data it requires (e.g. a booking's appointment)."""
    problems = []
    for step_id, queue in script.outcomes.items():
        if not plan.has_step(step_id):
            problems.append(f"--outcome names unknown step {step_id!r} in {plan.sop.id}")
            continue
        step = plan.step(step_id)
        allowed = step_outcomes(step)
        if not allowed:
            problems.append(f"step {step_id!r} is a {step.kind} step: it takes no outcome")
            continue
        for scripted in queue:
            if scripted.outcome not in allowed:
                problems.append(
                    f"outcome {scripted.outcome!r} is not allowed for step {step_id!r} "
                    f"(allowed: {', '.join(allowed)})"
                )
                continue
            action = step_action(step)
            needed = (
                action.outcome_fields.get(scripted.outcome, [])
                if isinstance(action, TaskSpec)
                else []
            )
            missing = [n for n in needed if scripted.data.get(n) in (None, "")]
            if missing:
                problems.append(
                    f"outcome {scripted.outcome!r} of step {step_id!r} needs "
                    f"{', '.join(missing)}: add :{'=…,'.join(missing)}=… to the --outcome"
                )
    if script.default_outcome is not None and not any(
        script.default_outcome in step_outcomes(s) for s in plan.sop.steps
    ):
        problems.append(f"--default-outcome {script.default_outcome!r} is no step's outcome")
    if problems:
        raise SopflowError("\n".join(problems))


def parse_outcome_arg(text: str) -> tuple[str, ScriptedOutcome]:
    """STEP=OUTCOME[@DELAY][:key=value,...] (e.g. first_call=no_answer@45m)."""
    match = re.fullmatch(
        r"([a-z][a-z0-9_]*)=([a-z][a-z0-9_]*)(?:@([^:]+))?(?::(.*))?", text.strip()
    )
    if not match:
        raise SopflowError(
            f"invalid --outcome {text!r}: write STEP=OUTCOME, STEP=OUTCOME@DELAY or STEP=OUTCOME@DELAY:k=v,..."
        )
    delay = _duration_arg(match.group(3), "--outcome") if match.group(3) else None
    return match.group(1), ScriptedOutcome(
        match.group(2), delay, _data_arg(match.group(4), "--outcome")
    )


def parse_event_arg(text: str) -> ScriptedEvent:
    """NAME@OFFSET[:key=value,key=value] (e.g. visited@2d, booked@1h:appointment_at=...)."""
    match = re.fullmatch(r"([a-z][a-z0-9_.]*)@([^:]+)(?::(.*))?", text.strip())
    if not match:
        raise SopflowError(
            f"invalid --event {text!r}: write NAME@OFFSET or NAME@OFFSET:key=value,..."
        )
    return ScriptedEvent(
        _duration_arg(match.group(2), "--event"),
        match.group(1),
        _data_arg(match.group(3), "--event"),
    )


def _data_arg(text: str | None, flag: str) -> dict[str, str]:
    if not text:
        return {}
    return dict(key_value(pair, flag) for pair in text.split(","))


def key_value(text: str, flag: str) -> tuple[str, str]:
    """Split KEY=VALUE, or raise an error naming the flag."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SopflowError(f"invalid {flag} value {text!r}: write KEY=VALUE")
    return key.strip(), value.strip()


def _duration_arg(text: str, flag: str) -> timedelta:
    try:
        return parse_duration(text.lstrip("+"))
    except ValueError as exc:
        raise SopflowError(f"invalid {flag}: {exc}") from None


def sample_contact(plan: Plan, given: Mapping[str, Any]) -> dict[str, Any]:
    """The contact to simulate: what was given, else the SOP's examples, else placeholders."""
    contact: dict[str, Any] = {
        "id": "sim-contact",
        "first_name": "Alex",
        "last_name": "Morgan",
        "phone": "+12125550123",
        "email": "alex@example.com",
        "tags": [],
    }
    contact |= {
        name: f.example for name, f in plan.sop.contact_fields.items() if f.example is not None
    }
    contact |= dict(given)
    missing = [
        n for n, f in plan.sop.contact_fields.items() if f.required and contact.get(n) in (None, "")
    ]
    if missing:
        raise InvalidContactError(
            f"missing required field(s) {', '.join(missing)}: pass --contact NAME=VALUE"
        )
    return contact


PREVIEW_LINKS = UnsubscribeLinks("http://127.0.0.1:8000", b"preview")


def simulate(
    plan: Plan,
    contact: Mapping[str, Any],
    start: datetime,
    script: Script | None = None,
    zones: list[str] | None = None,
    variants: Mapping[str, str] | None = None,
    rules: Sequence[Rule] = (),
    facts: ContactFacts | None = None,
    links: UnsubscribeLinks | None = PREVIEW_LINKS,
    segments: Collection[str] = (),
) -> Simulation:
    """Run the plan for one contact from `start` until it finishes (or two years pass).
    `variants`: split step -> arm, as production assigns at enrolment; else the hash decides.
    `segments`: the segments the contact is in, as the store would answer a branch that routes
    by segment; every other segment the SOP names answers no (a contact with no history).
    `links`: email's unsubscribe links as production signs them (`Settings.unsubscribe_links`);
    the default signs with a preview key, so only the link's signature differs."""
    assigned = splits.check_assignment(plan, variants or {})
    members = check_segments(plan, segments)
    script = script or Script()
    check_script(plan, script)
    script = Script(
        {k: list(v) for k, v in script.outcomes.items()},
        script.default_outcome,
        list(script.events),
        script.delay,
    )  # a copy: outcomes are consumed
    if zones is None:
        zones, _ = clock.contact_zones(contact, plan.sop.policy.timezone)
    trigger = plan.sop.entry.events[0]
    transition = engine.start(plan, contact, zones, start, trigger=trigger, variants=assigned)
    sim = Simulation(plan, dict(contact), zones, [], transition.state)
    inbox: list[tuple[datetime, int, int, Event]] = []  # (at, priority, seq, event)
    seq = 0

    def push(event: Event, priority: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(inbox, (event.at, priority, seq, event))

    for scripted in script.events:
        push(
            ContactEvent(at=start + scripted.offset, name=scripted.name, data=dict(scripted.data)),
            1,
        )
    todo: deque[Command] = deque(transition.commands)
    run = RunFacts(plan.sop.id, zones, plan.sop.policy, plan.sop.purpose, plan.sop.priority)
    facts = facts or ContactFacts()  # consent, opt-outs, lists as production's store would say
    for _ in range(_MAX_INPUTS):
        # As the workflow does: each command is carried out and its result handed to the engine
        # before the next command, so both shells make the same engine calls in the same order.
        while todo:
            command = todo.popleft()
            sim.commands.append(command)
            answer = (
                _answer_segments(command, members)
                if isinstance(command, CheckSegments)
                else _carry_out(command, run, rules, facts, sim, links)
            )
            if answer is None:
                continue
            transition = engine.handle(plan, sim.state, answer)
            sim.state = transition.state
            todo.extend(transition.commands)
            if answer.status == "done" and isinstance(command, PlaceCall | AssignTask):
                planned = script.next_outcome(command.step)  # only these wait for an outcome
                if planned is not None:
                    delay = planned.delay if planned.delay is not None else script.delay
                    push(
                        OutcomeReported(
                            at=command.at + delay,
                            step=command.step,
                            outcome=planned.outcome,
                            actor=SAMPLE_REP["id"]
                            if isinstance(command, AssignTask)
                            else "carrier",
                            data=dict(planned.data),
                        ),
                        1,
                    )
        state = sim.state
        if state.finished:
            break
        if state.wake_at is not None and (not inbox or state.wake_at < inbox[0][0]):
            event: Event = Tick(at=state.wake_at)
        elif inbox:
            event = heapq.heappop(inbox)[3]
        else:
            break  # waiting for something the script never provides
        if event.at - start > _HORIZON:
            break
        problem = (
            engine.outcome_problem(plan, state, event.step, event.outcome, event.data)
            if isinstance(event, OutcomeReported)
            else None
        )
        if isinstance(event, OutcomeReported) and problem:
            # Production rejects such a report (the API answers 409/422 with this reason).
            detail = {"outcome": event.outcome, "reason": problem}
            sim.timeline.append(TimelineEntry(event.at, event.step, "outcome_dropped", detail))
            sim.dropped.append(
                f"{event.step}={event.outcome} at {event.at:%Y-%m-%d %H:%M}: {problem}"
            )
            continue
        transition = engine.handle(plan, state, event)
        sim.state = transition.state
        todo.extend(transition.commands)
        sim.inputs += 1
    for step, queue in script.outcomes.items():
        sim.dropped += [f"{step}={o.outcome}: never used, the run did not reach it" for o in queue]
    return sim


def check_segments(plan: Plan, segments: Collection[str]) -> frozenset[str]:
    """The memberships to answer with; a segment the SOP never names is refused (a typo
    would otherwise preview the path of a non-member without a word)."""
    named = segment_routing.plan_segments(plan)
    unknown = [s for s in segments if s not in named]
    if unknown:
        listed = f"it routes by {', '.join(named)}" if named else "it routes by no segment"
        raise SopflowError(f"--segment {unknown[0]!r} is no segment {plan.sop.id} names ({listed})")
    return frozenset(segments)


def _answer_segments(command: CheckSegments, members: frozenset[str]) -> ActionResult:
    """What the store would say (the `sopflow.check_segments` activity), from the script."""
    answers = {s: s in members for s in command.segments}
    detail = segment_routing.answer_detail(answers)
    return ActionResult(at=command.at, key=command.key, status="done", detail=detail)


def _carry_out(
    command: Command,
    run: RunFacts,
    rules: Sequence[Rule],
    facts: ContactFacts,
    sim: Simulation,
    links: UnsubscribeLinks | None,
) -> ActionResult | None:
    """What production's activity does with a command (sopflow.compliance.preflight), with the
    simulation's own touches as the contact's history; sends always go through."""
    if is_bookkeeping(command):
        sim.timeline.append(_entry(command, {}))
        return None
    request = touch_request(command, run, command.at)
    if request is not None:
        since = command.at - facts_lookback(request, rules)
        history = [t for t in sim.touches if t.at > since]
        facts = replace(facts, touches=[*facts.touches, *history])
    ready = gate_and_clear(command, request, facts, rules, SAMPLE_REP, "sim-run", links)
    if isinstance(ready, Refused):
        return _refused(command, ready)
    sim.timeline.append(_entry(ready.command, ready.rendered))
    if request is not None:
        sim.touches.append(Touch(command.at, request.channel, run.sop))
    if not awaits_result(command):
        return None
    return ActionResult(at=command.at, key=command.key, status="done", due_at=ready.due_at)


def _refused(command: Command, refused: Refused) -> ActionResult:
    return ActionResult(
        at=command.at,
        key=command.key,
        status=refused.status,
        reason=refused.reason,
        retry_at=refused.retry_at,
        detail=refused.detail,
    )


def _entry(command: Command, rendered: Mapping[str, Any]) -> TimelineEntry:
    detail: dict[str, Any]
    action: str
    match command:
        case Record():
            action, detail = command.action, dict(command.detail)
        case SendMessage():
            action, detail = command.channel, dict(rendered)
        case PlaceCall():
            action, detail = "call", dict(rendered)
        case AssignTask():
            action = "assign"
            detail = {
                "title": command.title,
                "assign": command.assign.model_dump(exclude_none=True),
                "due_at": command.due_at.isoformat(),
                "attempt": command.attempt,
            }
        case Escalate():
            action = command.action
            detail = {"level": command.level, "due_at": command.due_at.isoformat()}
            if command.to:
                detail["to"] = command.to.model_dump(exclude_none=True)
        case EnrollContact():
            action = "enroll"
            detail = {"sop": command.sop, **rendered}
        case UpdateContact():
            action, detail = "update", dict(rendered)
        case CheckSegments():  # answered apart (_answer_segments); the branch records the answers
            action, detail = "segments", {"segments": list(command.segments)}
        case Finish():
            action, detail = "end", {"result": command.result}
        case _:
            assert_never(command)
    if (
        isinstance(command, SendMessage | PlaceCall | AssignTask)
        and command.planned_at != command.at
    ):
        detail["planned_at"] = command.planned_at.isoformat()
    return TimelineEntry(command.at, command.step, action, detail, command.key)
