"""About how many SMS segments each SMS of an SOP takes, shown when it is validated.

Bodies are templates, so the real length varies per contact: we render each with a sample
contact (the SOP's `contact_fields` examples, else the simulator's placeholders) and call the
result an estimate. WhatsApp is not billed per segment, so only SMS bodies are estimated.
Compliance footers the gate may append at send time are not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sopflow.errors import InvalidContactError, SopflowError
from sopflow.sop import clock, engine
from sopflow.sop.plan import Plan
from sopflow.sop.rendering import with_rep
from sopflow.sop.rep_view import SAMPLE_REP
from sopflow.sop.schema import LadderStep, MessageStep
from sopflow.sop.segments import Segments, count_segments
from sopflow.sop.simulator import PREVIEW_LINKS, sample_contact
from sopflow.sop.templates import render

# Values for declared fields without an `example`, by type, so a body still renders.
_PLACEHOLDERS: dict[str, Any] = {
    "string": "Sample",
    "url": "https://example.com/x",
    "number": 1,
    "boolean": False,
    "date": "2026-12-03",
    "datetime": "2026-12-03T15:00:00",
}


_SAMPLE_START = datetime(2026, 12, 1, 9, tzinfo=UTC)


@dataclass(frozen=True)
class SmsEstimate:
    where: str  # the body's path in the SOP, e.g. "retry_calls.followups[0]"
    segments: Segments | None
    problem: str = ""  # why there is no estimate (the body needs run-time data)

    def describe(self) -> str:
        if self.segments is None:
            return f"sms {self.where}: no estimate ({self.problem})"
        return f"sms {self.where}: about {self.segments.describe()}"


def sms_estimates(plan: Plan) -> list[SmsEstimate]:
    """One estimate per SMS body of the plan (message steps and ladder follow-ups), in order."""
    bodies: list[tuple[str, str, str]] = []  # (where, step id, body)
    for step in plan.sop.steps:
        if isinstance(step, MessageStep) and step.kind == "sms":
            bodies.append((step.id, step.id, step.body))
        elif isinstance(step, LadderStep):
            bodies += [
                (f"{step.id}.followups[{i}]", step.id, followup.body)
                for i, followup in enumerate(step.followups)
                if followup.kind == "sms"
            ]
    if not bodies:
        return []
    context = _sample_context(plan)
    estimates = []
    for where, step_id, body in bodies:
        context["run"]["step"] = step_id
        try:
            text = render(body, context, step_id)
        except SopflowError as exc:
            reason = str(exc.__cause__ or exc)  # the template's own words, not the step again
            estimates.append(SmsEstimate(where, None, f"no sample renders it: {reason}"))
            continue
        estimates.append(SmsEstimate(where, count_segments(text)))
    return estimates


def _sample_context(plan: Plan) -> dict[str, Any]:
    """Template variables as the engine gives them, for a sample contact on its first visit."""
    sop = plan.sop
    blanks = {
        name: _PLACEHOLDERS[field.type]
        for name, field in sop.contact_fields.items()
        if field.example is None
    }
    try:
        contact = sample_contact(plan, {})
    except InvalidContactError:  # a required field has no example
        contact = sample_contact(plan, blanks)
    for name, value in blanks.items():
        contact.setdefault(name, value)
    try:
        zones, _ = clock.contact_zones(contact, sop.policy.timezone)
    except SopflowError:
        zones = [sop.policy.timezone.default]
    state = engine.start(plan, contact, zones, _SAMPLE_START).state
    # Referral links signed as previews sign them: about the length production's take.
    return with_rep(engine.template_context(plan, state), SAMPLE_REP, "sample-run", PREVIEW_LINKS)
