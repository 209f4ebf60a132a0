"""Scheduled cohorts: stores on SQLite and PostgreSQL (a fresh schema each, as
tests/store/conftest.py makes them), and a worker built as `sopflow worker` builds it, on the
session's plain dev server (schedules fire and are triggered in real time)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from temporalio.testing import WorkflowEnvironment

from sopflow.runtime import build_worker
from sopflow.store.repository import Store, connect

POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def sqlite_store(tmp_path: Path) -> Store:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = sqlite_store(tmp_path)
        yield store
        store.engine.dispose()
        return
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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = sqlite_store(tmp_path)
    yield made
    made.engine.dispose()


@pytest.fixture
async def worker(
    live_env: WorkflowEnvironment, store: Store, task_queue: str
) -> AsyncIterator[None]:
    """SopRun and CohortRun with their activities, touches to the in-memory loopback."""
    async with build_worker(live_env.client, store, task_queue, ()):
        yield
