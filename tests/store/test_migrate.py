"""Migrations on start: several worker processes starting at once on one fresh PostgreSQL
database all come up, the schema built once (store.migrate takes an advisory lock around the
upgrade; without it they all find nothing applied and race to create the same tables)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from sopflow.store.migrate import alembic_config
from sopflow.store.repository import Store

# A worker's start: import everything, say so, wait for the signal, migrate.
WORKER = """
import sys, time
from pathlib import Path
from sqlalchemy import create_engine
from sopflow.store.repository import Store

url, schema, ready, go = sys.argv[1:]
engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
Store(engine).migrate()
"""


def test_workers_migrating_a_fresh_database_at_once_all_succeed(
    pg_schema: Callable[[], Engine], tmp_path: Path
) -> None:
    engine = pg_schema()
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as connection:  # the fresh schema: the migrations have yet to run
        schema = connection.scalar(text("SELECT current_schema()"))
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, schema, str(tmp_path / f"ready-{n}"), str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(5)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < len(workers):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        go.touch()  # all at once
        failures = [w.communicate(timeout=60)[1] for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0] * len(workers), failures
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        versions = list(connection.execute(text("SELECT version_num FROM alembic_version")))
    assert [v for (v,) in versions] == [head]
    Store(engine).migrate()  # and again, at head: a no-op
