"""Scheduled cohorts: stores on SQLite and PostgreSQL (a fresh schema each, as
tests/store/conftest.py makes them), and a worker built as `sopflow worker` builds it, on the
session's plain dev server (schedules fire and are triggered in real time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from store_kinds import KINDS, make_store
from temporalio.testing import WorkflowEnvironment

from sopflow.runtime import build_worker
from sopflow.store.repository import Store, connect


def sqlite_store(tmp_path: Path) -> Store:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    return store


@pytest.fixture(params=KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from make_store(request.param, tmp_path)


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
