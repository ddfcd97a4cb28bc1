"""Reward epochs keep the hub-signed Merkle root of their payouts; a payout is its ledger entry.

An epoch's payouts were also written as rows of ``payouts`` (one per owner, each with its own signed
receipt) beside the ledger entries of the epoch's posting that already say who got what. Now the epoch
row points at that posting and keeps the one hub signature over the Merkle root of its payouts; the
per-payout rows go (receipts are rebuilt from the entries and checked against the signed root).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Nullable: an epoch that paid nobody has no posting and no root.
    with op.batch_alter_table("reward_epochs") as batch:
        batch.add_column(sa.Column("posting_id", BigId, nullable=True))
        batch.add_column(sa.Column("root_event", sa.Text, nullable=True))
        batch.create_foreign_key("fk_reward_epochs_posting_id_postings", "postings", ["posting_id"], ["id"])
    op.drop_table("payouts")


def downgrade() -> None:
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
    with op.batch_alter_table("reward_epochs") as batch:
        batch.drop_constraint("fk_reward_epochs_posting_id_postings", type_="foreignkey")
        batch.drop_column("root_event")
        batch.drop_column("posting_id")
