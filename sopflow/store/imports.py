"""Contacts and their purchases and visits written in batches (sopflow/contacts_import.py checks
them first). Each batch is one transaction: a line is never half-written, and other writers (a
worker, the gateway) get the SQLite write lock between batches. A contact merges into its stored
row as Store.upsert_contact merges it (an empty value keeps the stored one), locked as
locked_contact locks it, and stays within its budget (sopflow/limits.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, assert_never

from sqlalchemy import Engine, Row, select
from sqlalchemy.orm import Session

from sopflow.errors import SopflowError
from sopflow.limits import CONTACT_BUDGET, size_problem
from sopflow.store.models import ActivityKind, Contact, ContactActivity
from sopflow.store.repository import CONTACT_COLUMNS
from sopflow.store.rows import dialect_insert


@dataclass(frozen=True)
class Activity:
    """One purchase or visit of a contact, as checked."""

    kind: ActivityKind
    at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    order_id: str | None = None
    store: str | None = None

    @property
    def key(self) -> str:
        """What a re-import matches on: the order id of a purchase, else the time (in UTC, so
        one instant written with two offsets is one visit)."""
        match self.kind:
            case "purchase" if self.order_id is not None:
                return f"order:{self.order_id}"
            case "purchase" | "visit":
                return f"at:{self.at.astimezone(UTC).isoformat()}"
            case _:
                assert_never(self.kind)


@dataclass(frozen=True)
class ContactLine:
    """A checked contact: normalised (normalise_contact), empty values left out, and where it
    came from (a file's line, an API item's index)."""

    line: int
    contact: dict[str, Any]
    activity: tuple[Activity, ...] = ()


@dataclass
class Imported:
    new: int = 0
    updated: int = 0
    purchases: int = 0
    visits: int = 0

    @property
    def contacts(self) -> int:
        return self.new + self.updated


class ImportStopped(SopflowError):
    """A batch failed its last check inside its transaction (a concurrent write took a contact
    over its budget since the file was checked): that batch is not written, earlier ones are."""

    def __init__(self, line: int, reason: str, written: int, source: str = "line") -> None:
        self.line, self.reason, self.written = line, reason, written
        super().__init__(
            f"{source}:{line}: contact: {reason}; the {written} contacts before its batch were "
            "imported (importing the same input again is safe)"
        )


STORED = (Contact.id, Contact.phone, Contact.timezone, Contact.owner, Contact.fields)


def merged(stored: Row[Any] | None, contact: dict[str, Any]) -> dict[str, Any]:
    """`contact` merged into `stored` (its STORED columns) as Store.upsert_contact merges: a
    column it gives replaces the stored one, its other fields replace theirs, the rest is kept.
    The row's new values, by column name."""
    row: dict[str, Any] = {"id": contact["id"], "phone": None, "timezone": None, "owner": None}
    if stored is not None:
        row |= {"phone": stored.phone, "timezone": stored.timezone, "owner": stored.owner}
    row |= {name: contact[name] for name in CONTACT_COLUMNS if name in contact}
    news = {k: v for k, v in contact.items() if k not in ("id", *CONTACT_COLUMNS)}
    row["fields"] = {**((stored.fields if stored is not None else None) or {}), **news}
    return row


def budget_problem(row: dict[str, Any]) -> str | None:
    """Why the merged row is over the contact's budget (check_budget's words), or None. Plain
    dicts, not Contact rows: building 100k ORM objects cost seconds of an import."""
    columns = {k: row[k] for k in ("id", *CONTACT_COLUMNS) if row[k] is not None}
    if why := size_problem({**row["fields"], **columns}, CONTACT_BUDGET):  # as contact_view
        return f"with these fields the contact would be {why}"
    return None


def over_budget(engine: Engine, lines: list[ContactLine]) -> list[tuple[int, str]]:
    """The lines whose contact, merged into what is stored, would be over its budget, and why.
    Read only: the check before anything is written."""
    ids = [line.contact["id"] for line in lines]
    with engine.connect() as connection:
        stored = {r.id: r for r in connection.execute(select(*STORED).where(Contact.id.in_(ids)))}
    problems: list[tuple[int, str]] = []
    for line in lines:
        if why := budget_problem(merged(stored.get(line.contact["id"]), line.contact)):
            problems.append((line.line, why))
    return problems


def write_batch(engine: Engine, lines: list[ContactLine], done: Imported) -> None:
    """Upsert the contacts of `lines` and their activity in one transaction; add to `done`."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        insert = _insert(session)
        # New contacts are inserted whole; one that exists is left alone here and merged below.
        # A write first (as in locked_contact): SQLite's write lock is ours from here, and a
        # contact another writer creates meanwhile is merged, not overwritten. RETURNING makes
        # this one multi-row statement per batch on psycopg too (SQLAlchemy's insertmanyvalues).
        # Their budget was checked against no stored row, as they are.
        fresh = [merged(None, line.contact) | {"updated_at": now} for line in lines]
        created = set(
            session.scalars(
                insert(Contact)
                .on_conflict_do_nothing(index_elements=[Contact.id])
                .returning(Contact.id),
                fresh,
            )
        )
        known = [line for line in lines if line.contact["id"] not in created]
        if known:
            ids = [line.contact["id"] for line in known]
            locked = select(*STORED).where(Contact.id.in_(ids)).with_for_update()
            stored = {r.id: r for r in session.execute(locked)}
            changes = []
            for line in known:
                row = merged(stored[line.contact["id"]], line.contact)
                # Checked before, but another writer may have grown the contact since.
                if why := budget_problem(row):
                    raise ImportStopped(line.line, why, done.contacts)
                changes.append(row | {"updated_at": now})
            write = insert(Contact)  # the rows exist: an UPDATE from a list of values
            kept = ("phone", "timezone", "owner", "fields", "updated_at")
            session.scalars(
                write.on_conflict_do_update(
                    index_elements=[Contact.id], set_={name: write.excluded[name] for name in kept}
                ).returning(Contact.id),
                changes,
            ).all()
        activity = [
            {"contact_id": line.contact["id"], "kind": a.kind, "key": a.key, "at": a.at,
             "amount": a.amount, "currency": a.currency, "order_id": a.order_id, "store": a.store}
            for line in lines
            for a in line.activity
        ]  # fmt: skip
        if activity:
            table = ContactActivity.__table__
            upsert = insert(ContactActivity)
            kept = ("at", "amount", "currency", "order_id", "store")
            session.scalars(
                upsert.on_conflict_do_update(
                    index_elements=[table.c.contact_id, table.c.kind, table.c.key],
                    set_={name: upsert.excluded[name] for name in kept},
                ).returning(table.c.id),  # one statement per batch, as above
                activity,
            ).all()
    done.new += len(created)
    done.updated += len(lines) - len(created)
    for line in lines:
        for a in line.activity:
            match a.kind:
                case "purchase":
                    done.purchases += 1
                case "visit":
                    done.visits += 1
                case _:
                    assert_never(a.kind)


def write_all(
    engine: Engine, batches: Iterable[list[ContactLine]], advance: Callable[[int], None]
) -> Imported:
    """Write every batch, in order, each in its own transaction; `advance(n)` after each."""
    done = Imported()
    for batch in batches:
        if batch:
            write_batch(engine, batch, done)
            advance(len(batch))
    return done


def _insert(session: Session) -> Any:
    return dialect_insert(session.get_bind().dialect.name)
