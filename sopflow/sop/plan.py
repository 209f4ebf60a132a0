"""A compiled SOP: the validated model plus a content digest. This is what runs are pinned to."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from sopflow.sop.schema import Sop, Step

PLAN_FORMAT = 1


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = PLAN_FORMAT
    digest: str
    sop: Sop

    @model_validator(mode="before")
    @classmethod
    def _older_ladders_count_slots(cls, data: Any) -> Any:
        """Plan JSON dumped before ladders had `followups_count` (a stored version, the input of
        a running workflow) keeps counting slots, so its runs replay the same commands."""
        if not isinstance(data, dict) or not isinstance(data.get("sop"), dict):
            return data
        steps = data["sop"].get("steps")
        if not isinstance(steps, list):
            return data
        older = [
            {**step, "followups_count": "slots"}
            if isinstance(step, dict)
            and step.get("kind") == "ladder"
            and "followups_count" not in step
            else step
            for step in steps
        ]
        return {**data, "sop": {**data["sop"], "steps": older}}

    @cached_property
    def _index(self) -> dict[str, tuple[int, Step]]:
        return {step.id: (i, step) for i, step in enumerate(self.sop.steps)}

    def step(self, step_id: str) -> Step:
        return self._index[step_id][1]

    def has_step(self, step_id: str) -> bool:
        return step_id in self._index

    def next_of(self, step_id: str) -> str | None:
        """The step's explicit `next`, else the step listed after it, else None (the run ends)."""
        index, step = self._index[step_id]
        if step.next is not None:
            return step.next
        following = index + 1
        return self.sop.steps[following].id if following < len(self.sop.steps) else None


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Fields added to the language after plans were first deployed: left out of the digest while
# they hold their default, so every plan deployed before keeps its digest (and its version).
_LATER_FIELDS = {"purpose": "marketing", "priority": 50}
_LATER_MESSAGE_FIELDS = {"template": None, "subject": None}  # message steps, follow-ups
# Ladders: `followups_count` is left out at "slots" (how every earlier plan counted) and where
# there are no follow-ups to count for. `missed_slot` changed its default from skip to shift:
# it was always in the payload, so a SOP that relies on the default now compiles to a new
# digest (redeploying it under the same version is refused: bump the version), while plans
# deployed before carry "skip" in their stored JSON and in their running workflows' input.


def _drop_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> None:
    for name, default in defaults.items():
        if name in data and data[name] == default:
            del data[name]


def compile_plan(sop: Sop) -> Plan:
    """Compile a validated SOP. Same meaning, same digest: formatting and comments do not count."""
    data = sop.model_dump(mode="json", by_alias=True)
    _drop_defaults(data, _LATER_FIELDS)
    for step in data["steps"]:
        if step["kind"] in ("sms", "whatsapp", "email"):
            _drop_defaults(step, _LATER_MESSAGE_FIELDS)
        for followup in step.get("followups", []):
            _drop_defaults(followup, _LATER_MESSAGE_FIELDS)
        if step["kind"] == "ladder" and (
            step["followups_count"] == "slots" or not step["followups"]
        ):
            del step["followups_count"]
    payload = canonical_json({"format": PLAN_FORMAT, "sop": data})
    digest = "sha256:" + hashlib.sha256(payload.encode()).hexdigest()
    return Plan(digest=digest, sop=sop)
