"""The reports' store, on SQLite and on PostgreSQL (tests/compliance/report_world.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_kinds import make_store

from sopflow.store.repository import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def report_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from make_store(request.param, tmp_path)
