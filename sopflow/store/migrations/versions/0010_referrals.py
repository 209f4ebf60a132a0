"""referrals: who referred whom, their visit, sign-up and purchase, and when runs were told

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("referrer_id", sa.String(length=64), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=True),
        sa.Column("came_from", sa.String(length=500), nullable=True),
        sa.Column("referred_id", sa.String(length=64), nullable=True),
        sa.Column("visited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signed_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signup_told_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("conversion_told_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["referrer_id"], ["contacts.id"]),
        sa.ForeignKeyConstraint(["referred_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
        # Also the index of a referrer's referrals (its leading column).
        sa.UniqueConstraint("referrer_id", "visitor"),
        sa.UniqueConstraint("referred_id"),  # one referrer per contact: the first
    )


def downgrade() -> None:
    op.drop_table("referrals")
