"""Inserts that may meet a row already there: one statement, no unique violation, so they can
share a transaction with other writes (a violation would abort it on PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from sopflow.errors import SopflowError
from sopflow.store.models import Base


def insert_if_new(
    session: Session, model: type[Base], values: dict[str, Any], key: InstrumentedAttribute[Any]
) -> bool:
    """INSERT … ON CONFLICT (key) DO NOTHING: True when the row is new."""
    dialect = session.get_bind().dialect.name
    match dialect:
        case "postgresql":
            pg_new = postgresql.insert(model).values(values)
            done = session.execute(
                pg_new.on_conflict_do_nothing(index_elements=[key]).returning(key)
            )
        case "sqlite":
            lite_new = sqlite.insert(model).values(values)
            done = session.execute(
                lite_new.on_conflict_do_nothing(index_elements=[key]).returning(key)
            )
        case _:
            raise SopflowError(f"the store runs on PostgreSQL or SQLite, not {dialect}")
    return done.first() is not None  # RETURNING gives the key of an inserted row only
