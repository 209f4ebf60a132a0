"""Evaluate Conditions (entry filters, branch cases) against a contact, an event and a run."""

from __future__ import annotations

from calendar import isleap
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sopflow.sop.schema import Condition

_MISSING = object()


def lookup(path: str, scope: Mapping[str, Any]) -> Any:
    """Resolve "contact.tags", "event.score", "outcome"… in a scope of nested mappings."""
    current: Any = scope
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(left: Any, right: Any, op: str) -> bool:
    a, b = _number(left), _number(right)
    pair: tuple[Any, Any] = (a, b) if a is not None and b is not None else (str(left), str(right))
    if a is None and b is not None:  # a number compared with text never matches
        return False
    x, y = pair
    return bool({"gt": x > y, "gte": x >= y, "lt": x < y, "lte": x <= y}[op])


def _within_days(value: Any, days: int, today: date) -> bool:
    try:
        when = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    except ValueError:
        return False
    return 0 <= (next_anniversary(when, today) - today).days < days


def next_anniversary(when: date, today: date) -> date:
    """The next yearly occurrence of `when` on or after `today` (29 Feb falls on 28 Feb)."""
    for year in (today.year, today.year + 1):
        day = (
            min(when.day, 28)
            if (when.month, when.day) == (2, 29) and not isleap(year)
            else when.day
        )
        candidate = date(year, when.month, day)
        if candidate >= today:
            return candidate
    raise AssertionError("unreachable: next year always qualifies")


def holds(condition: Condition, scope: Mapping[str, Any]) -> bool:
    """Evaluate one condition. `scope` has contact, event, outcome, variant, visits and today,
    and `segments` (segment id -> membership) as the shell found them. A segment the scope has
    no answer for holds neither way: the case that names it is not taken."""
    if condition.any is not None:
        return any(all_hold(group, scope) for group in condition.any)
    if condition.segment is not None or condition.not_segment is not None:
        answers: Mapping[str, bool] = scope.get("segments") or {}
        name = condition.segment or condition.not_segment or ""
        if name not in answers:
            return False
        return answers[name] == (condition.segment is not None)
    assert condition.field is not None
    value = lookup(condition.field, scope)
    op = condition.operator
    if op == "within_days":
        today = scope.get("today")
        if value is _MISSING or value is None or not isinstance(today, date):
            return False
        return _within_days(value, condition.within_days or 0, today)
    if op == "exists":
        return (value is not _MISSING and value is not None) == condition.exists
    if value is _MISSING or value is None:
        return op in ("not_equals", "not_in")
    if op == "equals":
        return bool(value == condition.equals)
    if op == "not_equals":
        return bool(value != condition.not_equals)
    if op == "in_":
        return value in (condition.in_ or [])
    if op == "not_in":
        return value not in (condition.not_in or [])
    if op == "contains":
        if isinstance(value, str):
            return str(condition.contains).lower() in value.lower()
        return isinstance(value, Sequence) and condition.contains in value
    return _compare(value, getattr(condition, op), op)


def all_hold(conditions: Sequence[Condition], scope: Mapping[str, Any]) -> bool:
    return all(holds(c, scope) for c in conditions)
