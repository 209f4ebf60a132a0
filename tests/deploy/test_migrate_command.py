"""`sopflow migrate`, the deployment's upgrade step: on an empty database and on PostgreSQL
reached through a URL with escapes in it, it brings the schema to the newest revision."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from sopflow.store.migrate import alembic_config, current_revision
from sopflow.store.repository import connect

ROOT = Path(__file__).resolve().parents[2]


def migrate(url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SOPFLOW_DATABASE_URL": url, "SOPFLOW_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", "migrate"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip


def test_migrate_brings_an_empty_store_to_the_newest_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = connect(url)
    assert current_revision(engine) is None
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    done = migrate(url, tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"store at schema revision {head}"
    assert current_revision(engine) == head
    again = migrate(url, tmp_path / "data")  # a second run changes nothing
    assert again.returncode == 0 and again.stdout == done.stdout


def test_migrate_refuses_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    refused = migrate("postgresql+psycopg://nobody@127.0.0.1:9/none", tmp_path / "data")
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith("error:"), refused.stderr
