"""One writer at a time per SQLite file within a process, queued on a lock instead of polling.

SQLite has a single write lock per database file. A connection that finds it taken waits in
SQLite's busy handler, which sleeps and retries (1, 2, 5 … 100 ms): under `sopflow up`, where
the gateway and the worker write the same file from 20 threads each, nearly every store thread
sat in those sleeps while the lock was free most of the time (py-spy, bench_production intake).
Here a writer takes a process-wide lock for the file before its transaction's first write (where
pysqlite issues BEGIN and SQLite takes its write lock) and gives it back at commit or rollback,
so the next writer starts the moment the file is free. Other processes (a CLI import beside
`sopflow up`) still meet SQLite's busy handler, as before.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _lock_for(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def serialise_writes(engine: Engine, path: str, wait_seconds: float) -> None:
    """Queue `engine`'s write transactions on the lock of the file at `path`, given back once
    the transaction has committed or rolled back (the dialect's do_commit/do_rollback, which the
    pool's reset of a returned connection uses too). A transaction runs on one thread, so the
    thread remembers what it holds. A writer waits at most `wait_seconds` for the lock, then goes
    on to SQLite's own busy handler: a thread that opens a second write transaction while its
    first is open meets "database is locked" as before, not a deadlock."""
    lock = _lock_for(path)
    held = threading.local()
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    @event.listens_for(engine, "before_cursor_execute")
    def _take(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not getattr(held, "lock", False) and statement.lstrip()[:7].upper().startswith(_WRITES):
            held.lock = lock.acquire(timeout=wait_seconds)

    def _give_back() -> None:
        if getattr(held, "lock", False):
            held.lock = False
            lock.release()

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            _give_back()

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            _give_back()

    @event.listens_for(engine, "invalidate")  # a broken connection: its transaction is gone
    def _on_invalidate(*_: Any) -> None:
        _give_back()

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
