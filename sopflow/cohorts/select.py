"""One page of a cohort: the contacts after a cursor, in code point order of their ids, as one
SQL query on SQLite or PostgreSQL.

The cohort is the rule's segment at the occurrence (sopflow.segmenting's query, unchanged) or
every contact; a contact-date rule adds the dates its window can hold (a text test on the
field, so an index-free scan stays cheap), and the page's rows are then checked one by one
in Python with the run's own clock (occurrences.due). Each page is its own query, keyed on the
last id (`id > cursor`): nothing is held open between pages, which may be hours apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from sqlalchemy import ColumnElement, Engine, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from sopflow.cohorts.contracts import CohortTotals, Member, Page
from sopflow.cohorts.occurrences import candidate_days, cron_key, due
from sopflow.errors import InvalidContactError
from sopflow.segmenting.fields import ContactField, Dialect, dialect_of, text_order
from sopflow.segmenting.query import compile_segment
from sopflow.segmenting.schema import Segment
from sopflow.sop.schema import ContactDateSchedule, ContactPolicy, CronSchedule
from sopflow.store.contacts import contact_view
from sopflow.store.models import Contact, Run


def _dates(dialect: Dialect, rule: ContactDateSchedule, at: datetime) -> ColumnElement[bool]:
    """The field's text starts with a date the window can hold (annual: month and day)."""
    contacts = Contact.__table__
    field = ContactField(dialect, contacts, rule.contact_date)
    days = candidate_days(at)
    if not rule.annual:
        dates = [d.isoformat() for d in days]
        return and_(field.is_text(), func.substr(field.text(), 1, 10).in_(dates))
    month_days = {d.isoformat()[5:] for d in days}
    if "02-28" in month_days:  # a 29 February is celebrated on the 28th in other years
        month_days.add("02-29")
    return and_(field.is_text(), func.substr(field.text(), 6, 5).in_(sorted(month_days)))


def cohort_query(
    dialect: Dialect,
    rule: CronSchedule | ContactDateSchedule,
    segment: Segment | None,
    occurrence: datetime,
) -> Select[Any]:
    """The ids of the cohort's candidates, ordered by code point."""
    contacts = Contact.__table__
    if segment is not None:
        query = compile_segment(segment, dialect, occurrence).select
    else:
        query = select(contacts.c.id).order_by(text_order(dialect, contacts.c.id))
    match rule:
        case CronSchedule():
            return query
        case ContactDateSchedule():
            return query.where(_dates(dialect, rule, occurrence))
        case _:
            assert_never(rule)


def page_ids(engine: Engine, query: Select[Any], cursor: str | None, limit: int) -> list[str]:
    """The next `limit` ids after `cursor` (compared as they are ordered: by code point)."""
    dialect = dialect_of(engine)
    if cursor is not None:
        query = query.where(text_order(dialect, Contact.__table__.c.id) > cursor)
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(query.limit(limit))]


def contacts_by_id(engine: Engine, ids: Sequence[str]) -> dict[str, Contact]:
    with Session(engine, expire_on_commit=False) as session:
        rows = session.scalars(select(Contact).where(Contact.id.in_(list(ids))))
        return {row.id: row for row in rows}


def cohort_page(
    engine: Engine,
    rule: CronSchedule | ContactDateSchedule,
    segment: Segment | None,
    policy: ContactPolicy,
    occurrence: datetime,
    cursor: str | None,
    limit: int,
) -> Page:
    """The members of the page after `cursor`, each with its enrolment key."""
    dialect = dialect_of(engine)
    ids = page_ids(engine, cohort_query(dialect, rule, segment, occurrence), cursor, limit)
    following = ids[-1] if len(ids) == limit else None
    totals = CohortTotals(scanned=len(ids))
    match rule:
        case CronSchedule():
            key = cron_key(occurrence)
            return Page(
                members=[Member(id=i, key=key) for i in ids], cursor=following, totals=totals
            )
        case ContactDateSchedule():
            rows = contacts_by_id(engine, ids)
            members = []
            for contact_id in ids:
                try:
                    found = due(rule, contact_view(rows[contact_id]), policy, occurrence)
                except InvalidContactError:  # a zone or date the run could not read either
                    totals.invalid += 1
                    continue
                if found is None:
                    totals.not_due += 1
                else:
                    members.append(Member(id=contact_id, key=found[1]))
            return Page(members=members, cursor=following, totals=totals)
        case _:
            assert_never(rule)


def running_or_enrolled(
    engine: Engine, sop_id: str, contact_ids: Sequence[str], workflow_ids: Sequence[str]
) -> tuple[set[str], set[str]]:
    """(contacts with a run of the SOP still running, workflow ids already started): what a
    page need not ask Temporal about."""
    query = select(Run.workflow_id, Run.contact_id, Run.status).where(
        Run.sop_id == sop_id,
        or_(
            Run.workflow_id.in_(list(workflow_ids)),
            and_(Run.contact_id.in_(list(contact_ids)), Run.status == "running"),
        ),
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    asked = set(workflow_ids)
    started = {row.workflow_id for row in rows if row.workflow_id in asked}
    running = {row.contact_id for row in rows if row.status == "running"}
    return running, started
