"""task steps: a rep task with an SLA, escalations and an expiry, then the outcome the rep
reports; TaskAction is a ladder's task attempt too."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from sopflow.sop import clock
from sopflow.sop.protocol import ActionResult, AssignTask, Escalate
from sopflow.sop.run import Run
from sopflow.sop.schema import Channel, TaskSpec, TaskStep
from sopflow.sop.steps.base import Loc
from sopflow.sop.steps.touch import Action, ActionStep


def task_due(run: Run, action: TaskSpec) -> datetime:
    """The SLA counted in the task's window only (clock.add_window_time): a task issued near
    closing time is due after the window reopens, never outside it. The gate may move it later
    still for the law's windows; the engine then takes the gate's due time (issued)."""
    policy = run.plan.sop.policy
    window = policy.windows.get(action.channel) if action.channel else None
    windows = [(window, run.calendar)] if window is not None else []
    due = clock.add_window_time(run.now, action.due_within, run.state.zones, windows)
    return due if due is not None else run.now + action.due_within


class TaskAction(Action[TaskSpec]):
    @property
    def channel(self) -> Channel | None:
        return self.spec.channel

    @property
    def outcome_fields(self) -> Mapping[str, list[str]]:
        return self.spec.outcome_fields

    def command(self, run: Run, planned: datetime) -> AssignTask:
        state, spec = run.state, self.spec
        state.due_at = task_due(run, spec)
        return AssignTask(
            at=run.now,
            step=run.step.id,
            key=run.key(),
            title=spec.title,
            instructions=spec.instructions,
            assign=spec.assign,
            due_at=state.due_at,
            planned_at=planned,
            attempt=max(state.attempt, 1),
            context=run.context(),
            channel=spec.channel,
            due_within=spec.due_within,
        )

    def templates(self, at: Loc) -> Iterator[tuple[Loc, str]]:
        yield (*at, "instructions"), self.spec.instructions

    def issued(self, run: Run, event: ActionResult) -> None:
        if event.due_at is not None:  # the gate counted the SLA in the law's windows too
            run.state.due_at = event.due_at

    def deadline(self, run: Run) -> datetime | None:
        """The next of: overdue, the next escalation, the expiry (the earliest still ahead)."""
        state, spec = run.state, self.spec
        assert state.due_at is not None
        candidates = []
        if not state.overdue_recorded:
            candidates.append(state.due_at)
        if state.escalation_level < len(spec.escalation):
            candidates.append(state.due_at + spec.escalation[state.escalation_level].after)
        if spec.expires_after is not None:
            candidates.append(state.due_at + spec.expires_after)
        future = [c for c in candidates if c >= run.now]
        return min(future) if future else (min(candidates) if candidates else None)

    def expired(self, run: Run) -> bool:
        state, spec, step_id = run.state, self.spec, run.step.id
        assert state.due_at is not None
        if not state.overdue_recorded and run.now >= state.due_at:
            state.overdue_recorded = True
            run.record(step_id, "overdue", due_at=state.due_at.isoformat())
        while (
            state.escalation_level < len(spec.escalation)
            and run.now >= state.due_at + spec.escalation[state.escalation_level].after
        ):
            rung = spec.escalation[state.escalation_level]
            state.escalation_level += 1
            run.commands.append(
                Escalate(
                    at=run.now,
                    step=step_id,
                    key=run.key(f":e{state.escalation_level}"),
                    action=rung.action,
                    level=state.escalation_level,
                    to=rung.to,
                    due_at=state.due_at,
                )
            )
        if spec.expires_after is not None and run.now >= state.due_at + spec.expires_after:
            run.record(step_id, "expired", due_at=state.due_at.isoformat())
            return True
        return False


class Task(ActionStep[TaskStep]):
    def action(self) -> TaskAction:
        return TaskAction(self.step)
