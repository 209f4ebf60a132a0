"""Imported contacts and their purchases and visits on SQLite and PostgreSQL: upserts that merge as
Store.upsert_contact does, activity that a re-import updates and never duplicates, money kept
exactly, batches written whole or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from sopflow.contact_files import ContactImportError, Raw
from sopflow.contacts_import import import_contacts
from sopflow.store.imports import Activity, ContactLine, Imported, ImportStopped, write_batch
from sopflow.store.models import ContactActivity
from sopflow.store.repository import Store

AT = "2026-03-01T10:30:00+00:00"


def records(*items: dict[str, Any]) -> list[Raw]:
    return [(n, item) for n, item in enumerate(items, 1)]


def activity(store: Store) -> list[tuple[str, str, str, Decimal | None, str | None]]:
    with Session(store.engine) as session:
        rows = session.scalars(select(ContactActivity).order_by(ContactActivity.id))
        return [(a.contact_id, a.kind, a.key, a.amount, a.store) for a in rows]


def test_activity_is_upserted_by_order_id_or_time(store: Store) -> None:
    purchases = [
        {"at": AT, "amount": "12345678901.1234", "currency": "EUR", "order_id": "o-1"},
        {"at": "2026-03-02T11:00:00+01:00", "amount": 0.1},
    ]
    visits = [{"at": AT, "store": "paris-1"}]
    line = {"id": "c-1", "purchases": purchases, "visits": visits}
    first = import_contacts(store.engine, records(line), "f.jsonl", [])
    assert (first.imported.new, first.imported.purchases, first.imported.visits) == (1, 2, 1)
    purchases[0]["amount"] = "7.5"
    visits[0]["store"] = "paris-2"
    again = import_contacts(store.engine, records(line), "f.jsonl", [])
    assert (again.imported.new, again.imported.updated) == (0, 1)
    assert activity(store) == [
        ("c-1", "purchase", "order:o-1", Decimal("7.5"), None),
        ("c-1", "purchase", "at:2026-03-02T10:00:00+00:00", Decimal("0.1"), None),
        ("c-1", "visit", f"at:{AT}", None, "paris-2"),
    ]


def test_money_is_kept_exactly(store: Store) -> None:
    line = {"id": "c-1", "purchases": [{"at": AT, "amount": "12345678901.1234"}]}
    import_contacts(store.engine, records(line), "f.jsonl", [])
    assert activity(store)[0][3] == Decimal("12345678901.1234")


def test_an_import_merges_into_the_stored_contact_as_events_do(store: Store) -> None:
    store.upsert_contact({"id": "c-1", "phone": "+12125550123", "plan": "gold", "tier": 1})
    line = {"id": "c-1", "phone": "", "tier": 2, "city": "Lyon"}  # empty: keep the stored one
    import_contacts(store.engine, records(line), "f.csv", [])
    contact = store.contact("c-1")
    assert contact is not None
    assert contact.phone == "+12125550123"
    assert contact.fields == {"plan": "gold", "tier": 2, "city": "Lyon"}


def test_over_the_budget_with_the_stored_fields_is_refused_before_any_write(
    store: Store,
) -> None:
    store.upsert_contact({"id": "c-1", "notes": ["n" * 2000] * 20})  # ~40 KiB
    lines = records({"id": "c-0"}, {"id": "c-1", "more": ["m" * 2000] * 20})
    with pytest.raises(ContactImportError) as refused:
        import_contacts(store.engine, lines, "f.jsonl", [])
    (problem,) = refused.value.problems
    assert (problem.line, problem.field) == (2, "contact")
    assert problem.why.startswith("with these fields the contact would be 8")
    assert problem.why.endswith("bytes as JSON, more than the 65536 (64 KiB) allowed")
    assert store.contact("c-0") is None


def test_a_batch_is_written_whole_or_not_at_all(store: Store) -> None:
    """A contact that grows past its budget between the check and the write stops its batch:
    none of the batch is written, not even the lines before it."""
    store.upsert_contact({"id": "c-1", "notes": ["n" * 2000] * 20})
    at = datetime(2026, 3, 1, tzinfo=UTC)
    batch = [
        ContactLine(1, {"id": "c-0"}, (Activity("visit", at, store="s"),)),
        ContactLine(2, {"id": "c-1", "more": ["m" * 2000] * 20}),
    ]
    with pytest.raises(ImportStopped, match=r"^line:2: contact: with these fields the contact"):
        write_batch(store.engine, batch, Imported())
    assert store.contact("c-0") is None
    assert activity(store) == []


def test_several_batches_of_new_and_known_contacts(store: Store) -> None:
    for n in range(0, 2500, 2):  # every other contact is known already
        store.upsert_contact({"id": f"c-{n}", "plan": "old"})
    lines = [
        {"id": f"c-{n}", "plan": "new", "visits": [{"at": AT, "store": f"s-{n % 7}"}]}
        for n in range(2500)
    ]
    report = import_contacts(store.engine, records(*lines), "f.jsonl", [])
    done = report.imported
    assert (done.contacts, done.new, done.updated, done.visits) == (2500, 1250, 1250, 2500)
    assert len(activity(store)) == 2500
    contact = store.contact("c-2498")
    assert contact is not None and contact.fields == {"plan": "new"}
