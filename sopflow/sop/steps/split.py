"""split steps: the A/B arm assigned at enrolment, else one hashed from the contact id."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sopflow.sop import splits
from sopflow.sop.run import Run
from sopflow.sop.schema import SplitStep
from sopflow.sop.steps.base import Handler, Loc, Route


class Split(Handler[SplitStep]):
    def enter(self, run: Run) -> None:
        step, state = self.step, run.state
        contact_id = str(state.contact.get("id", ""))
        variant, how = splits.choose(run.plan, step, contact_id, state.assigned_variants)
        state.variants[step.id] = variant
        run.record(step.id, "variant", variant=variant, **how)
        run.goto(next(v.goto for v in step.variants if v.name == variant))

    def routes(self) -> Iterator[Route]:  # every arm goes somewhere: a split never falls through
        for i, variant in enumerate(self.step.variants):
            yield Route(("variants", i, "goto"), variant.goto)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return iter(())

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        names = [v.name for v in self.step.variants]
        for j, name in enumerate(names):
            if name in names[:j]:
                yield ("variants", j, "name"), f"duplicate variant {name!r}"
