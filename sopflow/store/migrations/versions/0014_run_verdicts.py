"""run_verdicts: each run's scored items, kept until the run's inputs change (reports)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_verdicts",
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id"),
    )


def downgrade() -> None:
    op.drop_table("run_verdicts")
