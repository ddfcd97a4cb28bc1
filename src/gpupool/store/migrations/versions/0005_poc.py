"""Proof-of-compute rounds, the batches and unique nonces nodes submit, per-node validation results.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "poc_rounds",
        sa.Column("block_height", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("block_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("params_name", sa.String(16), nullable=True),
        sa.Column("r_target", sa.Float, nullable=False),
        sa.Column("fraud_threshold", sa.Float, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("status", sa.String(12), nullable=False, index=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closes_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("opened_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "poc_batches",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("block_height", sa.BigInteger, sa.ForeignKey("poc_rounds.block_height"), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("miner_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("n_nonces", sa.Integer, nullable=False),
        sa.Column("n_new", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Index("ix_poc_batches_round_key", "block_height", "public_key"),
    )
    op.create_table(
        "poc_nonces",
        sa.Column("block_height", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("public_key", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("dist", sa.Float, nullable=False),
        sa.Column("batch_id", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "poc_results",
        sa.Column("block_height", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("miner_id", sa.String(64), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("n_batches", sa.Integer, nullable=False),
        sa.Column("n_nonces", sa.BigInteger, nullable=False),
        sa.Column("n_sampled", sa.Integer, nullable=False),
        sa.Column("n_invalid", sa.Integer, nullable=False),
        sa.Column("p_value", sa.Float, nullable=False),
        sa.Column("fraud", sa.Boolean, nullable=False),
        sa.Column("weight", sa.BigInteger, nullable=False),
        sa.Column("validated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("poc_results", "poc_nonces", "poc_batches", "poc_rounds"):
        op.drop_table(table)
