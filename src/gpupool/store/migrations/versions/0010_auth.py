"""Tokens that die with their user, and refresh families that a reuse revokes whatever the timing.

``users.generation`` is named by every token and bumped when a user is disabled, deleted or has all
sessions revoked; ``users.deleted_at`` marks a tombstone whose id is never reused. A refresh family
gets a row of its own, locked while one of its tokens is spent, so that a spend and a reuse can no
longer interleave; existing families are carried over (revoked when any of their tokens was).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("users", sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
    op.add_column("users", sa.Column("deleted_at", sa.Float, nullable=True))
    op.create_table(
        "refresh_families",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("auth_time", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_refresh_families_user_id", "refresh_families", ["user_id"])
    op.execute(
        "INSERT INTO refresh_families (id, user_id, generation, auth_time, revoked_at) "
        "SELECT family_id, MIN(user_id), 0, MIN(issued_at), "
        "CASE WHEN MAX(CASE WHEN revoked THEN 1 ELSE 0 END) = 1 THEN MAX(issued_at) ELSE NULL END "
        "FROM refresh_tokens GROUP BY family_id"
    )


def downgrade() -> None:
    op.drop_index("ix_refresh_families_user_id", table_name="refresh_families")
    op.drop_table("refresh_families")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("generation")
