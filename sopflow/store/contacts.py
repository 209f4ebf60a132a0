"""A contact's row as writers need it: created once however many requests race to create it,
locked for the writer's transaction, and kept within its size budget (sopflow/limits.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from sopflow.errors import InvalidContactError
from sopflow.limits import CONTACT_BUDGET, size_problem
from sopflow.store.models import Contact
from sopflow.store.rows import insert_if_new


def locked_contact(session: Session, contact_id: str, now: datetime) -> Contact:
    """The contact's row, created if new and locked until the transaction ends. The insert is
    the transaction's first statement and does nothing when the row exists: two first writes
    for one new contact both succeed (PostgreSQL makes the second wait for the first's commit,
    SQLite's write lock too), where read-then-insert fails one with a unique violation."""
    insert_if_new(session, Contact, {"id": contact_id, "fields": {}, "updated_at": now}, Contact.id)
    row = session.get(Contact, contact_id, with_for_update=True, populate_existing=True)
    assert row is not None  # inserted above, or there already; contacts are never deleted
    return row


def contact_view(row: Contact) -> dict[str, Any]:
    """The contact as one object: its columns and its fields (what the budget measures)."""
    columns = {"id": row.id, "phone": row.phone, "timezone": row.timezone, "owner": row.owner}
    return {**(row.fields or {}), **{k: v for k, v in columns.items() if v is not None}}


def check_budget(row: Contact) -> None:
    """InvalidContactError when the contact, as changed in this transaction, is over its budget:
    raised before the commit, so nothing of the change is written."""
    if why := size_problem(contact_view(row), CONTACT_BUDGET):
        raise InvalidContactError(f"with these fields the contact would be {why}", row.id)
