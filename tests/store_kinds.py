"""A migrated store on SQLite (a file under tmp_path) or on a fresh schema of this machine's
PostgreSQL, dropped afterwards: the one fixture body the store-backed test modules share
(tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from sopflow.store.repository import Store, connect

POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
KINDS = ["sqlite", "postgresql"]


def make_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    if kind == "sqlite":
        instance = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
        instance.migrate()
        yield instance
        instance.engine.dispose()
        return
    yield from postgres_store()


def postgres_store() -> Iterator[Store]:
    """A migrated store on a fresh schema, dropped when the generator ends."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    instance = Store(engine)
    instance.migrate()
    try:
        yield instance
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
