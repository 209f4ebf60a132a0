"""Write transactions on one SQLite file queue on a process lock (sopflow/store/sqlite_writes.py):
a writer waits for the file instead of failing or polling, and every way a transaction ends
gives the lock back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError

from sopflow.store.repository import connect


def _engine(path: Path) -> Engine:
    """A store engine whose SQLite busy handler gives up at once: a writer that reaches SQLite
    while another holds the file fails with "database is locked" instead of waiting there."""
    engine = connect(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    return engine


@pytest.fixture
def engines(tmp_path: Path) -> tuple[Engine, Engine]:
    path = tmp_path / "store.db"
    first, second = _engine(path), _engine(path)  # two engines, one file, as gateway + worker
    with first.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    return first, second


def _in_thread(work: Any, seconds: float = 10) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the writer is still waiting: the lock was not given back"
    return errors


def test_a_writer_waits_for_the_file_instead_of_failing(engines: tuple[Engine, Engine]) -> None:
    first, second = engines
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    threading.Timer(0.3, release.set).start()
    # Without the queue this insert meets SQLite's lock with no busy wait: "database is locked".
    assert _in_thread(lambda: _insert(second, 2)) == []
    holder.join(10)
    with second.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 2


def _insert(engine: Engine, value: int) -> None:
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})


def test_a_failed_write_gives_the_lock_back(engines: tuple[Engine, Engine]) -> None:
    first, second = engines
    _insert(first, 1)
    errors = _in_thread(lambda: _insert(first, 1))  # the same key: rolled back
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert _in_thread(lambda: _insert(second, 2), seconds=5) == []


def test_a_connection_returned_with_its_write_open_gives_the_lock_back(
    engines: tuple[Engine, Engine],
) -> None:
    first, second = engines

    def abandon() -> None:
        connection = first.connect()
        connection.execute(text("INSERT INTO t VALUES (1)"))
        connection.close()  # no commit: the pool rolls it back

    assert _in_thread(abandon) == []
    assert _in_thread(lambda: _insert(second, 2), seconds=5) == []
    with second.connect() as connection:
        assert connection.execute(text("SELECT id FROM t")).scalars().all() == [2]
