"""update steps: set fields and add tags on a contact (the shell does it); the run goes on."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sopflow.sop.protocol import UpdateContact
from sopflow.sop.schema import UpdateStep
from sopflow.sop.steps.base import EffectStep, Loc, Stamp

# Fields an update cannot write as text: the key, a list, and what intake checks (addresses,
# zone), which a rendered template would bypass.
_NOT_SETTABLE = {
    "id": "a contact's id cannot change",
    "tags": "tags are a list: add them with add_tags",
    "phone": "a phone number comes through intake, where it is checked",
    "email": "an email address comes through intake, where it is checked",
    "timezone": "a time zone comes through intake, where it is checked",
}


class Update(EffectStep[UpdateStep]):
    def command(self, stamp: Stamp) -> UpdateContact:
        step = self.step
        return UpdateContact(**stamp, target=step.target, set=step.set, add_tags=step.add_tags)

    def templates(self) -> Iterator[tuple[Loc, str]]:
        yield ("target",), self.step.target
        for key, template in self.step.set.items():
            yield ("set", key), template

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        for key in self.step.set:
            if key in _NOT_SETTABLE:
                yield ("set", key), f"`set` cannot write {key!r}: {_NOT_SETTABLE[key]}"
