"""wait steps (a duration or a moment) and wait_for steps (contact events, with a deadline)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from sopflow.sop.protocol import ContactEvent
from sopflow.sop.run import Run
from sopflow.sop.schema import Moment, WaitForStep, WaitStep
from sopflow.sop.steps.base import Handler, Loc, Route, Waits


def _after(run: Run, duration: timedelta | None, until: Moment | None) -> datetime:
    """A duration from now, else the moment (the schema requires exactly one)."""
    if duration is not None:
        return run.now + duration
    assert until is not None
    return run.moment(until)


class Wait(Handler[WaitStep]):
    def enter(self, run: Run) -> None:
        step = self.step
        target = _after(run, step.duration, step.until)
        if target > run.now:
            run.wait("waiting", target)
            return
        run.record(step.id, "wait_past", target=target.isoformat(), goto=step.on_past)
        run.goto(step.on_past or run.plan.next_of(step.id))

    def on_timer(self, run: Run) -> None:
        run.goto(run.plan.next_of(self.step.id))

    def routes(self) -> Iterator[Route]:
        if self.step.on_past:
            yield Route(("on_past",), self.step.on_past)
        yield self.next_route()

    def waits_for(self) -> Waits:
        return Waits(timer=True, until=self.step.until)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return iter(())


class WaitFor(Handler[WaitForStep]):
    def enter(self, run: Run) -> None:
        step = self.step
        deadline = _after(run, step.timeout, step.until)
        run.state.awaiting_events = list(step.events)
        run.wait("awaiting_event", deadline)

    def on_timer(self, run: Run) -> None:
        step = self.step
        run.record(step.id, "timeout", waited_for=step.events)
        run.goto(step.on_timeout or run.plan.next_of(step.id))

    def on_event(self, run: Run, event: ContactEvent) -> None:
        run.goto(self.step.on_event.get(event.name) or run.plan.next_of(self.step.id))

    def routes(self) -> Iterator[Route]:
        step = self.step
        if step.on_timeout:
            yield Route(("on_timeout",), step.on_timeout)
        for event, target in step.on_event.items():
            yield Route(("on_event", event), target, event=event)
        yield self.next_route()

    def waits_for(self) -> Waits:
        return Waits(events=self.step.events, timer=True, until=self.step.until)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return iter(())
