"""Layering: conditions that route by segment (`segment: ID`, `not_segment: ID`), kept pure.

Membership is an SQL query over the store, which the engine cannot run. So:
- a branch that reaches a case naming segments issues `CheckSegments` and waits for its
  ActionResult, whose detail["segments"] maps each id to the answer; the workflow answers through
  the `sopflow.check_segments` activity (the store, sopflow/segmenting/membership.py), the
  simulator from the memberships it was given. The branch then routes and records the answers;
- entry conditions naming segments are answered at intake, before a run starts
  (sopflow/segmenting/membership.py `admit`); `engine.entry_matches` without answers leaves them
  out, so intake's first pass (no store yet) keeps every SOP they could admit.
An unanswered segment (the check failed) holds neither way (conditions.holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sopflow.sop.plan import Plan
from sopflow.sop.protocol import ActionResult
from sopflow.sop.schema import BranchStep, Condition

ANSWER = "segments"  # the key of the answers in CheckSegments' ActionResult detail


def condition_segments(conditions: Iterable[Condition]) -> list[str]:
    """The segment ids the conditions name (inside `any` groups too), in order, once each."""
    found: list[str] = []
    for condition in conditions:
        if condition.any is not None:
            inner = condition_segments(c for group in condition.any for c in group)
        else:
            inner = [s for s in (condition.segment, condition.not_segment) if s is not None]
        found += [s for s in inner if s not in found]
    return found


def names_segment(condition: Condition) -> bool:
    return bool(condition_segments([condition]))


def plan_segments(plan: Plan) -> list[str]:
    """Every segment the SOP routes by: its entry conditions and its branch cases."""
    conditions = list(plan.sop.entry.conditions)
    for step in plan.sop.steps:
        if isinstance(step, BranchStep):
            conditions += [c for case in step.cases for c in case.when]
    return condition_segments(conditions)


def entry_segments(plan: Plan) -> list[str]:
    """The segments the SOP's entry conditions name: intake must ask the store for these."""
    return condition_segments(plan.sop.entry.conditions)


def without_segments(conditions: Iterable[Condition]) -> list[Condition]:
    """The conditions that need no membership answer (intake's first pass, before the store)."""
    return [c for c in conditions if not names_segment(c)]


def answer_detail(answers: Mapping[str, bool]) -> dict[str, Any]:
    """A CheckSegments result's detail, as both shells build it."""
    return {ANSWER: dict(answers)}


def read_answers(event: ActionResult, asked: Iterable[str]) -> tuple[dict[str, bool], str | None]:
    """The answers of a CheckSegments result, and why there are none (the check failed)."""
    if event.status != "done":
        return {}, event.reason or f"the segment check was {event.status}"
    given = event.detail.get(ANSWER)
    missing = [
        s for s in asked if not isinstance(given, Mapping) or not isinstance(given.get(s), bool)
    ]
    if missing:
        return {}, f"no answer for segment(s) {', '.join(missing)}"
    assert isinstance(given, Mapping)
    return {s: bool(given[s]) for s in asked}, None


def unmet(conditions: Iterable[Condition], answers: Mapping[str, bool]) -> list[str]:
    """Why segment conditions do not hold, e.g. "not in segment 'high_intent'" (for answers)."""
    why: list[str] = []
    for condition in conditions:
        name = condition.segment or condition.not_segment
        if name is None or condition.any is not None:
            continue
        if name not in answers:
            why.append(f"segment {name!r} could not be checked")
        elif answers[name] != (condition.segment is not None):
            why.append(f"{'not ' if condition.segment else ''}in segment {name!r}")
    return why
