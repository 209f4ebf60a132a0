"""Alembic environment: run by sopflow.store.migrate() with a connection, or by the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from sopflow.store.models import Base

config = context.config


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite alters tables by copying them.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").begin() as conn:
        _run(conn)
