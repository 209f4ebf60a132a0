"""Segments are evaluated on SQLite and on the PostgreSQL server of this machine: every test that
takes `db` runs on both, each on a fresh, migrated store (a PostgreSQL schema of its own,
dropped afterwards, as tests/store/conftest.py makes them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from segment_helpers import POSTGRES_URL, Db
from sqlalchemy import create_engine, text

from sopflow.store.repository import Store, connect


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        engine = connect(url)
        Store(engine).migrate()
        yield Db(engine, url)
        engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    Store(engine).migrate()
    try:
        yield Db(engine, url)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
