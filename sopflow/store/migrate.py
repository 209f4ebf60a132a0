"""Bring a database to the newest schema with Alembic (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).with_name("migrations")
# The PostgreSQL advisory lock every sopflow process takes around its upgrade: one fixed key
# ("sopflow" in ASCII), the same in every process, whatever the schema.
MIGRATION_LOCK = int.from_bytes(b"sopflow", "big")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # configparser would read a `%` (e.g. `options=-csearch_path%3Dschema`) as interpolation
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied. Safe to run on every start, on several workers:
    on PostgreSQL they take turns (an advisory lock held until the upgrade commits), so the
    first applies the migrations and the others find the schema at head; without it they would
    all read "nothing applied yet" and race to create the same tables. (SQLite, the embedded
    default, has one worker per file.)"""
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # released when the transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
