"""enroll steps: start the contact on another SOP (the shell does it); this run goes on."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sopflow.sop.protocol import EnrollContact
from sopflow.sop.schema import EnrollStep
from sopflow.sop.steps.base import EffectStep, Loc, Stamp, hint


class Enroll(EffectStep[EnrollStep]):
    def command(self, stamp: Stamp) -> EnrollContact:
        return EnrollContact(**stamp, sop=self.step.sop, data=self.step.data)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        for key, template in self.step.data.items():
            yield ("data", key), template

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        sop = self.step.sop
        if known_sops is not None and sop not in known_sops:
            yield ("sop",), f"unknown SOP {sop!r}{hint(sop, known_sops)}"
