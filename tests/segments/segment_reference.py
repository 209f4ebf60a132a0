"""A plain-Python evaluation of segments over lists of rows, written from the documented rules
(sopflow/segmenting/schema.py, rfm.py) without SQL: the tests compare the SQL query with it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sopflow.segmenting.fields import NUMERIC_TEXT
from sopflow.segmenting.rfm import named_segment
from sopflow.segmenting.schema import AttributeRule, Segment

COLUMNS = ("phone", "timezone", "owner")
MISSING = object()


@dataclass(frozen=True)
class Scored:
    recency: int
    frequency: int
    monetary: int
    segment: str


def ntile_scores(values: dict[str, Any]) -> dict[str, int]:
    """NTILE(5) over the values in ascending order (the first tiles one row larger when the
    count does not divide by 5), each tied value getting the tile its first row got."""
    ordered = sorted(values.items(), key=lambda item: item[1])
    count = len(ordered)
    size, larger = divmod(count, 5)

    def tile(position: int) -> int:  # 0-based position -> 1-based tile
        if position < larger * (size + 1):
            return position // (size + 1) + 1
        return larger + (position - larger * (size + 1)) // size + 1

    first: dict[Any, int] = {}
    for position, (_, value) in enumerate(ordered):
        first.setdefault(value, tile(position))
    return {contact: first[value] for contact, value in ordered}


def rfm_scores(
    activity: Iterable[dict[str, Any]], currency: str, as_of: datetime
) -> dict[str, Scored]:
    last: dict[str, datetime] = {}
    count: dict[str, int] = {}
    total: dict[str, Decimal] = {}
    for row in activity:
        if row["kind"] != "purchase" or row["currency"] != currency or row["at"] > as_of:
            continue
        who = row["contact_id"]
        last[who] = max(last.get(who, row["at"]), row["at"])
        count[who] = count.get(who, 0) + 1
        total[who] = total.get(who, Decimal(0)) + (row["amount"] or Decimal(0))
    r, f, m = ntile_scores(last), ntile_scores(count), ntile_scores(total)
    return {
        who: Scored(r[who], f[who], m[who], named_segment(r[who], f[who], m[who])) for who in last
    }


def _value(contact: dict[str, Any], name: str) -> Any:
    if name in COLUMNS:
        value = contact.get(name)
        return MISSING if value is None else value
    return contact["fields"].get(name, MISSING)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str) and NUMERIC_TEXT.fullmatch(value):
        return Decimal(value)
    return None


def _equals(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool):
        return isinstance(value, bool) and value is wanted
    if isinstance(wanted, int | float):
        number = _number(value)
        return number is not None and number == Decimal(str(wanted))
    return isinstance(value, str) and value == wanted


def _bound(value: Any, bound: Any, at_least: bool) -> bool:
    if isinstance(bound, str):
        if not isinstance(value, str):
            return False
        return value >= bound if at_least else value <= bound
    number = _number(value)
    if number is None:
        return False
    return number >= Decimal(str(bound)) if at_least else number <= Decimal(str(bound))


def attribute_holds(rule: AttributeRule, contact: dict[str, Any]) -> bool:
    value = _value(contact, rule.field)
    if rule.exists is not None:
        return (value is not MISSING and value is not None) == rule.exists
    if rule.equals is not None:
        return _equals(value, rule.equals)
    if rule.in_ is not None:
        return any(_equals(value, wanted) for wanted in rule.in_)
    holds = True
    if rule.gte is not None:
        holds = holds and _bound(value, rule.gte, True)
    if rule.lte is not None:
        holds = holds and _bound(value, rule.lte, False)
    return holds


def members(
    segment: Segment,
    contacts: list[dict[str, Any]],
    activity: list[dict[str, Any]],
    as_of: datetime,
) -> list[str]:
    rules = segment.rules
    scored = rfm_scores(activity, rules.rfm.currency, as_of) if rules.rfm else {}
    found = []
    for contact in contacts:
        who, fields = contact["id"], contact["fields"]
        if rules.rfm is not None:
            score = scored.get(who)
            if score is None:
                continue
            if rules.rfm.segments and score.segment not in rules.rfm.segments:
                continue
            ranges = (
                (score.recency, rules.rfm.recency),
                (score.frequency, rules.rfm.frequency),
                (score.monetary, rules.rfm.monetary),
            )
            if any(
                wanted is not None
                and (
                    (wanted.gte is not None and value < wanted.gte)
                    or (wanted.lte is not None and value > wanted.lte)
                )
                for value, wanted in ranges
            ):
                continue
        if rules.last_activity is not None:
            kind = rules.last_activity.kind
            times = [
                row["at"]
                for row in activity
                if row["contact_id"] == who
                and row["at"] <= as_of
                and (kind == "any" or row["kind"] == kind)
            ]
            if not times:
                continue
            days = rules.last_activity.days_since
            if days.gte is not None and max(times) > as_of - timedelta(days=days.gte):
                continue
            if days.lte is not None and max(times) < as_of - timedelta(days=days.lte):
                continue
        if rules.tags is not None:
            tags = fields.get("tags")
            tags = set(tags) if isinstance(tags, list) else set()
            if not all(tag in tags for tag in rules.tags.all or []):
                continue
            if rules.tags.any and not tags & set(rules.tags.any):
                continue
            if tags & set(rules.tags.none or []):
                continue
        if not all(attribute_holds(rule, contact) for rule in rules.attributes or []):
            continue
        if rules.lifecycle_stage is not None:
            stage = fields.get("lifecycle_stage")
            listed = isinstance(stage, str) and stage in (
                rules.lifecycle_stage.in_ or rules.lifecycle_stage.not_in or []
            )
            if listed != (rules.lifecycle_stage.in_ is not None):
                continue
        found.append(who)
    return sorted(found)
