"""consent events and do-not-contact lists

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 08:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("disclosure_text", sa.String(length=2000), nullable=True),
        sa.Column("disclosure_version", sa.String(length=40), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_events_contact_id", "consent_events", ["contact_id"])
    op.create_table(
        "do_not_contact",
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("list_name", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("phone", "list_name"),
    )


def downgrade() -> None:
    op.drop_table("do_not_contact")
    op.drop_index("ix_consent_events_contact_id", table_name="consent_events")
    op.drop_table("consent_events")
