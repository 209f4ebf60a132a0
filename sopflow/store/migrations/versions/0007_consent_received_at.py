"""consent events: when sopflow received them (their order of effect)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "consent_events", sa.Column("received_at", sa.DateTime(timezone=True), nullable=True)
    )
    # Older events were not stamped: their claimed time is the best there is.
    op.execute("UPDATE consent_events SET received_at = at")
    with op.batch_alter_table("consent_events") as batch:
        batch.alter_column("received_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_column("received_at")
