"""branch steps: the first case whose conditions hold, else the default (else the next step)."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.sop import clock
from sopflow.sop.conditions import all_hold
from sopflow.sop.run import Run
from sopflow.sop.schema import BranchStep
from sopflow.sop.steps.base import Handler, Loc, Route


class Branch(Handler[BranchStep]):
    def enter(self, run: Run) -> None:
        step, state = self.step, run.state
        context = run.context()
        scope = context | {
            "event": {**context["event"], "type": state.last_event.get("type")},
            "outcome": state.last_outcome,
            "variant": context["run"]["variant"],
            "visits": state.visits,
            "today": clock.to_local(run.now, state.zones[0]).date(),
        }
        for index, case in enumerate(step.cases):
            if all_hold(case.when, scope):
                run.record(step.id, "branch", case=index + 1, goto=case.goto)
                run.goto(case.goto)
                return
        target = step.default or run.plan.next_of(step.id)
        run.record(step.id, "branch", case="default", goto=target)
        run.goto(target)

    def routes(self) -> Iterator[Route]:
        step = self.step
        for i, case in enumerate(step.cases):
            when = tuple((("cases", i, "when", k), c) for k, c in enumerate(case.when))
            yield Route(("cases", i, "goto"), case.goto, when=when)
        if step.default:
            yield Route(("default",), step.default)
        else:
            yield self.next_route()

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return iter(())
