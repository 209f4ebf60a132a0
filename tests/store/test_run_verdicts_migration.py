"""Migration 0014 (run_verdicts) on SQLite and PostgreSQL: up from 0013 over a store with a
run, the first score of the run keeps its verdict there, and down again drops the table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import inspect, select

from sopflow.sop.validate import load_plan
from sopflow.store.migrate import alembic_config
from sopflow.store.models import RunVerdict
from sopflow.store.reports import Scores
from sopflow.store.repository import Store

PLAN = load_plan(Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml")


def _migrate(store: Store, revision: str, down: bool = False) -> None:
    config = alembic_config(store.engine)
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def _tables(store: Store) -> list[str]:
    return inspect(store.engine).get_table_names()


def test_run_verdicts_comes_and_goes_with_its_migration(store: Store) -> None:
    _migrate(store, "0013", down=True)
    assert "run_verdicts" not in _tables(store)
    store.deploy(PLAN)
    at = datetime(2026, 12, 1, 14, tzinfo=UTC)
    store.start_run("w1", "r", PLAN.sop.id, 1, PLAN.digest, "c1", at)
    _migrate(store, "0014")
    assert Scores(store.engine).run("w1").items == []
    with store.engine.connect() as connection:
        kept = connection.execute(select(RunVerdict.workflow_id, RunVerdict.basis)).all()
    assert [(w, b.split()[-1]) for w, b in kept] == [("w1", "0:0")]  # no step event yet
    _migrate(store, "0013", down=True)
    assert "run_verdicts" not in _tables(store)
    _migrate(store, "head")
    assert "run_verdicts" in _tables(store)
