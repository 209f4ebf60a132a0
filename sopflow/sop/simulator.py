"""The simulator: drives the engine on a virtual clock with scripted outcomes and events.

It is the second shell over the engine (the Temporal workflow is the first), so the timeline it
prints is what production does with the same inputs. Sends always succeed here; outcomes come
from the script (or never, which is how a silent rep looks).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sopflow.errors import InvalidContactError, SopflowError
from sopflow.sop import clock, engine
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
    UpdateContact,
)
from sopflow.sop.rendering import render_command
from sopflow.sop.values import parse_duration

SAMPLE_REP = {
    "id": "rep-1",
    "name": "Sam Rivera",
    "first_name": "Sam",
    "phone": "+12125550199",
    "email": "sam@example.com",
}
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


def simulate(
    plan: Plan,
    contact: Mapping[str, Any],
    start: datetime,
    script: Script | None = None,
    zones: list[str] | None = None,
) -> Simulation:
    """Run the plan for one contact from `start` until it finishes (or two years pass)."""
    script = script or Script()
    script = Script(
        {k: list(v) for k, v in script.outcomes.items()},
        script.default_outcome,
        list(script.events),
        script.delay,
    )  # a copy: outcomes are consumed
    if zones is None:
        zones, _ = clock.contact_zones(contact, plan.sop.policy.timezone)
    trigger = plan.sop.entry.events[0]
    transition = engine.start(plan, contact, zones, start, trigger=trigger)
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
    commands = transition.commands
    for _ in range(_MAX_INPUTS):
        for command in commands:
            sim.commands.append(command)
            sim.timeline.append(_entry(command))
            if isinstance(command, SendMessage | PlaceCall | AssignTask):
                push(ActionResult(at=command.at, key=command.key, status="done"), 0)
            if isinstance(command, PlaceCall | AssignTask):  # only these wait for an outcome
                planned = script.next_outcome(command.step)
                if planned is not None:
                    delay = planned.delay if planned.delay is not None else script.delay
                    push(
                        OutcomeReported(
                            at=command.at + delay,
                            step=command.step,
                            outcome=planned.outcome,
                            actor="rep-1" if isinstance(command, AssignTask) else "carrier",
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
        if isinstance(event, OutcomeReported) and engine.outcome_problem(
            plan, state, event.step, event.outcome, event.data
        ):
            sim.timeline.append(
                TimelineEntry(
                    event.at,
                    event.step,
                    "outcome_dropped",
                    {"outcome": event.outcome, "reason": "the step no longer waits"},
                )
            )
            commands = []  # nothing new happened: the last transition's commands are done
            continue
        transition = engine.handle(plan, state, event)
        sim.state, commands = transition.state, transition.commands
        sim.inputs += 1
    return sim


def _rendered(command: Command) -> dict[str, Any]:
    try:
        return render_command(command, SAMPLE_REP, "sim-run")
    except SopflowError as exc:
        return {"error": f"not rendered: {exc}"}


def _entry(command: Command) -> TimelineEntry:
    detail: dict[str, Any]
    action: str
    if isinstance(command, Record):
        action, detail = command.action, dict(command.detail)
    elif isinstance(command, SendMessage):
        action, detail = command.channel, _rendered(command)
    elif isinstance(command, PlaceCall):
        action, detail = "call", _rendered(command)
    elif isinstance(command, AssignTask):
        action = "assign"
        detail = {
            "title": command.title,
            "assign": command.assign.model_dump(exclude_none=True),
            "due_at": command.due_at.isoformat(),
            "attempt": command.attempt,
        }
    elif isinstance(command, Escalate):
        action = command.action
        detail = {"level": command.level, "due_at": command.due_at.isoformat()}
        if command.to:
            detail["to"] = command.to.model_dump(exclude_none=True)
    elif isinstance(command, EnrollContact):
        action = "enroll"
        detail = {"sop": command.sop, **_rendered(command)}
    elif isinstance(command, UpdateContact):
        action = "update"
        detail = {**_rendered(command), "add_tags": command.add_tags}
    else:
        assert isinstance(command, Finish)
        action, detail = "end", {"result": command.result}
    if (
        isinstance(command, SendMessage | PlaceCall | AssignTask)
        and command.planned_at != command.at
    ):
        detail["planned_at"] = command.planned_at.isoformat()
    return TimelineEntry(command.at, command.step, action, detail, command.key)
