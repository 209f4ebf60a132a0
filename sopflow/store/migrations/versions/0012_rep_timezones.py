"""rep and team time zones: a rep's notices and inbox show due times in the rep's own zone

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("teams", sa.Column("timezone", sa.String(64), nullable=True))
    op.add_column("reps", sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reps") as batch:
        batch.drop_column("timezone")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("timezone")
