"""A segment compiled to one SQL query (SQLAlchemy Core) over `contacts` and `contact_activity`,
and the functions later code calls: `members` (streamed, ordered contact ids) and `is_member`.

Everything is evaluated at `as_of`: activity after it does not exist for the query, and days
are counted back from it, so the same data and `as_of` give the same members. Contact rows are
read as they are now (a contact's tags and fields have no history).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    select,
)
from sqlalchemy.sql.selectable import FromClause, Subquery

from sopflow.errors import SopflowError
from sopflow.segmenting.fields import ContactField, Dialect, dialect_of, sure, text_order
from sopflow.segmenting.rfm import scores
from sopflow.segmenting.schema import (
    AttributeRule,
    LastActivityKind,
    LastActivityRule,
    RfmRule,
    ScoreRange,
    Segment,
    StageRule,
    TagRule,
)
from sopflow.store.models import Contact, ContactActivity

STREAM_ROWS = 10_000  # rows fetched per round trip while streaming members


@dataclass(frozen=True)
class Compiled:
    """A segment's query: `select` picks the members' ids, ordered; `rfm` is the scores
    subquery it joins when the segment has an RFM rule (preview reads more columns from it)."""

    select: Select[Any]
    contacts: FromClause
    rfm: Subquery | None


def compile_segment(segment: Segment, dialect: Dialect, as_of: datetime) -> Compiled:
    """The query of `segment` at `as_of` (an aware datetime) for `dialect`."""
    if as_of.tzinfo is None:
        raise SopflowError(f"as_of {as_of.isoformat()} has no UTC offset")
    contacts = Contact.__table__
    rules = segment.rules
    conditions: list[ColumnElement[bool]] = []
    query = select(contacts.c.id).select_from(contacts)
    rfm = None
    if rules.rfm is not None:
        rfm = scores(dialect, rules.rfm.currency, as_of)
        query = query.join(rfm, rfm.c.contact_id == contacts.c.id)
        conditions += _rfm(rules.rfm, rfm)
    if rules.last_activity is not None:
        last = _last_activity(rules.last_activity.kind, as_of)
        query = query.join(last, last.c.contact_id == contacts.c.id)
        conditions += _days_since(rules.last_activity, last.c.last_at, as_of)
    if rules.tags is not None:
        conditions += _tags(rules.tags, dialect, contacts)
    for rule in rules.attributes or []:
        conditions.append(_attribute(rule, ContactField(dialect, contacts, rule.field)))
    if rules.lifecycle_stage is not None:
        stage = ContactField(dialect, contacts, "lifecycle_stage")
        conditions.append(_stage(rules.lifecycle_stage, stage))
    query = query.where(*conditions).order_by(text_order(dialect, contacts.c.id))
    return Compiled(query, contacts, rfm)


def members(engine: Engine, segment: Segment, as_of: datetime) -> Iterator[str]:
    """The ids of the segment's contacts at `as_of`, in code point order, streamed: one query,
    read STREAM_ROWS at a time (a server-side cursor on PostgreSQL), so memory stays flat
    however many there are. The connection is held until the iterator is exhausted or closed."""
    query = compile_segment(segment, dialect_of(engine), as_of).select  # bad input: raised now
    return _streamed(engine, query)


def _streamed(engine: Engine, query: Select[Any]) -> Iterator[str]:
    with engine.connect() as connection:
        streamed = connection.execution_options(stream_results=True, yield_per=STREAM_ROWS)
        # Closed explicitly: a consumer that stops early leaves a server-side cursor open.
        with streamed.execute(query) as result:
            for row in result:
                yield row[0]


def members_among(
    engine: Engine, segment: Segment, contact_ids: Sequence[str], as_of: datetime
) -> set[str]:
    """Which of `contact_ids` are in the segment at `as_of`: one query for a page of contacts
    (an RFM rule ranks every purchaser once per page, not once per contact)."""
    if not contact_ids:
        return set()
    compiled = compile_segment(segment, dialect_of(engine), as_of)
    query = compiled.select.where(compiled.contacts.c.id.in_(contact_ids)).order_by(None)
    with engine.connect() as connection:
        return set(connection.scalars(query))


def is_member(engine: Engine, segment: Segment, contact_id: str, as_of: datetime) -> bool:
    """Whether one contact is in the segment at `as_of`. With an RFM rule this still ranks
    every purchaser (a score is a rank), so it costs about what `members` costs: code that
    asks for many contacts should stream `members` once instead."""
    compiled = compile_segment(segment, dialect_of(engine), as_of)
    query = compiled.select.where(compiled.contacts.c.id == contact_id).order_by(None).limit(1)
    with engine.connect() as connection:
        return connection.execute(query).first() is not None


# ---------------------------------------------------------------- rules
def _tags(rule: TagRule, dialect: Dialect, contacts: FromClause) -> list[ColumnElement[bool]]:
    def having(tags: list[str]) -> ColumnElement[bool]:
        """The contact's `tags` list holds one of `tags`."""
        match dialect:
            case "postgresql":
                listed = contacts.c.fields["tags"]
                # Anything but a list has no elements (json_array_elements_text fails on one).
                array = case((func.json_typeof(listed) == "array", listed))
                value = func.json_array_elements_text(array).table_valued("value")
                return exists(select(literal(1)).select_from(value).where(value.c.value.in_(tags)))
            case "sqlite":
                each = func.json_each(contacts.c.fields, "$.tags").table_valued("value")
                is_list = func.json_type(contacts.c.fields, "$.tags") == "array"
                return exists(
                    select(literal(1)).select_from(each).where(is_list, each.c.value.in_(tags))
                )
            case _:
                assert_never(dialect)

    conditions = [having([tag]) for tag in rule.all or []]
    if rule.any:
        conditions.append(having(rule.any))
    if rule.none:
        conditions.append(not_(having(rule.none)))
    return conditions


def _attribute(rule: AttributeRule, field: ContactField) -> ColumnElement[bool]:
    if rule.exists is not None:
        return field.present() if rule.exists else not_(field.present())
    if rule.equals is not None:
        return field.equals(rule.equals)
    if rule.in_ is not None:
        return field.one_of(rule.in_)
    bounds = []
    if rule.gte is not None:
        bounds.append(field.at_least(rule.gte))
    if rule.lte is not None:
        bounds.append(field.at_most(rule.lte))
    return and_(*bounds)


def _stage(rule: StageRule, stage: ContactField) -> ColumnElement[bool]:
    if rule.in_ is not None:
        return and_(stage.is_text(), sure(stage.text().in_(rule.in_)))
    assert rule.not_in is not None  # the schema wants one of the two
    return not_(and_(stage.is_text(), sure(stage.text().in_(rule.not_in))))


def _last_activity(kind: LastActivityKind, as_of: datetime) -> Subquery:
    activity = ContactActivity.__table__
    query = select(activity.c.contact_id, func.max(activity.c.at).label("last_at")).where(
        activity.c.at <= as_of
    )
    match kind:
        case "any":
            pass
        case "purchase" | "visit":
            query = query.where(activity.c.kind == kind)
        case _:
            assert_never(kind)
    return query.group_by(activity.c.contact_id).subquery("last_activity")


def _days_since(
    rule: LastActivityRule, last_at: ColumnElement[Any], as_of: datetime
) -> list[ColumnElement[bool]]:
    # Days since, in 24-hour days: at least N days ago is at or before as_of - N days.
    days = rule.days_since
    conditions = []
    if days.gte is not None:
        conditions.append(last_at <= as_of - timedelta(days=days.gte))
    if days.lte is not None:
        conditions.append(last_at >= as_of - timedelta(days=days.lte))
    return conditions


def _rfm(rule: RfmRule, rfm: Subquery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if rule.segments:
        conditions.append(rfm.c.segment.in_(rule.segments))
    ranges: tuple[tuple[str, ScoreRange | None], ...] = (
        ("recency", rule.recency),
        ("frequency", rule.frequency),
        ("monetary", rule.monetary),
    )
    for column, scores_range in ranges:
        if scores_range is None:
            continue
        if scores_range.gte is not None:
            conditions.append(rfm.c[column] >= scores_range.gte)
        if scores_range.lte is not None:
            conditions.append(rfm.c[column] <= scores_range.lte)
    return conditions
