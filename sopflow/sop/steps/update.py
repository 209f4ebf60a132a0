"""update steps: set fields and add tags on a contact (the shell does it); the run goes on."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.sop.protocol import UpdateContact
from sopflow.sop.schema import UpdateStep
from sopflow.sop.steps.base import EffectStep, Loc, Stamp


class Update(EffectStep[UpdateStep]):
    def command(self, stamp: Stamp) -> UpdateContact:
        step = self.step
        return UpdateContact(**stamp, target=step.target, set=step.set, add_tags=step.add_tags)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        yield ("target",), self.step.target
        for key, template in self.step.set.items():
            yield ("set", key), template
