"""Fixtures of the dashboard's tests: stores on SQLite and PostgreSQL, and the site on them
(tests/dashboard/world.py builds the runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from store_kinds import postgres_store as fresh_postgres_store

from sopflow.store.repository import Store, connect

from .world import Site, open_site


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
    yield from fresh_postgres_store()


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
