"""split assignments (balanced A/B/n arms recorded per contact)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "split_assignments",
        sa.Column("sop_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sop_id", "step", "contact_id"),
        sa.UniqueConstraint("sop_id", "step", "seq"),
    )
    op.create_table(
        "split_counters",
        sa.Column("sop_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sop_id", "step"),
    )


def downgrade() -> None:
    op.drop_table("split_counters")
    op.drop_table("split_assignments")
