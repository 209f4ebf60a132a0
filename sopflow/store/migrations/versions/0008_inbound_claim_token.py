"""inbound events: the token of the attempt holding an idempotency key's claim

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a claim taken before this revision has no token; a retry takes it over once
    # its lease has run out, as it would a claim whose process died.
    op.add_column("inbound_events", sa.Column("claim", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_events") as batch:
        batch.drop_column("claim")
