"""The engine's working object for one call: a copy of the run's state and the commands so far.

It holds the primitives every step kind uses (record, wait, key, goto, end…) and nothing that
knows a step kind, so the step handlers (sopflow/sop/steps/) and the walk (engine.py) can both
import it without importing each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import Command, Finish, Phase, Record, RunState, Transition
from sopflow.sop.schema import Moment, Step


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
    """One engine call's working copy: mutates `state` and collects commands. Steps to enter
    next queue up in `jumps` (None: the run ends); the walk enters them in order."""

    def __init__(self, plan: Plan, state: RunState) -> None:
        self.plan = plan
        self.state = state
        self.commands: list[Command] = []
        self.calendar = clock.Calendar.from_policy(plan.sop.policy)
        self.jumps: list[str | None] = []

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
        self.jumps.append(target)

    def arrive(self, target: str) -> None:
        """Start a new visit of `target`: count it and clear what the previous step left."""
        state = self.state
        state.step = target
        state.visits[target] = state.visits.get(target, 0) + 1
        state.step_started[target] = self.now
        state.planned_at, state.attempt, state.followup, state.slots = self.now, 0, None, []
        state.attempts_made = 0
        state.due_at, state.overdue_recorded, state.escalation_level = None, False, 0
        state.pending, state.awaiting_events, state.wake_at = None, [], None

    def wait(self, phase: Phase, until: datetime | None) -> None:
        self.state.phase = phase
        self.state.wake_at = until

    def end(self, result: str) -> None:
        state = self.state
        state.phase, state.result, state.wake_at, state.pending = "finished", result, None, None
        state.awaiting_events = []
        self.commands.append(
            Finish(at=self.now, step=state.step or "", key=self.unique_key("end"), result=result)
        )

    def moment(self, moment: Moment) -> datetime:
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

    def transition(self) -> Transition:
        """Close the call: count it (unique_key relies on the count) and hand back the result."""
        self.state.transitions += 1
        return Transition(state=self.state, commands=self.commands)
