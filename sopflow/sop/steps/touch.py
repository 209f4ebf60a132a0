"""What every step that touches the contact shares (message, call, task, ladder): the window
check that runs, defers or skips the touch, the send's result, and for calls and tasks the
outcome they then wait for. The kinds fill in what their touch is and where it routes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from sopflow.sop import clock
from sopflow.sop.protocol import ENGINE, ActionResult, Command, OutcomeReported
from sopflow.sop.run import Run
from sopflow.sop.schema import CallSpec, CallStep, Channel, TaskSpec, TaskStep
from sopflow.sop.steps.base import Handler, Loc, Route, S, Waits


class Touching(Handler[S]):
    """A step whose touch goes out when the contact's window allows."""

    @abstractmethod
    def channel(self, run: Run) -> Channel | None:
        """The channel of the touch due now (its window applies)."""

    @abstractmethod
    def issue(self, run: Run, planned: datetime) -> Command:
        """The command for the touch due now."""

    @abstractmethod
    def touched(self, run: Run, event: ActionResult) -> None:
        """The touch went out."""

    @abstractmethod
    def not_touched(self, run: Run, outcome: str) -> None:
        """The touch was skipped or failed: route it like the step's outcome of that name."""

    def enter(self, run: Run) -> None:
        self.try_touch(run)

    def on_timer(self, run: Run) -> None:
        self.try_touch(run)  # the deferral is over

    def try_touch(self, run: Run) -> None:
        """Run the current touch now if its window allows, else defer or skip it per policy."""
        state, policy = run.state, run.plan.sop.policy
        if state.paused:  # a paused run contacts no one; resuming picks the touch up at once
            run.record(
                state.step or "",
                "deferred",
                reason="the run is paused",
                planned_at=iso(state.planned_at),
            )
            run.wait("deferred", run.now)
            return
        channel = self.channel(run)
        window = policy.windows.get(channel) if channel else None
        allowed = clock.next_allowed(run.now, state.zones, window, run.calendar)
        if allowed == run.now:
            command = self.issue(run, state.planned_at or run.now)
            state.pending = command.key
            run.commands.append(command)
            run.wait("awaiting_result", None)
            return
        assert window is not None and channel is not None
        reason = clock.why_blocked(run.now, state.zones, channel, window, run.calendar)
        if allowed is not None and policy.outside_window == "defer":
            run.record(
                state.step or "",
                "deferred",
                reason=reason,
                until=allowed.isoformat(),
                planned_at=iso(state.planned_at),
            )
            run.wait("deferred", allowed)
            return
        run.record(state.step or "", "skipped", reason=reason, planned_at=iso(state.planned_at))
        self.not_touched(run, "skipped")

    def on_result(self, run: Run, event: ActionResult) -> None:
        state, step_id = run.state, self.step.id
        state.pending = None
        if event.status == "blocked":
            if event.retry_at is not None and run.plan.sop.policy.outside_window == "defer":
                run.record(
                    step_id,
                    "deferred",
                    reason=event.reason,
                    until=event.retry_at.isoformat(),
                    planned_at=iso(state.planned_at),
                    by="compliance",
                    rule=event.detail.get("rule", ""),
                )
                run.wait("deferred", max(event.retry_at, run.now))
                return
            run.record(step_id, "blocked", reason=event.reason, **event.detail)
            if event.detail.get("rule") == "opt_out":  # the gate saw an opt-out: no more touches
                run.end("opted_out")
                return
            self.not_touched(run, "skipped")
            return
        if event.status == "failed":
            run.record(step_id, "failed", reason=event.reason, **event.detail)
            self.not_touched(run, "failed")
            return
        self.touched(run, event)


A = TypeVar("A", bound=CallSpec | TaskSpec)


class Action(ABC, Generic[A]):
    """A call or a rep task, in a step of its own or as a ladder's attempt: what goes out, and
    the outcome it then waits for."""

    def __init__(self, spec: A) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def channel(self) -> Channel | None: ...

    @property
    def outcome_fields(self) -> Mapping[str, list[str]]:
        return {}

    @abstractmethod
    def command(self, run: Run, planned: datetime) -> Command: ...

    @abstractmethod
    def templates(self, at: Loc) -> Iterator[tuple[Loc, str]]: ...

    @abstractmethod
    def issued(self, run: Run, event: ActionResult) -> None:
        """It went out: set the due time its outcome is awaited by."""

    @abstractmethod
    def deadline(self, run: Run) -> datetime | None:
        """When the run next wakes while awaiting the outcome."""

    @abstractmethod
    def expired(self, run: Run) -> bool:
        """The deadline fell due: record what it means; True when the outcome is now 'expired'."""


class Awaiting(Touching[S]):
    """A step whose touch is a call or a task: after it went out, the run awaits its outcome."""

    action_at: Loc = ()  # where the action is in the step (a ladder's attempt)

    @abstractmethod
    def action(self) -> Action[Any]: ...

    @abstractmethod
    def route(self, run: Run, outcome: str) -> None:
        """Where the (recorded) outcome leads."""

    def channel(self, run: Run) -> Channel | None:
        return self.action().channel

    def issue(self, run: Run, planned: datetime) -> Command:
        return self.action().command(run, planned)

    def touched(self, run: Run, event: ActionResult) -> None:
        self.action().issued(run, event)
        self.await_outcome(run)

    def not_touched(self, run: Run, outcome: str) -> None:
        self.own_outcome(run, outcome)

    def own_outcome(self, run: Run, outcome: str) -> None:
        """An outcome sopflow reports itself: expired, skipped, failed."""
        report = OutcomeReported(at=run.now, step=self.step.id, outcome=outcome, actor=ENGINE)
        self.on_outcome(run, report)

    def await_outcome(self, run: Run) -> None:
        run.state.phase = "awaiting_outcome"
        run.state.wake_at = self.action().deadline(run)

    def on_timer(self, run: Run) -> None:
        if run.state.phase != "awaiting_outcome":
            super().on_timer(run)
        elif self.action().expired(run):
            self.own_outcome(run, "expired")
        else:
            self.await_outcome(run)

    def on_outcome(self, run: Run, report: OutcomeReported) -> None:
        state, outcome, data = run.state, report.outcome, report.data
        state.last_outcome = outcome
        if data:
            state.contact.update(data)
            state.last_event = {"type": "outcome", "data": dict(data)}
        on_time = None if state.due_at is None else run.now <= state.due_at
        run.record(
            self.step.id,
            "outcome",
            outcome=outcome,
            actor=report.actor,
            note=report.note,
            attempt=state.attempt,
            on_time=on_time,
            **({"data": dict(data)} if data else {}),
        )
        state.wake_at, state.pending = None, None
        self.route(run, outcome)

    def waits_for(self) -> Waits:
        action = self.action()
        return Waits(
            outcomes=tuple(action.spec.outcomes),
            outcome_fields=action.outcome_fields,
            outcomes_at=self.action_at,
            timer=True,
        )

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return self.action().templates(self.action_at)


OwnStep = TypeVar("OwnStep", bound=CallStep | TaskStep)


class ActionStep(Awaiting[OwnStep]):
    """A call or task step of its own: an outcome goes where `on_outcome` says, else on."""

    def route(self, run: Run, outcome: str) -> None:
        run.goto(self.step.on_outcome.get(outcome) or run.plan.next_of(self.step.id))

    def routes(self) -> Iterator[Route]:
        yield from outcome_routes(self.step.on_outcome)
        yield self.next_route()


def outcome_routes(on_outcome: Mapping[str, str]) -> Iterator[Route]:
    for outcome, target in on_outcome.items():
        yield Route(("on_outcome", outcome), target, outcome=outcome)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
