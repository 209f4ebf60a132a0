"""What the segment tests share: a store with rows put in it, and segments built inline."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert

from sopflow.segmenting.schema import Segment
from sopflow.store.models import Contact, ContactActivity

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Db:
    """A migrated store and what a test put in it."""

    engine: Engine
    url: str  # for the CLI (SOPFLOW_DATABASE_URL)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    activity: list[dict[str, Any]] = field(default_factory=list)

    def contact(self, contact_id: str, **fields: Any) -> None:
        columns = {k: fields.pop(k) for k in ("phone", "timezone", "owner") if k in fields}
        row = {"id": contact_id, "fields": fields, "updated_at": AS_OF, **columns}
        self.contacts.append(row)
        with self.engine.begin() as connection:
            connection.execute(insert(Contact), [row])

    def purchase(
        self,
        contact_id: str,
        at: datetime,
        amount: str | Decimal | None = "10",
        currency: str | None = "EUR",
    ) -> None:
        self._activity(contact_id, "purchase", at, amount, currency)

    def visit(self, contact_id: str, at: datetime) -> None:
        self._activity(contact_id, "visit", at, None, None)

    def _activity(
        self, contact_id: str, kind: str, at: datetime, amount: Any, currency: str | None
    ) -> None:
        row = {
            "contact_id": contact_id,
            "kind": kind,
            "key": f"k{len(self.activity)}",
            "at": at,
            "amount": None if amount is None else Decimal(amount),
            "currency": currency,
            "order_id": None,
            "store": None,
        }
        self.activity.append(row)
        with self.engine.begin() as connection:
            connection.execute(insert(ContactActivity), [row])

    def bulk(self, contacts: list[dict[str, Any]], activity: list[dict[str, Any]]) -> None:
        """Many rows at once (rows as `contact` and `_activity` make them)."""
        with self.engine.begin() as connection:
            if contacts:
                connection.execute(insert(Contact), contacts)
            if activity:
                connection.execute(insert(ContactActivity), activity)
        self.contacts += contacts
        self.activity += activity


def segment(**rules: Any) -> Segment:
    """A segment with these rules (as the YAML would give them)."""
    return Segment.model_validate(
        {"id": "test", "name": "Test", "description": "a test segment", "rules": rules}
    )
