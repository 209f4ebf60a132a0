"""The same store tests run on SQLite and on the PostgreSQL server of this machine."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from store_kinds import KINDS, POSTGRES_URL, make_store

from sopflow.store.repository import Store


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


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from make_store(request.param, tmp_path)
