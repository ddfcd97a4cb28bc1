"""Node registry: workers (seed 000), allowlist, owner API keys, miners, sessions, replay cache.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("pubkey", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(42), nullable=True),
        sa.Column("node_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("signed", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "allowlist",
        sa.Column("entry", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "owner_api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_owner_api_keys_key_hash"),
    )
    op.create_index("ix_owner_api_keys_owner", "owner_api_keys", ["owner"])
    op.create_table(
        "miners",
        sa.Column("miner_id", sa.String(64), primary_key=True),
        sa.Column("pubkey", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trust", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("poc_weight", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("telemetry", sa.Text, nullable=True),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.UniqueConstraint("pubkey", name="uq_miners_pubkey"),
    )
    op.create_index("ix_miners_owner", "miners", ["owner"])
    op.create_table(
        "node_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "miner_id", sa.String(64), sa.ForeignKey("miners.miner_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_node_sessions_miner_id", "node_sessions", ["miner_id"])
    op.create_table(
        "seen_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_seen_events_expires_at", "seen_events", ["expires_at"])


def downgrade() -> None:
    for name in ("seen_events", "node_sessions", "miners", "owner_api_keys", "allowlist", "workers"):
        op.drop_table(name)
