"""end steps: the run finishes with the step's result."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sopflow.sop.run import Run
from sopflow.sop.schema import EndStep
from sopflow.sop.steps.base import Handler, Loc, Route


class End(Handler[EndStep]):
    def enter(self, run: Run) -> None:
        run.end(self.step.result)

    def routes(self) -> Iterator[Route]:
        return iter(())

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return iter(())

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        if self.step.next is not None:
            yield ("next",), "an end step has no next"
