"""Inserts that may meet a row already there: one statement, no unique violation, so they can
share a transaction with other writes (a violation would abort it on PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from sopflow.errors import SopflowError
from sopflow.store.models import Base


def dialect_insert(dialect: str) -> Any:
    """The dialect's `insert`, the one with ON CONFLICT (`dialect`: an engine's dialect name)."""
    match dialect:
        case "postgresql":
            return postgresql.insert
        case "sqlite":
            return sqlite.insert
        case _:
            raise SopflowError(f"the store runs on PostgreSQL or SQLite, not {dialect}")


def insert_if_new(
    session: Session, model: type[Base], values: dict[str, Any], key: InstrumentedAttribute[Any]
) -> bool:
    """INSERT … ON CONFLICT (key) DO NOTHING: True when the row is new."""
    new = dialect_insert(session.get_bind().dialect.name)(model).values(values)
    done = session.execute(new.on_conflict_do_nothing(index_elements=[key]).returning(key))
    return done.first() is not None  # RETURNING gives the key of an inserted row only
