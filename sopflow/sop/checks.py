"""Cross-checks a schema cannot express: references, reachability, loops, outcomes, templates
(their variables, and contact fields a contact may lack where they are read: see fields.py).

Each check yields (loc, message); loc is a path into the YAML document, so the loader can
point at the offending node.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import holidays as holidays_lib

from sopflow.sop.fields import guaranteed_fields, unguarded_problems
from sopflow.sop.graph import Finding, check_graph, routes
from sopflow.sop.schema import (
    ENGINE_OUTCOMES,
    STANDARD_CONTACT_FIELDS,
    Condition,
    ContactDateSchedule,
    Moment,
    Sop,
    Step,
)
from sopflow.sop.segment_checks import segment_problems, segments_in_working_folder
from sopflow.sop.steps import handler_for
from sopflow.sop.steps.base import Loc, hint
from sopflow.sop.templates import template_problems


def check_sop(
    sop: Sop,
    known_sops: Collection[str] | None = None,
    known_segments: Collection[str] | None = None,
) -> list[Finding]:
    """`known_segments`: the segment ids a schedule may name (default: the valid files of
    segments/ in the working directory, where the gateway and the CLI read them)."""
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
        produced |= set(handler_for(step).waits_for().outcomes)

    for i, _step in enumerate(sop.steps):
        for loc, target, _ in routes(sop, i):
            if target not in first_index:
                findings.append((loc, f"unknown step {target!r}{hint(target, ids)}"))
    for event, target in sop.interrupts.items():
        if target not in first_index:
            findings.append((("interrupts", event), f"unknown step {target!r}{hint(target, ids)}"))

    have = guaranteed_fields(sop)
    for i, step in enumerate(sop.steps):
        findings += _check_step(sop, i, step, contact_fields, produced, known_sops)
        findings += _check_templates(sop, i, step, contact_fields, have.get(step.id))
    for i, condition in enumerate(sop.entry.conditions):
        findings += _check_condition(
            ("entry", "conditions", i), condition, contact_fields, produced, ids
        )
    findings += _check_policy(sop)
    findings += _check_schedule(sop, known_segments)
    findings += segment_problems(sop, known_segments)  # segment conditions name real segments
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
    """What the step's handler says it routes by and waits for must agree, and what it names
    must exist; then the kind's own rules (Handler.problems)."""
    base: Loc = ("steps", i)
    handler = handler_for(step)
    waits = handler.waits_for()
    step_routes = list(handler.routes())
    out: list[Finding] = []
    outcomes = set(waits.outcomes) | ENGINE_OUTCOMES
    for route in step_routes:
        if route.outcome is not None and route.outcome not in outcomes:
            out.append(
                (
                    (*base, *route.loc),
                    f"outcome {route.outcome!r} is never produced by this step"
                    f" (its outcomes: {', '.join(waits.outcomes)}){hint(route.outcome, outcomes)}",
                )
            )
    declared: Loc = (*base, *waits.outcomes_at)
    for outcome, names in waits.outcome_fields.items():
        if outcome not in waits.outcomes:
            out.append(
                ((*declared, "outcome_fields", outcome), f"{outcome!r} is not one of the outcomes")
            )
        out += [
            (
                (*declared, "outcome_fields", outcome),
                f"unknown contact field {name!r}"
                f"{hint(name, contact_fields)} (declare it under contact_fields)",
            )
            for name in names
            if name not in contact_fields
        ]
    out += [((*base, *loc), message) for loc, message in handler.problems(known_sops)]
    if waits.until is not None:
        out += _check_moment(sop, (*base, "until"), waits.until)
    for route in step_routes:
        if route.event is not None and route.event not in waits.events:
            out.append(
                (
                    (*base, *route.loc),
                    f"event {route.event!r} is not awaited by this step"
                    f" (events: {', '.join(waits.events)})",
                )
            )
        for loc, condition in route.when:
            out += _check_condition(
                (*base, *loc), condition, contact_fields, produced, [s.id for s in sop.steps]
            )
    return out


def _check_templates(
    sop: Sop, i: int, step: Step, contact_fields: set[str], have: frozenset[str] | None
) -> list[Finding]:
    """Unknown variables, and contact fields read unguarded where a contact may lack them
    (fields.py). `have` is None for a step no route reaches: the graph check reports it."""
    out: list[Finding] = []
    for relative, source in handler_for(step).templates():
        loc = ("steps", i, *relative)
        out += [(loc, message) for message in template_problems(source, contact_fields)]
        if have is not None:
            out += [(loc, message) for message in unguarded_problems(sop, step.id, source, have)]
    return out


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
    if condition.field is None:  # `segment` / `not_segment`: segment_checks.py
        return []
    root, _, rest = condition.field.partition(".")
    where: Loc = (*loc, "field")
    if root == "contact":
        if rest not in contact_fields:
            return [
                (
                    where,
                    f"unknown contact field {rest!r}{hint(rest, contact_fields)}"
                    " (declare it under contact_fields)",
                )
            ]
    elif root == "visits":
        if rest not in step_ids:
            return [(where, f"unknown step {rest!r}{hint(rest, step_ids)}")]
    elif root == "outcome" and not rest:
        values: list[Any] = []
        if condition.equals is not None:
            values = [condition.equals]
        elif condition.in_ is not None:
            values = list(condition.in_)
        return [
            (where, f"branches on outcome {v!r}, which no step produces{hint(str(v), produced)}")
            for v in values
            if v not in produced
        ]
    elif root in ("segment", "segments"):
        return [
            (
                where,
                f"a segment is not a field: write `segment: {rest or 'ID'}` (or `not_segment: "
                f"{rest or 'ID'}`) as a condition of its own",
            )
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
            else [((*loc, "anchor"), f"unknown step {target!r}{hint(target, ids)}")]
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
                    f"no holiday calendar for country {calendar.country!r}{hint(calendar.country, supported)}",
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
                    f"{hint(calendar.subdivision, subdivisions)}",
                )
            )
    return out


def _check_schedule(sop: Sop, known_segments: Collection[str] | None) -> list[Finding]:
    """A contact-date rule reads a declared date field; a rule's segment exists."""
    rule = sop.entry.schedule
    out: list[Finding] = []
    if rule is None:
        return out
    if isinstance(rule, ContactDateSchedule):
        name, where = rule.contact_date, ("entry", "schedule", "contact_date")
        field = sop.contact_fields.get(name)
        dates = [n for n, f in sop.contact_fields.items() if f.type in ("date", "datetime")]
        if name in STANDARD_CONTACT_FIELDS:
            out.append((where, f"contact field {name!r} is a standard text field, not a date"))
        elif field is None:
            out.append(
                (
                    where,
                    f"unknown contact field {name!r}{hint(name, dates)}; declare it under "
                    "contact_fields with type date or datetime",
                )
            )
        elif field.type not in ("date", "datetime"):
            out.append((where, f"contact field {name!r} is a {field.type}, not a date or datetime"))
    if rule.segment is not None:
        broken = 0
        if known_segments is None:
            known, broken = segments_in_working_folder()
        else:
            known = set(known_segments)
        if rule.segment not in known:
            listed = f"known segments: {', '.join(sorted(known)) or 'none'}"
            unread = (
                f"; {broken} segment file{'s' if broken != 1 else ''} cannot be read: "
                "`sopflow segments validate` says why"
                if broken
                else ""
            )
            out.append(
                (
                    ("entry", "schedule", "segment"),
                    f"unknown segment {rule.segment!r}{hint(rule.segment, known)}; {listed}{unread}",
                )
            )
    return out
