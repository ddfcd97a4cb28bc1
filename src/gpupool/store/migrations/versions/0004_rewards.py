"""Contributions, reward epochs, payouts with their receipts, carried dues.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contributions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(64), nullable=False, index=True),
        sa.Column("owner", sa.String(42), nullable=False, index=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False, index=True),
        sa.Column("start_timestamp", sa.Float, nullable=False),
        sa.Column("end_timestamp", sa.Float, nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("avg_gpu_usage_percent", sa.Float, nullable=True),
        sa.Column("gpu_memory_used_mb", sa.Float, nullable=True),
        sa.Column("avg_cpu_usage_percent", sa.Float, nullable=True),
        sa.Column("memory_used_mb", sa.Float, nullable=True),
        sa.Column("samples_processed", sa.BigInteger, nullable=False),
        sa.Column("compute_score", sa.BigInteger, nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.UniqueConstraint("source", "ref", name="uq_contribution_source_ref"),
    )
    op.create_table(
        "reward_epochs",
        sa.Column("epoch", sa.BigInteger, primary_key=True),
        sa.Column("emission_micro", sa.BigInteger, nullable=False),
        sa.Column("paid_micro", sa.BigInteger, nullable=False),
        sa.Column("distributed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "payouts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, index=True),
        sa.Column("owner", sa.String(42), nullable=False, index=True),
        sa.Column("amount_micro", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("receipt", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "reward_carry",
        sa.Column("owner", sa.String(42), primary_key=True),
        sa.Column("carried_micro", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("reward_carry", "payouts", "reward_epochs", "contributions"):
        op.drop_table(table)
