"""Cross-checks a schema cannot express: references, reachability, loops, outcomes, templates
(their variables, and contact fields a contact may lack where they are read: see fields.py).

Each check yields (loc, message); loc is a path into the YAML document, so the loader can
point at the offending node.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from typing import Any, assert_never

import holidays as holidays_lib

from sopflow.sop.fields import guaranteed_fields, unguarded_problems
from sopflow.sop.graph import Finding, Loc, check_graph, routes
from sopflow.sop.schema import (
    ENGINE_OUTCOMES,
    STANDARD_CONTACT_FIELDS,
    BranchStep,
    CallStep,
    Condition,
    EndStep,
    EnrollStep,
    LadderStep,
    MessageStep,
    Moment,
    Sop,
    SplitStep,
    Step,
    TaskSpec,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WhatsAppTemplate,
    step_outcomes,
)
from sopflow.sop.templates import template_problems


def _hint(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_sop(sop: Sop, known_sops: Collection[str] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    ids = [s.id for s in sop.steps]
    first_index: dict[str, int] = {}
    for i, step in enumerate(sop.steps):
        if step.id in first_index:
            findings.append(
                (
                    ("steps", i, "id"),
                    f"duplicate step id {step.id!r} (also step {first_index[step.id] + 1})",
                )
            )
        first_index.setdefault(step.id, i)
    contact_fields = set(STANDARD_CONTACT_FIELDS) | set(sop.contact_fields)
    produced = set(ENGINE_OUTCOMES)
    for step in sop.steps:
        produced |= set(step_outcomes(step))

    for i, _step in enumerate(sop.steps):
        for loc, target in routes(sop, i):
            if target is not None and target not in first_index:
                findings.append((loc, f"unknown step {target!r}{_hint(target, ids)}"))
    for event, target in sop.interrupts.items():
        if target not in first_index:
            findings.append((("interrupts", event), f"unknown step {target!r}{_hint(target, ids)}"))

    have = guaranteed_fields(sop)
    for i, step in enumerate(sop.steps):
        findings += _check_step(sop, i, step, contact_fields, produced, known_sops)
        findings += _check_templates(sop, i, step, contact_fields, have.get(step.id))
    for i, condition in enumerate(sop.entry.conditions):
        findings += _check_condition(
            ("entry", "conditions", i), condition, contact_fields, produced, ids
        )
    findings += _check_policy(sop)
    if not findings:  # graph checks need every reference to resolve
        findings += check_graph(sop)
    return findings


def _check_step(
    sop: Sop,
    i: int,
    step: Step,
    contact_fields: set[str],
    produced: set[str],
    known_sops: Collection[str] | None,
) -> list[Finding]:
    base: Loc = ("steps", i)
    out: list[Finding] = []
    if isinstance(step, EndStep) and step.next is not None:
        out.append(((*base, "next"), "an end step has no next"))
    outcomes = set(step_outcomes(step)) | ENGINE_OUTCOMES
    on_outcome = getattr(step, "on_outcome", {}) or {}
    for outcome in on_outcome:
        if outcome not in outcomes:
            out.append(
                (
                    (*base, "on_outcome", outcome),
                    f"outcome {outcome!r} is never produced by this step"
                    f" (its outcomes: {', '.join(step_outcomes(step))}){_hint(outcome, outcomes)}",
                )
            )
    action = step.attempt if isinstance(step, LadderStep) else step
    if isinstance(action, TaskSpec):
        prefix: Loc = (*base, "attempt") if isinstance(step, LadderStep) else base
        for outcome, names in action.outcome_fields.items():
            if outcome not in action.outcomes:
                out.append(
                    (
                        (*prefix, "outcome_fields", outcome),
                        f"{outcome!r} is not one of the outcomes",
                    )
                )
            out += [
                (
                    (*prefix, "outcome_fields", outcome),
                    f"unknown contact field {name!r}"
                    f"{_hint(name, contact_fields)} (declare it under contact_fields)",
                )
                for name in names
                if name not in contact_fields
            ]
    if isinstance(step, LadderStep):
        for j, outcome in enumerate(step.stop_on):
            if outcome not in outcomes:
                out.append(
                    (
                        (*base, "stop_on", j),
                        f"outcome {outcome!r} is never produced by the attempt{_hint(outcome, outcomes)}",
                    )
                )
        for outcome in on_outcome:
            if outcome in outcomes and outcome not in step.stop_on:
                out.append(
                    (
                        (*base, "on_outcome", outcome),
                        f"outcome {outcome!r} does not stop the ladder; add it to stop_on",
                    )
                )
        order = [(s.day, s.at) for s in step.slots]
        for j in range(1, len(order)):
            if order[j] <= order[j - 1]:
                out.append(((*base, "slots", j), "slots must be in time order (day, then at)"))
        for j, follow in enumerate(step.followups):
            if follow.after_attempt > len(step.slots):
                out.append(
                    (
                        (*base, "followups", j, "after_attempt"),
                        f"the ladder has only {len(step.slots)} attempts",
                    )
                )
    if isinstance(step, EnrollStep) and known_sops is not None and step.sop not in known_sops:
        out.append(((*base, "sop"), f"unknown SOP {step.sop!r}{_hint(step.sop, known_sops)}"))
    if isinstance(step, WaitStep | WaitForStep) and step.until is not None:
        out += _check_moment(sop, (*base, "until"), step.until)
    if isinstance(step, WaitForStep):
        for event in step.on_event:
            if event not in step.events:
                out.append(
                    (
                        (*base, "on_event", event),
                        f"event {event!r} is not awaited by this step (events: {', '.join(step.events)})",
                    )
                )
    if isinstance(step, BranchStep):
        for j, case in enumerate(step.cases):
            for k, condition in enumerate(case.when):
                out += _check_condition(
                    (*base, "cases", j, "when", k),
                    condition,
                    contact_fields,
                    produced,
                    [s.id for s in sop.steps],
                )
    if isinstance(step, SplitStep):
        names = [v.name for v in step.variants]
        for j, name in enumerate(names):
            if name in names[:j]:
                out.append(((*base, "variants", j, "name"), f"duplicate variant {name!r}"))
    return out


def _check_templates(
    sop: Sop, i: int, step: Step, contact_fields: set[str], have: frozenset[str] | None
) -> list[Finding]:
    """Unknown variables, and contact fields read unguarded where a contact may lack them
    (fields.py). `have` is None for a step no route reaches: the graph check reports it."""
    out: list[Finding] = []
    for loc, source in _step_templates(("steps", i), step):
        out += [(loc, message) for message in template_problems(source, contact_fields)]
        if have is not None:
            out += [(loc, message) for message in unguarded_problems(sop, step.id, source, have)]
    return out


def _step_templates(base: Loc, step: Step) -> Iterator[tuple[Loc, str]]:
    """Every template a step renders, with where it is in the file. One case per step kind: a
    kind added to the language and forgotten here fails mypy."""
    match step:
        case LadderStep():
            for j, follow in enumerate(step.followups):
                yield (*base, "followups", j, "body"), follow.body
                yield from _whatsapp_variables((*base, "followups", j), follow.template)
            if isinstance(step.attempt, TaskSpec):
                yield (*base, "attempt", "instructions"), step.attempt.instructions
            else:
                yield (*base, "attempt", "script"), step.attempt.script
        case MessageStep():
            yield (*base, "body"), step.body
            yield from _whatsapp_variables(base, step.template)
        case CallStep():
            yield (*base, "script"), step.script
        case TaskStep():
            yield (*base, "instructions"), step.instructions
        case EnrollStep():
            for key, template in step.data.items():
                yield (*base, "data", key), template
        case UpdateStep():
            yield (*base, "target"), step.target
            for key, template in step.set.items():
                yield (*base, "set", key), template
        case WaitStep() | WaitForStep() | BranchStep() | SplitStep() | EndStep():
            pass  # no template
        case _:
            assert_never(step)


def _whatsapp_variables(base: Loc, template: WhatsAppTemplate | None) -> Iterator[tuple[Loc, str]]:
    # Rendered like the body whenever the 24-hour session is closed, so checked like it.
    for name, source in (template.variables if template else {}).items():
        yield (*base, "template", "variables", name), source


def _check_condition(
    loc: Loc,
    condition: Condition,
    contact_fields: set[str],
    produced: set[str],
    step_ids: Collection[str],
) -> list[Finding]:
    if condition.any is not None:
        return [
            finding
            for i, group in enumerate(condition.any)
            for j, inner in enumerate(group)
            for finding in _check_condition(
                (*loc, "any", i, j), inner, contact_fields, produced, step_ids
            )
        ]
    assert condition.field is not None
    root, _, rest = condition.field.partition(".")
    where: Loc = (*loc, "field")
    if root == "contact":
        if rest not in contact_fields:
            return [
                (
                    where,
                    f"unknown contact field {rest!r}{_hint(rest, contact_fields)}"
                    " (declare it under contact_fields)",
                )
            ]
    elif root == "visits":
        if rest not in step_ids:
            return [(where, f"unknown step {rest!r}{_hint(rest, step_ids)}")]
    elif root == "outcome" and not rest:
        values: list[Any] = []
        if condition.equals is not None:
            values = [condition.equals]
        elif condition.in_ is not None:
            values = list(condition.in_)
        return [
            (where, f"branches on outcome {v!r}, which no step produces{_hint(str(v), produced)}")
            for v in values
            if v not in produced
        ]
    elif root not in ("event", "variant") or (root == "variant" and rest):
        return [
            (
                where,
                f"unknown field {condition.field!r}: use contact.<field>, event.<field>, "
                "event.type, outcome, variant or visits.<step>",
            )
        ]
    return []


def _check_moment(sop: Sop, loc: Loc, moment: Moment) -> list[Finding]:
    anchor = moment.anchor
    if anchor in ("enrolment", "now"):
        return []
    if anchor.startswith("step:"):
        target = anchor[5:]
        ids = [s.id for s in sop.steps]
        return (
            []
            if target in ids
            else [((*loc, "anchor"), f"unknown step {target!r}{_hint(target, ids)}")]
        )
    if anchor.startswith("contact."):
        name = anchor[8:]
        field = sop.contact_fields.get(name)
        if field is None:
            return [
                (
                    (*loc, "anchor"),
                    f"unknown contact field {name!r}; declare it under contact_fields "
                    "with type date or datetime",
                )
            ]
        if field.type not in ("date", "datetime"):
            return [
                (
                    (*loc, "anchor"),
                    f"contact field {name!r} is a {field.type}, not a date or datetime",
                )
            ]
        return []
    return [
        (
            (*loc, "anchor"),
            f"invalid anchor {anchor!r}: use enrolment, now, step:<id> or contact.<field>",
        )
    ]


def _check_policy(sop: Sop) -> list[Finding]:
    out: list[Finding] = []
    policy = sop.policy
    for channel, window in policy.windows.items():
        if window.days == "business" and not policy.business_days:
            out.append(
                (
                    ("policy", "windows", channel, "days"),
                    "empty window: the policy has no business days",
                )
            )
    calendar = policy.holidays
    if calendar is not None:
        supported = holidays_lib.list_supported_countries()
        if calendar.country not in supported:
            out.append(
                (
                    ("policy", "holidays", "country"),
                    f"no holiday calendar for country {calendar.country!r}{_hint(calendar.country, supported)}",
                )
            )
        elif (
            calendar.subdivision is not None
            and calendar.subdivision not in supported[calendar.country]
        ):
            subdivisions = supported[calendar.country]
            out.append(
                (
                    ("policy", "holidays", "subdivision"),
                    f"unknown subdivision {calendar.subdivision!r} of {calendar.country}"
                    f"{_hint(calendar.subdivision, subdivisions)}",
                )
            )
    return out
