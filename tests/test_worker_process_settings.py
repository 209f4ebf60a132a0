"""Process settings a worker and a gateway apply at start, each measured in
bench/bench_production.py: enough threads for the store's connections, the workflow module's
bytecode cached when bytecode writing is off, and the store's pool size from the environment."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sopflow.errors import ConfigurationError
from sopflow.settings import Settings
from sopflow.store.repository import connect, use_store_threads
from workflows.sandbox import cache_bytecode


async def test_store_threads_match_the_connections() -> None:
    """Twelve store calls in flight at once: with the default pool (cores + 4) the twelfth
    would never start and the barrier would time out."""
    loop = asyncio.get_running_loop()
    before = loop._default_executor  # type: ignore[attr-defined]
    use_store_threads(12)
    barrier = threading.Barrier(12, timeout=10)
    try:
        await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(12)))
    finally:
        if before is not None:
            loop.set_default_executor(before)


def test_the_pool_size_comes_from_the_environment(tmp_path: Path) -> None:
    assert Settings.from_env({}).db_connections == 20
    settings = Settings.from_env({"SOPFLOW_DB_CONNECTIONS": "7"})
    assert settings.db_connections == 7
    assert connect(f"sqlite:///{tmp_path / 's.db'}", settings.db_connections).pool.size() == 7
    for bad in ("0", "many", "-3", "501"):
        with pytest.raises(ConfigurationError, match=f"SOPFLOW_DB_CONNECTIONS={bad!r}: a whole"):
            Settings.from_env({"SOPFLOW_DB_CONNECTIONS": bad})


@pytest.fixture
def no_bytecode() -> Iterator[None]:
    saved = sys.dont_write_bytecode, sys.pycache_prefix
    sys.dont_write_bytecode, sys.pycache_prefix = True, None
    try:
        yield
    finally:
        sys.dont_write_bytecode, sys.pycache_prefix = saved


def test_bytecode_is_cached_aside_when_writing_it_is_off(no_bytecode: None, tmp_path: Path) -> None:
    (tmp_path / "fresh_module_for_cache.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cache_bytecode()
        assert not sys.dont_write_bytecode and sys.pycache_prefix
        importlib.import_module("fresh_module_for_cache")
        cached = list(Path(sys.pycache_prefix).rglob("fresh_module_for_cache*.pyc"))
        assert cached, "the sandbox would compile the workflow module for every run"
        assert not (tmp_path / "__pycache__").exists()  # not beside the source
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fresh_module_for_cache", None)


def test_sqlite_writers_wait_for_the_lock_and_commits_do_not_flush(tmp_path: Path) -> None:
    """The embedded default under load: many writers at once all get through (each waits for
    SQLite's one write lock instead of failing with "database is locked" after 5 s)."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from sqlalchemy import text

    from sopflow.store.repository import SQLITE_BUSY_SECONDS, Store

    engine = connect(f"sqlite:///{tmp_path / 'store.db'}", 32)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert (
            connection.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_SECONDS * 1000
        )
    store = Store(engine)
    store.migrate()
    now = datetime.now(UTC)

    def start(i: int) -> bool:
        return store.start_run(f"wf-{i}", "r", "sop", 1, "digest", f"c-{i}", now)

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(start, range(2000)))
