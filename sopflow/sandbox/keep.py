"""A sandbox's durable state: JSON documents by (kind, key) in one SQLite file.

Every write is its own transaction, synced (WAL, synchronous=FULL: ~80 µs a write here) before
`put` returns, so what the sandbox acknowledged (a created message, an email answered 250)
survives a kill of the whole stack. Documents come back in the order they were first written.
`Keep(None)` writes nothing: the tests' sandboxes live in memory. The phone network and the mail
server of `sopflow up` share one keep (one file); whoever opens it closes it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SANDBOX_KEEP = "sandbox.db"  # in the data dir, beside the store


class Keep:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): each statement commits on its own. The connection is
        # used only from the event loop's thread, which need not be the thread that opened it.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # An explicit INTEGER PRIMARY KEY keeps the order of first writes: VACUUM may renumber
        # an implicit rowid.
        db.execute(
            "CREATE TABLE IF NOT EXISTS docs (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
            "key TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (kind, key))"
        )
        self._db = db

    def put(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        """Write (or overwrite) one document; an update keeps the document's place."""
        if self._db is not None:
            self._db.execute(
                "INSERT INTO docs (kind, key, data) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
                (kind, key, json.dumps(doc, ensure_ascii=False)),
            )

    def load(self, kind: str) -> list[dict[str, Any]]:
        """Every document of a kind, in the order they were first written."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT data FROM docs WHERE kind = ? ORDER BY seq", (kind,))
        return [json.loads(data) for (data,) in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
