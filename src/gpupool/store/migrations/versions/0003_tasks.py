"""Tasks and their output stream.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("price_cap_micro_per_ksec", sa.BigInteger, nullable=False),
        sa.Column("timeout_sec", sa.Float, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("miner_id", sa.String(64), nullable=True, index=True),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("assigned_at", sa.Float, nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("price_micro_per_ksec", sa.BigInteger, nullable=True),  # the node's price when assigned
        sa.Column("hold_micro", sa.BigInteger, nullable=False),
        sa.Column("charge_micro", sa.BigInteger, nullable=True),
        sa.Column("usage", sa.Text, nullable=True),
        sa.Column("artifacts", sa.Text, nullable=True),
    )
    op.create_table(
        "task_output",
        sa.Column(
            "task_id", sa.String(32), sa.ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_output")
    op.drop_table("tasks")
