"""Fixtures of the dashboard's tests: stores on SQLite and PostgreSQL, and the site on them
(tests/dashboard/world.py builds the runs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import create_engine, text

from sopflow.store.repository import Store, connect

from .world import POSTGRES_URL, Site, open_site


# Module-scoped: the pages only read (building a site takes seconds: migrations, password
# hashes); tests that control runs check the signals they add, not the total.
@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(connect(f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"))
    store.migrate()
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def postgres_store() -> Iterator[Store]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    store = Store(engine)
    store.migrate()
    try:
        yield store
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
async def site(sqlite_store: Store) -> AsyncIterator[Site]:
    async for opened in open_site(sqlite_store):
        yield opened


@pytest.fixture(scope="module")
async def report_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The site with world.py's pilots and referrals too, on a store of its own."""
    store = Store(connect(f"sqlite:///{tmp_path_factory.mktemp('reports') / 'store.db'}"))
    store.migrate()
    async for opened in open_site(store, reports=True):
        yield opened
    store.engine.dispose()
