"""The same store tests run on SQLite and on the PostgreSQL server of this machine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from sopflow.store.repository import Store, connect

POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def pg_schema() -> Iterator[Callable[[], Engine]]:
    """Engines on one fresh PostgreSQL schema (each call: another engine, its own connections),
    dropped afterwards: for tests of what several processes do to one database at once."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engines: list[Engine] = []

    def engine() -> Engine:
        options = {"options": f"-csearch_path={schema}"}
        engines.append(create_engine(POSTGRES_URL, connect_args=options))
        return engines[-1]

    try:
        yield engine
    finally:
        for made in engines:
            made.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'store.db'}")
        instance = Store(engine)
        instance.migrate()
        yield instance
        engine.dispose()
        return
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
