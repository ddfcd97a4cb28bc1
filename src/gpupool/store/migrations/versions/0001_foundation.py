"""Users, refresh tokens and the double-entry ledger.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("balance_micro", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.CheckConstraint("balance_micro >= 0 OR id = 'system:issuance'", name="ck_accounts_non_negative"),
    )
    op.create_table(
        "postings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(80), nullable=True),
        sa.Column("destination", sa.String(80), nullable=True),
        sa.Column("amount_micro", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("memo", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("scope", "idempotency_key", name="uq_postings_scope_key"),
    )
    op.create_index("ix_postings_source_id", "postings", ["source", "id"])
    op.create_index("ix_postings_destination_id", "postings", ["destination", "id"])
    op.create_table(
        "entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("posting_id", BigId, sa.ForeignKey("postings.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("account", sa.String(80), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount_micro", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_entries_posting_id", "entries", ["posting_id"])
    op.create_index("ix_entries_account", "entries", ["account"])
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.String),
        sa.column("type", sa.String),
        sa.column("balance_micro", sa.BigInteger),
        sa.column("created_at", sa.Float),
    )
    op.bulk_insert(
        accounts,
        [
            {"id": name, "type": "system", "balance_micro": 0, "created_at": 0.0}
            for name in ("system:issuance", "system:fees", "system:rewards")
        ],
    )


def downgrade() -> None:
    op.drop_table("entries")
    op.drop_table("postings")
    op.drop_table("accounts")
    op.drop_table("refresh_tokens")
    op.drop_table("users")
