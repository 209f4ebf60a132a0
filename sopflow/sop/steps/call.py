"""call steps: an automated voice call, then the outcome the carrier reports; CallAction is a
ladder's call attempt too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from sopflow.sop.protocol import ActionResult, PlaceCall
from sopflow.sop.run import Run
from sopflow.sop.schema import CallSpec, CallStep
from sopflow.sop.steps.base import Loc
from sopflow.sop.steps.touch import Action, ActionStep


class CallAction(Action[CallSpec]):
    @property
    def channel(self) -> Literal["call"]:
        return "call"

    def command(self, run: Run, planned: datetime) -> PlaceCall:
        return PlaceCall(
            at=run.now,
            step=run.step.id,
            key=run.key(),
            script=self.spec.script,
            machine_detection=self.spec.machine_detection,
            planned_at=planned,
            context=run.context(),
        )

    def templates(self, at: Loc) -> Iterator[tuple[Loc, str]]:
        yield (*at, "script"), self.spec.script

    def issued(self, run: Run, event: ActionResult) -> None:
        run.state.due_at = run.now + self.spec.result_timeout  # the carrier reports by then

    def deadline(self, run: Run) -> datetime | None:
        return run.state.due_at

    def expired(self, run: Run) -> bool:
        run.record(run.step.id, "timeout", reason="no call result in time")
        return True


class Call(ActionStep[CallStep]):
    def action(self) -> CallAction:
        return CallAction(self.step)
