"""branch steps: the first case whose conditions hold, else the default (else the next step).

A case naming a segment needs the store's answer: the branch asks the shell (CheckSegments) for
every segment named from that case on, waits for the result, then routes on the same scope and
records the answers with the route (segment_routing.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sopflow.sop import clock, segment_routing
from sopflow.sop.conditions import all_hold
from sopflow.sop.protocol import ActionResult, CheckSegments
from sopflow.sop.run import Run
from sopflow.sop.schema import BranchStep
from sopflow.sop.steps.base import Handler, Loc, Route


class Branch(Handler[BranchStep]):
    def enter(self, run: Run) -> None:
        scope = self._scope(run)
        for index, case in enumerate(self.step.cases):
            if segment_routing.condition_segments(case.when):  # the store must answer first
                self._ask(run)
                return
            if all_hold(case.when, scope):
                self._take(run, index, {})
                return
        self._take(run, None, {})

    def on_result(self, run: Run, event: ActionResult) -> None:
        """The segment check's answers: route on them (an unanswered segment holds neither way)."""
        run.state.pending = None
        answers, failure = segment_routing.read_answers(event, self._asked())
        scope = self._scope(run) | {"segments": answers}
        audit: dict[str, Any] = {"segments": answers, "segments_as_of": self._asked_at(run)}
        if failure is not None:
            audit["segments_error"] = failure
        for index, case in enumerate(self.step.cases):
            if all_hold(case.when, scope):
                self._take(run, index, audit)
                return
        self._take(run, None, audit)

    def _asked(self) -> list[str]:
        """The segments named from the first case that names one on: the cases before it are
        decided without the store, so only these can still need an answer."""
        cases = self.step.cases
        first = next(i for i, c in enumerate(cases) if segment_routing.condition_segments(c.when))
        return segment_routing.condition_segments(c for case in cases[first:] for c in case.when)

    def _ask(self, run: Run) -> None:
        state = run.state
        check = CheckSegments(
            at=run.now,
            step=self.step.id,
            key=run.key(),
            contact_id=str(state.contact.get("id", "")),
            segments=self._asked(),
        )
        state.pending = check.key
        run.commands.append(check)
        run.wait("awaiting_result", None)

    def _take(self, run: Run, index: int | None, audit: Mapping[str, Any]) -> None:
        step = self.step
        if index is None:
            target = step.default or run.plan.next_of(step.id)
            run.record(step.id, "branch", case="default", goto=target, **audit)
        else:
            target = step.cases[index].goto
            run.record(step.id, "branch", case=index + 1, goto=target, **audit)
        run.goto(target)

    def _asked_at(self, run: Run) -> str:
        """When the branch was entered: the instant membership was asked about."""
        return run.state.step_started.get(self.step.id, run.now).isoformat()

    def _scope(self, run: Run) -> dict[str, Any]:
        state = run.state
        context = run.context()
        # The day the branch was entered, also when the answer comes back (an activity may end
        # after midnight): the same cases hold in both passes, in both shells.
        entered = state.step_started.get(self.step.id, run.now)
        return context | {
            "event": {**context["event"], "type": state.last_event.get("type")},
            "outcome": state.last_outcome,
            "variant": context["run"]["variant"],
            "visits": state.visits,
            "today": clock.to_local(entered, state.zones[0]).date(),
        }

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
